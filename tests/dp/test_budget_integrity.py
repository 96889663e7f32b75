"""Budget state is bound to the ledger: a budget reset or raised at rest is refused at the next spend
(IntegrityError, nothing spent) and named by the audit's reconciliation; the marks that keep a spend's
check short cannot be forged, and deleting or rolling them back only makes the check longer."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update

from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.compliance.reconcile import reconcile_budgets
from complai.errors import IntegrityError
from complai.store.tables import dp_budgets, dp_spends, meta
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

COUNT = "SELECT COUNT(*) FROM customers"


@pytest.fixture
def spent(ws: Workspace) -> Workspace:
    """A budget of epsilon 1 on customers, almost exhausted by Laplace and Gaussian queries and by a
    principal that has its own budget, set after its first spend."""
    schema = dict(SCHEMA, purposes={**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"})
    ws.catalog.register(load_schema(schema, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    admin = ws.session("owner", "administration")
    admin.set_budget("customers", 1.0, 1e-6)
    ws.identity.add("owner", "ana", "service")
    ws.policy.add("owner", "ana", "customers", "query_dp", "analytics")
    ana = ws.session("ana", "analytics")
    ana.dp_query(COUNT, 0.2)
    admin.set_budget("customers", 0.5, 1e-6, principal="ana")  # charged from here on
    ana.dp_query(COUNT, 0.2)
    ws.session("owner", "analytics").dp_query(COUNT, 0.3, delta=1e-7)  # Gaussian: rho
    ana.dp_query(COUNT, 0.2)
    return ws


def _recon(ws: Workspace) -> list[str]:
    return reconcile_budgets(engine.AuditContext(compliance_services(ws.services), ws.clock.now()))


def _state(ws: Workspace) -> tuple[int, int]:
    with ws.store.read() as conn:
        return ws.ledger.head(conn).size, conn.execute(select(func.count()).select_from(dp_spends)).scalar_one()


def test_clean_budgets_reconcile(spent: Workspace) -> None:
    assert _recon(spent) == []
    result = engine.reconciliation(engine.AuditContext(compliance_services(spent.services), spent.clock.now()))
    assert result.status == engine.PASS


@pytest.mark.parametrize("principal", ["*", "ana"])  # the dataset's budget, the principal's
def test_reset_budget_row_refuses_the_next_spend_and_fails_the_audit(spent: Workspace, principal: str) -> None:
    with spent.store.write() as conn:
        conn.execute(
            update(dp_budgets)
            .where(dp_budgets.c.principal == principal)
            .values(rho_spent=0.0, eps_spent=0.0, approx_eps_spent=0.0, approx_delta_spent=0.0)
        )
        conn.execute(delete(dp_spends))
    before = _state(spent)
    with pytest.raises(IntegrityError, match=r"differs from .* the ledger.s spend events"):
        spent.session("ana", "analytics").dp_query(COUNT, 0.05)
    assert _state(spent) == before  # nothing spent, nothing recorded
    problems = _recon(spent)
    who = f"customers/{principal}"
    assert any(f"privacy budget {who}: the store's" in p and "spend events add up to" in p for p in problems)
    assert any("privacy spends of ana on customers: 0 stored, the ledger records 3" in p for p in problems)
    finding = engine.reconciliation(engine.AuditContext(compliance_services(spent.services), spent.clock.now()))
    assert finding.status == engine.FAIL and any(who in i["problem"] for i in finding.items)


def test_raised_total_at_rest_is_refused(spent: Workspace) -> None:
    with spent.store.write() as conn:
        conn.execute(update(dp_budgets).where(dp_budgets.c.principal == "*").values(epsilon=100.0))
    with pytest.raises(IntegrityError, match="total epsilon"):
        spent.session("ana", "analytics").dp_query(COUNT, 0.05)
    assert any("customers/*: the store's total epsilon" in p for p in _recon(spent))


def test_deleted_spend_rows_are_named(spent: Workspace) -> None:
    with spent.store.write() as conn:
        first = conn.execute(select(func.min(dp_spends.c.id))).scalar_one()
        conn.execute(delete(dp_spends).where(dp_spends.c.id == first))
    assert _recon(spent) == ["privacy spends of ana on customers: 2 stored, the ledger records 3"]


def test_marks_cannot_be_forged_and_rolling_them_back_is_harmless(spent: Workspace) -> None:
    key = spent.budgets._mark_key("customers", "*")
    with spent.store.read() as conn:
        old = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one()
    ana = spent.session("ana", "analytics")
    ana.dp_query(COUNT, 0.01)
    # roll the mark back to an earlier (authentic) one: the spend replays the ledger from there
    with spent.store.write() as conn:
        conn.execute(update(meta).where(meta.c.key == key).values(value=old))
    ana.dp_query(COUNT, 0.01)
    # reset the row and forge its mark (zero spent, as of today's head): the forgery does not
    # authenticate, so the row is re-derived from the whole ledger and the reset is caught
    with spent.store.write() as conn:
        conn.execute(update(dp_budgets).values(rho_spent=0.0, eps_spent=0.0))
        forged = old.replace('"seq": ', '"seq": 1').replace('"spent": [', '"spent": [0.0, 0.0, 0.0, 0.0], "x": [')
        conn.execute(update(meta).values(value=forged).where(meta.c.key.like("dp.mark:%")))
    with pytest.raises(IntegrityError):
        ana.dp_query(COUNT, 0.01)
    # with every mark deleted the same
    with spent.store.write() as conn:
        conn.execute(delete(meta).where(meta.c.key.like("dp.mark:%")))
    with pytest.raises(IntegrityError):
        ana.dp_query(COUNT, 0.01)


def test_spends_after_a_lost_mark_still_agree(spent: Workspace) -> None:
    with spent.store.write() as conn:
        conn.execute(delete(meta).where(meta.c.key.like("dp.mark:%")))
    spent.session("ana", "analytics").dp_query(COUNT, 0.01)  # re-derived from the whole ledger: agrees
    spent.session("owner", "analytics").dp_query(COUNT, 0.01, delta=1e-8)
    assert _recon(spent) == []


def test_budget_views_and_a_training_preflight_refuse_a_reset_budget(spent: Workspace) -> None:
    with spent.store.write() as conn:
        conn.execute(update(dp_budgets).values(eps_spent=0.0))
    with pytest.raises(IntegrityError):
        spent.budgets.get("customers")
    with pytest.raises(IntegrityError):
        spent.budgets.all("customers")
    before = _state(spent)
    with pytest.raises(IntegrityError):  # refused before any data is read: no vault.read, no spend
        spent.session("owner", "analytics").train(
            "customers", label="segment", model="logreg", target_epsilon=0.1, delta=1e-7
        )
    assert _state(spent) == before
