"""DP partition selection: GROUP BY keys without declared values are selected by OpenDP's Gaussian
threshold, whose threshold is the least one its privacy map allows at the selection delta. OpenDP takes
no seed, so the statistical tests bound their failure probability from the mathematics: a key held by
one subject is released with probability at most the map's delta for that subject's contribution (the
(epsilon, delta) guarantee against the dataset without it, where the key is absent), so a union bound
over the keys bounds the chance that any is; a key whose count is 6 noise scales above the threshold
is dropped with probability below 1e-9."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance.context import AuditContext
from complai.compliance.reconcile import reconcile_budgets
from complai.dp.accounting import epsilon_of
from complai.dp.budget import charged
from complai.dp.queries import PUBLIC_FIELDS, Aggregate, Plan, key_text, plan
from complai.dp.sql import parse
from complai.errors import BudgetExhausted, IntegrityError, InvalidInput
from complai.events import DPQueryAnswered
from complai.vault.schema import DatasetSchema, load_schema
from tests.vault.conftest import SCHEMA, consents_frame, customers, people_frame  # noqa: F401

SPEC = {
    "name": "t",
    "subject_column": "sid",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "sid", "type": "string", "category": "user.unique_id", "nullable": False},
        {"name": "city", "type": "string", "category": "user.behavior"},
        {"name": "code", "type": "integer", "category": "user.behavior"},
        {"name": "day", "type": "date", "category": "user.behavior"},
        {"name": "at", "type": "datetime", "category": "user.behavior"},
        {"name": "f", "type": "float", "category": "user.behavior"},
        {"name": "x", "type": "float", "category": "user.behavior", "min": 0, "max": 10},
        {"name": "g", "type": "category", "category": "user.behavior", "values": ["a", "b"]},
    ],
}


@pytest.fixture
def schema() -> DatasetSchema:
    return DatasetSchema.model_validate(SPEC)


@pytest.mark.parametrize(
    ("sql", "kw", "message"),
    [
        (
            "SELECT COUNT(*) FROM t GROUP BY city",
            {},
            "or a delta: without declared values its keys are selected by DP partition selection",
        ),
        ("SELECT COUNT(*) FROM t GROUP BY f", {"delta": 1e-6}, "needs its values declared"),
        ("SELECT COUNT(*) FROM t GROUP BY at", {"delta": 1e-6}, "needs its values declared"),
        ("SELECT MEDIAN(x) FROM t GROUP BY city", {"delta": 1e-6}, "quantiles need the values of GROUP BY city"),
        ("SELECT COUNT(*) FROM t GROUP BY g", {"delta": 1e-6, "selection_delta": 1e-7}, "only to GROUP BY keys"),
        ("SELECT COUNT(*) FROM t", {"delta": 1e-6, "selection_delta": 1e-7}, "only to GROUP BY keys"),
        ("SELECT COUNT(*) FROM t GROUP BY city", {"delta": 1e-6, "selection_delta": 1e-6}, "leave at least"),
        ("SELECT COUNT(*) FROM t GROUP BY city", {"delta": 1e-6, "selection_delta": 0.0}, "at least"),
    ],
)
def test_refusals(schema: DatasetSchema, sql: str, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        plan(parse(sql), schema, epsilon=1.0, purpose="analytics", **kw)


def test_the_threshold_is_the_least_the_map_allows(schema: DatasetSchema) -> None:
    k = 3
    p = plan(
        parse("SELECT city, AVG(x) FROM t GROUP BY city"),
        schema,
        epsilon=1.0,
        delta=1e-6,
        max_rows=k,
        purpose="analytics",
    )
    assert p.needs.keys is None and p.needs.key_type == "string"
    assert p.selection is not None and p.selection["delta"] == 5e-7  # half of delta by default
    threshold = int(p.selection["threshold"])
    # the selector is one release more (there is no count(*)); the others share delta - selection delta
    assert p.noise.releases == 3
    assert p.rho == pytest.approx(3 * p.noise.rho_each)
    assert p.cost.selection_delta == 5e-7 and p.cost.approx == (0.0, 5e-7) and p.cost.delta == 1e-6
    scale = k / math.sqrt(2 * p.noise.rho_each)
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))

    def at(t: int) -> tuple[float, float]:
        m = dp.m.make_gaussian_threshold(domain, metric, scale=scale, threshold=t)
        rho, delta = m.map((k, k, k))  # type: ignore[no-untyped-call]  # opendp leaves map unannotated
        return float(rho), float(delta)

    assert at(threshold)[1] <= 5e-7 < at(threshold - 1)[1]
    assert at(threshold)[0] <= p.noise.rho_each * (1 + 1e-9)
    # the whole release is (epsilon, delta)-DP: rho converted at the delta the selection leaves
    assert epsilon_of(p.rho, 1e-6 - 5e-7) == pytest.approx(1.0, rel=1e-9)
    # with count(*) the selector's noisy counts are that statistic: no extra release
    counted = plan(
        parse("SELECT city, COUNT(*) FROM t GROUP BY city"), schema, epsilon=1.0, delta=1e-6, purpose="analytics"
    )
    assert counted.noise.releases == 1
    declared = plan(parse("SELECT g, COUNT(*) FROM t GROUP BY g"), schema, epsilon=1.0, delta=1e-6, purpose="analytics")
    assert declared.selection is None and declared.cost.approx is None and declared.cost.selection_delta == 0.0


def test_keys_held_by_single_subjects_are_not_released() -> None:
    """10^4 keys, each one subject's single row: the map's delta for that contribution bounds each
    key's chance of release, 10^4 times it bounds the chance that any is (below 1e-6 here)."""
    p = Plan(
        [Aggregate("count")], {}, set(), 1.0, 2e-10, group_by="k", key_type="string", max_rows=1, subject_column="s"
    )
    assert p.selector is not None
    single = float(p.selector.measurement.map((1, 1, 1))[1])
    assert 10_000 * single < 1e-6
    frame = pd.DataFrame({"s": [f"s{i}" for i in range(10_000)], "k": [f"key{i}" for i in range(10_000)]})
    exact = p.exact(frame)
    assert len(exact.keys) == 10_000
    answer = p.release_exact(exact)
    assert answer.values["count(*)"] == {} and answer.accuracy["count(*)"] == {}
    assert answer.selection == {"threshold": float(p.selector.threshold), "delta": 1e-10}


