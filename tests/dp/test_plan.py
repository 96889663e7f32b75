"""The public plan of a DP query: checked against the schema and costed before any data is read, then
released on a frame."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from complai.app.workspace import Workspace
from complai.dp.queries import Cost, Noisy, plan
from complai.dp.sql import parse
from complai.errors import InvalidInput, PolicyDenied
from complai.vault.schema import DatasetSchema, load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

SPEC = {
    "name": "t",
    "subject_column": "sid",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {"analytics": "gdpr.legitimate_interests"},
    "fields": [
        {"name": "sid", "type": "string", "category": "user.unique_id", "nullable": False},
        {"name": "x", "type": "float", "category": "user.behavior", "min": 0, "max": 10},
        {"name": "g", "type": "category", "category": "user.behavior", "values": ["a", "b"]},
        {"name": "free", "type": "float", "category": "user.behavior"},
    ],
}


@pytest.fixture
def schema() -> DatasetSchema:
    return DatasetSchema.model_validate(SPEC)


def test_a_plan_states_its_cost(schema: DatasetSchema) -> None:
    laplace = plan(parse("SELECT COUNT(*), AVG(x) FROM t"), schema, epsilon=0.5, purpose="analytics")
    assert laplace.cost == Cost("laplace", 0.5, 0.0, laplace.rho)
    assert laplace.cost.pure_epsilon == 0.5 and laplace.cost.zcdp_rho == 0.0
    assert laplace.rho == pytest.approx(3 * (0.5 / 3) ** 2 / 2)  # three Laplace releases of epsilon/3
    gauss = plan(parse("SELECT SUM(x) FROM t"), schema, epsilon=1.0, delta=1e-6, purpose="analytics")
    assert gauss.cost.kind == "gaussian" and gauss.cost.delta == 1e-6
    assert gauss.cost.pure_epsilon == 0.0 and gauss.cost.zcdp_rho == gauss.rho > 0
    assert gauss.statistics == ["sum(x)"] and gauss.reads == ("sid", "x")


@pytest.mark.parametrize(
    ("sql", "kw", "message"),
    [
        ("SELECT AVG(free) FROM t", {}, "needs declared bounds"),
        ("SELECT COUNT(*) FROM t GROUP BY free", {}, "needs its values declared"),
        ("SELECT COUNT(nope) FROM t", {}, "unknown column"),
        ("SELECT COUNT(*) FROM t WHERE x > 'a'", {}, "numeric"),
        ("SELECT COUNT(*) FROM t", {"epsilon": -1.0}, "epsilon must be a positive number"),
        ("SELECT COUNT(*) FROM t", {"max_rows": 0}, "max rows per subject"),
        ("SELECT COUNT(*) FROM t", {"purpose": "marketing"}, "not allowed for dataset t"),
        ("SELECT COUNT(*) FROM other", {}, "reads 'other'"),
    ],
)
def test_a_plan_refuses_bad_parameters_without_a_frame(
    schema: DatasetSchema, sql: str, kw: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"epsilon": 1.0, "purpose": "analytics", **kw}
    with pytest.raises(InvalidInput, match=message):
        plan(parse(sql), schema, **args)  # type: ignore[arg-type]


def test_plan_arguments_are_keywords(schema: DatasetSchema) -> None:
    with pytest.raises(TypeError):
        plan(parse("SELECT COUNT(*) FROM t"), schema, 1.0)  # type: ignore[call-arg]


def test_release_on_neighbouring_frames_gives_identical_public_fields(schema: DatasetSchema) -> None:
    p = plan(
        parse("SELECT g, COUNT(*), AVG(x), MEDIAN(x) FROM t WHERE x > 1 GROUP BY g"),
        schema,
        epsilon=1.0,
        purpose="analytics",
    )
    frame = pd.DataFrame({"sid": ["s1", "s2", "s3"], "x": [2.0, 5.0, 0.5], "g": ["a", "b", "a"]})
    neighbour = pd.concat([frame, pd.DataFrame({"sid": ["s4"], "x": [9.0], "g": ["b"]})], ignore_index=True)
    first, second = p.release(frame), p.release(neighbour)
    assert (
        first.public()
        == second.public()
        == {
            "delta": 0.0,
            "epsilon": 1.0,
            "mechanism": "laplace (pure DP)",
            "rho": p.rho,
        }
    )
    assert set(first.values) == set(second.values) == set(p.statistics)
    for label in p.statistics:
        assert set(first.values[label]) == {"a", "b"}
        assert all(type(v) is Noisy and math.isfinite(v) for v in first.values[label].values())
    # what the release reads is the subject column, the grouped and aggregated columns and the WHERE's
    assert p.reads == ("g", "sid", "x")


@pytest.fixture
def dp_ws(ws: Workspace) -> Workspace:
    schema = dict(SCHEMA)
    schema["purposes"] = {**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"}
    ws.catalog.register(load_schema(schema, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    ws.session("owner", "administration").set_budget("customers", 5.0, 1e-6)
    return ws


def test_session_budget_views_are_authorised(dp_ws: Workspace) -> None:
    owner = dp_ws.session("owner", "analytics")
    owner.dp_query("SELECT COUNT(*) FROM customers", 0.5)
    assert owner.budget("customers").eps_spent == pytest.approx(0.5)
    assert [s.principal for s in owner.budgets("customers")] == ["*"]
    dp_ws.identity.add("owner", "ana", "service")
    ana = dp_ws.session("ana", "analytics")
    size = dp_ws.ledger.head().size
    with pytest.raises(PolicyDenied, match="ana may not audit"):
        ana.budget("customers")
    with pytest.raises(PolicyDenied, match="ana may not audit"):
        ana.budgets("customers")
    assert dp_ws.ledger.head().size == size + 2  # each refusal is recorded
