"""Privacy budget: zCDP arithmetic, refusal before overspending, and no overspend under concurrency."""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from complai.app.workspace import Workspace
from complai.dp.accounting import epsilon_of, rho_for, rho_of_gaussian, rho_of_laplace
from complai.errors import BudgetExhausted, InvalidInput, PolicyDenied
from tests.vault.conftest import customers  # noqa: F401


def test_conversions_match_the_formulas() -> None:
    # rho = 0.5 at delta = 1e-5: 0.5 + 2 sqrt(0.5 ln 1e5)
    assert epsilon_of(0.5, 1e-5) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e5)))
    assert rho_of_laplace(1.0) == 0.5
    assert rho_of_gaussian(1.0, 2.0) == pytest.approx(0.125)
    assert epsilon_of(0.0, 1e-6) == 0.0


def test_subnormal_delta_gives_a_finite_rho_and_epsilon() -> None:
    # ln(1/delta) overflows at delta = 5e-324 (1/delta is inf); -ln(delta) = 744.44 does not
    rho = rho_for(1.0, 5e-324)
    assert math.isfinite(rho) and 0 < rho
    assert rho == pytest.approx((math.sqrt(744.4400719213812 + 1.0) - math.sqrt(744.4400719213812)) ** 2, rel=1e-12)
    assert epsilon_of(rho, 5e-324) == pytest.approx(1.0, rel=1e-9)


@given(st.floats(0.01, 50), st.floats(1e-12, 0.1))
def test_rho_for_inverts_epsilon_of(epsilon: float, delta: float) -> None:
    rho = rho_for(epsilon, delta)
    assert epsilon_of(rho, delta) == pytest.approx(epsilon, rel=1e-9)
    assert epsilon_of(rho * 1.001, delta) > epsilon  # the largest such rho


@pytest.mark.parametrize(("eps", "delta"), [(0, 1e-5), (-1, 1e-5), (1, 0), (1, 1), (float("nan"), 1e-5)])
def test_bad_budgets(customers: Workspace, eps: float, delta: float) -> None:  # noqa: F811
    with pytest.raises(InvalidInput):
        customers.session("owner", "administration").set_budget("customers", eps, delta)


def spend(ws: Workspace, principal: str = "owner", eps: float = 0.0, rho: float = 0.0) -> int:
    return ws.budgets.spend(principal, "customers", "analytics", 1e-6, "q", "test", eps=eps, rho=rho)


def test_spends_until_exhausted(customers: Workspace) -> None:  # noqa: F811
    s = customers.session("owner", "administration")
    with pytest.raises(BudgetExhausted, match="no privacy budget"):
        spend(customers, eps=0.1)
    s.set_budget("customers", 1.0, 1e-6)
    for _ in range(4):
        spend(customers, eps=0.2)  # pure spends add: 0.8
    size = customers.ledger.head().size
    with pytest.raises(BudgetExhausted, match="remains"):
        spend(customers, eps=0.3)
    assert customers.ledger.head().size == size  # a refused spend writes nothing
    state = customers.budgets.get("customers")
    assert state.eps_spent == pytest.approx(0.8) and state.epsilon_remaining == pytest.approx(0.2)
    # zCDP spends: their rho adds up and the total converts at delta into what is left (0.2)
    spend(customers, rho=rho_for(0.15, 1e-6))
    spend(customers, rho=rho_for(0.02, 1e-6))  # zCDP composes below the sum of the epsilons: 0.151 < 0.17
    assert customers.budgets.get("customers").epsilon_spent == pytest.approx(
        0.8 + epsilon_of(rho_for(0.15, 1e-6) + rho_for(0.02, 1e-6), 1e-6)
    )
    with pytest.raises(BudgetExhausted):
        spend(customers, rho=rho_for(0.25, 1e-6))
    assert customers.budgets.get("customers").epsilon_spent <= 1.0


def test_principal_budgets_and_authority(customers: Workspace) -> None:  # noqa: F811
    customers.identity.add("owner", "ana", "service")
    s = customers.session("owner", "administration")
    s.set_budget("customers", 10.0, 1e-6)
    s.set_budget("customers", 1.0, 1e-6, principal="ana")
    spend(customers, "ana", eps=0.9)
    with pytest.raises(BudgetExhausted, match="of ana"):
        spend(customers, "ana", eps=0.2)
    # the refused spend left the dataset-wide budget untouched (one transaction)
    assert customers.budgets.get("customers").eps_spent == pytest.approx(0.9)
    with pytest.raises(PolicyDenied):
        customers.session("ana", "administration").set_budget("customers", 100.0, 1e-6)


def _spender(path: str, unit: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    n = 0
    with Workspace.open(Path(path)) as ws:
        while True:
            try:
                spend(ws, eps=unit)
                n += 1
            except BudgetExhausted:
                break
    out.put(n)


def test_concurrent_processes_and_threads_never_overspend(customers: Workspace) -> None:  # noqa: F811
    customers.session("owner", "administration").set_budget("customers", 2.0, 1e-6)
    unit = 2.0 / 40.5  # 40 spends fit
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_spender, args=(str(customers.path), unit, q)) for _ in range(3)]
    counts: list[int] = []

    def thread_spender() -> None:
        n = 0
        while True:
            try:
                spend(customers, eps=unit)
                n += 1
            except BudgetExhausted:
                break
        counts.append(n)

    threads = [threading.Thread(target=thread_spender) for _ in range(2)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for p in procs:
        p.join(timeout=120)
        counts.append(q.get(timeout=5))
    assert sum(counts) == 40
    assert customers.budgets.get("customers").epsilon_spent <= 2.0
    assert customers.ledger.count_by_kind()["dp.spent"] == 40


def test_a_query_the_budget_cannot_cover_reads_and_computes_nothing(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the data is read or the answer computed (the answer is drawn before the reservation,
    so without this a refused query would run on the data as often as one likes, free); nothing is spent
    or recorded. A query that fits still reads, computes and spends."""
    from complai.dp import queries
    from complai.vault.service import Vault
    from tests.dp.conftest import adult_workspace

    ws = adult_workspace(ws, 200, epsilon=1.0, delta=1e-6)
    calls = {"fetch": 0, "release": 0}
    fetch, release = Vault.fetch, queries.Plan.release

    def counted_fetch(self: Vault, *a: object, **k: object) -> object:
        calls["fetch"] += 1
        return fetch(self, *a, **k)  # type: ignore[arg-type]

    def counted_release(self: queries.Plan, frame: object) -> object:
        calls["release"] += 1
        return release(self, frame)  # type: ignore[arg-type]

    monkeypatch.setattr(Vault, "fetch", counted_fetch)
    monkeypatch.setattr(queries.Plan, "release", counted_release)
    session = ws.session("owner", "analytics")
    size, before = ws.ledger.head().size, session.budget("adult").epsilon_remaining
    for _ in range(3):
        with pytest.raises(BudgetExhausted):
            session.dp_query("SELECT AVG(age) FROM adult WHERE age > 40", epsilon=5.0)
    assert calls == {"fetch": 0, "release": 0}
    assert ws.ledger.head().size == size and session.budget("adult").epsilon_remaining == before
    session.dp_query("SELECT COUNT(*) FROM adult", epsilon=0.5)
    assert calls == {"fetch": 1, "release": 1}
    assert math.isclose(session.budget("adult").epsilon_remaining, before - 0.5)