def test_keys_well_above_the_threshold_are_always_released() -> None:
    """20 keys at threshold + 6 scales: each is dropped with probability below 1e-9."""
    k = 2
    p = Plan(
        [Aggregate("count"), Aggregate("sum", "v")],
        {"v": (0.0, 1.0)},
        set(),
        1.0,
        1e-6,
        group_by="k",
        key_type="integer",
        max_rows=k,
        subject_column="s",
    )
    assert p.selector is not None
    scale = k / math.sqrt(2 * p.noise.rho_each)
    count = p.selector.threshold + math.ceil(6 * scale)
    keys = np.repeat(np.arange(20), count)
    frame = pd.DataFrame({"s": [f"s{i}" for i in range(len(keys))], "k": keys, "v": 1.0})
    # and one key below the threshold by 6 scales, one subject with rows for many keys (bounded to k)
    rare = pd.DataFrame({"s": ["r"] * 5, "k": [100 + i for i in range(5)], "v": 1.0})
    answer = p.release(pd.concat([frame, rare], ignore_index=True))
    released = answer.values["count(*)"]
    assert list(released) == sorted(str(i) for i in range(20))  # sorted by key text
    assert list(answer.values["sum(v)"]) == list(released)
    accuracy = dp.gaussian_scale_to_accuracy(scale, 0.05)
    for key, value in released.items():
        assert answer.accuracy["count(*)"][key] == accuracy
        assert abs(value - count) <= 7 * scale  # within 7 scales (below 1e-11 each otherwise)
        assert abs(answer.values["sum(v)"][key] - count) <= 7 * scale * 1.5 + 1


def test_key_text_is_the_same_on_every_engine() -> None:
    ints = pd.Series([12.0, np.nan, -3.0])  # an integer column read with a null: floats in pandas
    assert key_text(ints, "integer").tolist() == ["12", None, "-3"]
    assert key_text(pd.Series(pd.array([7, None], dtype="Int64")), "integer").tolist() == ["7", None]
    days = pd.Series([dt.date(2020, 1, 31), None, dt.date(1969, 12, 31)], dtype=object)
    assert key_text(days, "date").tolist() == ["2020-01-31", None, "1969-12-31"]
    assert key_text(pd.Series(["b", None, "ä"]), "string").tolist() == ["b", None, "ä"]
    p = Plan([Aggregate("count")], {}, set(), 1.0, 1e-6, group_by="d", key_type="date")
    exact = p.exact(pd.DataFrame({"d": [dt.date(2020, 1, 2), dt.date(2019, 5, 1), None, dt.date(2020, 1, 2)]}))
    assert exact.keys == ["2019-05-01", "2020-01-02"] and exact.rows.tolist() == [1, 2]


def test_budget_charges_rho_and_the_selection_delta_and_replays(customers: Workspace) -> None:  # noqa: F811
    """The spend a selection query reserves (rho, and its delta as an (0, delta) approximate spend) is
    what its ledger event says it charged, so the budget rows reconcile with the ledger after it."""
    ws = customers
    ws.session("owner", "administration").set_budget("customers", 5.0, 1e-5)
    schema = ws.catalog.get("customers").schema
    p = plan(
        parse("SELECT full_name, COUNT(*) FROM customers GROUP BY full_name"),
        schema,
        epsilon=0.5,
        delta=1e-6,
        selection_delta=2e-7,
        purpose="credit_scoring",
    )
    cost = p.cost
    assert cost.approx == (0.0, 2e-7)
    ws.budgets.precheck("customers", "owner", rho=cost.zcdp_rho, approx=cost.approx)
    with pytest.raises(BudgetExhausted):  # the selection delta counts against the budget's delta
        ws.budgets.precheck("customers", "owner", rho=cost.zcdp_rho, approx=(0.0, 2e-5))
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(400)], "full_name": ["A"] * 400})
    answer = p.release(frame)
    assert set(answer.public()) == PUBLIC_FIELDS and answer.public()["selection"] == p.selection
    with ws.store.write() as conn:
        after = ws.budgets.reserve(
            conn, "customers", "owner", "dp.query", cost.kind, rho=cost.zcdp_rho, approx=cost.approx
        )
        seq = ws.ledger.emit(
            conn,
            DPQueryAnswered,
            actor="owner",
            purpose="credit_scoring",
            dataset="customers",
            query_digest="sha256:" + "0" * 64,
            statistics=p.statistics,
            group_by=p.group_by,
            **answer.public(),
            epsilon_remaining=after.epsilon_remaining,
        )
    assert after.approx_delta_spent == 2e-7 and after.rho_spent == pytest.approx(cost.rho)
    assert list(answer.values["count(*)"]) == ["A"]  # 400 rows: far above the threshold
    event = json.loads(ws.ledger.entry(seq).data)
    assert event["selection"] == {"threshold": p.selection["threshold"], "delta": 2e-7}  # type: ignore[index]
    assert charged("dp.query", event) == ("customers", "owner", (cost.rho, 0.0, 0.0, 2e-7))
    # the rows agree with the ledger: reading reconciles, and the audit's derivation says the same
    state = ws.budgets.get("customers")
    assert state.approx_delta_spent == 2e-7
    derived = ws.budgets.derive_all()[("customers", "*")]
    assert derived.spent == pytest.approx([cost.rho, 0.0, 0.0, 2e-7])
    assert reconcile_budgets(AuditContext(compliance_services(ws.services), ws.clock.now())) == []  # RECON-1
    # a spend whose reservation left out the selection delta would not agree with its event
    with pytest.raises(IntegrityError), ws.store.write() as conn:
        ws.budgets.reserve(conn, "customers", "owner", "dp.query", cost.kind, rho=cost.zcdp_rho)
        ws.ledger.emit(
            conn,
            DPQueryAnswered,
            actor="owner",
            purpose="credit_scoring",
            dataset="customers",
            query_digest="sha256:" + "0" * 64,
            statistics=p.statistics,
            group_by=p.group_by,
            **answer.public(),
            epsilon_remaining=0.0,
        )
        ws.budgets.reserve(conn, "customers", "owner", "dp.query", cost.kind, rho=cost.zcdp_rho)


@pytest.fixture
def dp_ws(ws: Workspace) -> Workspace:
    spec = dict(SCHEMA)
    spec["purposes"] = {**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"}
    ws.catalog.register(load_schema(spec, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    ws.session("owner", "administration").set_budget("customers", 5.0, 1e-6)
    return ws


def test_a_session_query_selects_keys_spends_their_delta_and_names_no_key_of_one_subject(dp_ws: Workspace) -> None:
    """Four customers, each their own name: each name is released with probability at most the map's
    delta for one subject (below 2.5e-7), so none is, but with probability below 1e-6."""
    s = dp_ws.session("owner", "analytics")
    sql = "SELECT full_name, COUNT(*) FROM customers GROUP BY full_name"
    size = dp_ws.ledger.head().size
    with pytest.raises(InvalidInput, match="or a delta"):
        s.dp_query(sql, 0.5)
    with pytest.raises(BudgetExhausted):  # the selection delta must fit the budget's delta
        s.dp_query(sql, 0.5, delta=9e-6, selection_delta=2e-6)
    assert dp_ws.ledger.head().size == size and dp_ws.budgets.get("customers").approx_delta_spent == 0
    answer = s.dp_query(sql, 0.5, delta=5e-7)
    assert answer.values == {"count(*)": {}} and answer.selection is not None
    assert answer.selection["delta"] == 2.5e-7
    event = json.loads(dp_ws.ledger.entry(s.last_seq).data)  # type: ignore[arg-type]
    assert event["selection"] == answer.selection and event["group_by"] == "full_name"
    assert "Margarethe" not in json.dumps(event)
    state = dp_ws.budgets.get("customers")
    assert state.approx_delta_spent == 2.5e-7 and state.rho_spent == pytest.approx(answer.rho)
    # the next spend reconciles with the ledger (the event charged what the reservation did)
    s.dp_query("SELECT COUNT(*) FROM customers", 0.1)
    assert dp_ws.budgets.get("customers").approx_delta_spent == 2.5e-7
