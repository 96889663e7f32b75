"""Privacy budget: zCDP arithmetic, refusal before overspending, and no overspend under concurrency."""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from complai.dp.accounting import epsilon_of, rho_for, rho_of_gaussian, rho_of_laplace
from complai.errors import BudgetExhausted, InvalidInput, PolicyDenied
from complai.workspace import Workspace
from tests.vault.conftest import customers  # noqa: F401


def test_conversions_match_the_formulas() -> None:
    # rho = 0.5 at delta = 1e-5: 0.5 + 2 sqrt(0.5 ln 1e5)
    assert epsilon_of(0.5, 1e-5) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e5)))
    assert rho_of_laplace(1.0) == 0.5
    assert rho_of_gaussian(1.0, 2.0) == pytest.approx(0.125)
    assert epsilon_of(0.0, 1e-6) == 0.0


@given(st.floats(0.01, 50), st.floats(1e-12, 0.1))
def test_rho_for_inverts_epsilon_of(epsilon: float, delta: float) -> None:
    rho = rho_for(epsilon, delta)
    assert epsilon_of(rho, delta) == pytest.approx(epsilon, rel=1e-9)
    assert epsilon_of(rho * 1.001, delta) > epsilon  # the largest such rho


@pytest.mark.parametrize(("eps", "delta"), [(0, 1e-5), (-1, 1e-5), (1, 0), (1, 1), (float("nan"), 1e-5)])
def test_bad_budgets(customers: Workspace, eps: float, delta: float) -> None:  # noqa: F811
    with pytest.raises(InvalidInput):
        customers.session("owner", "administration").set_budget("customers", eps, delta)


def test_spends_until_exhausted(customers: Workspace) -> None:  # noqa: F811
    s = customers.session("owner", "administration")
    with pytest.raises(BudgetExhausted, match="no privacy budget"):
        customers.budgets.spend("owner", "customers", "analytics", 0.1, 1e-6, "q", "laplace")
    s.set_budget("customers", 1.0, 1e-6)
    total = customers.budgets.get("customers").rho_total
    unit = total / 4.5
    for _ in range(4):
        customers.budgets.spend("owner", "customers", "analytics", unit, 1e-6, "q", "laplace")
    size = customers.ledger.head().size
    with pytest.raises(BudgetExhausted, match="remains"):
        customers.budgets.spend("owner", "customers", "analytics", unit, 1e-6, "q", "laplace")
    assert customers.ledger.head().size == size  # a refused spend writes nothing
    state = customers.budgets.get("customers")
    assert state.rho_spent == pytest.approx(4 * unit) and state.rho_spent <= state.rho_total


def test_principal_budgets_and_authority(customers: Workspace) -> None:  # noqa: F811
    customers.identity.add("owner", "ana", "service")
    s = customers.session("owner", "administration")
    s.set_budget("customers", 10.0, 1e-6)
    s.set_budget("customers", 1.0, 1e-6, principal="ana")
    ana_total = customers.budgets.get("customers", "ana").rho_total
    customers.budgets.spend("ana", "customers", "analytics", ana_total * 0.9, 1e-6, "q", "laplace")
    with pytest.raises(BudgetExhausted, match="of ana"):
        customers.budgets.spend("ana", "customers", "analytics", ana_total * 0.2, 1e-6, "q", "laplace")
    # the refused spend left the dataset-wide budget untouched (one transaction)
    assert customers.budgets.get("customers").rho_spent == pytest.approx(ana_total * 0.9)
    with pytest.raises(PolicyDenied):
        customers.session("ana", "administration").set_budget("customers", 100.0, 1e-6)


def _spender(path: str, unit: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    n = 0
    with Workspace.open(Path(path)) as ws:
        while True:
            try:
                ws.budgets.spend("owner", "customers", "analytics", unit, 1e-6, "q", "laplace")
                n += 1
            except BudgetExhausted:
                break
    out.put(n)


def test_concurrent_processes_and_threads_never_overspend(customers: Workspace) -> None:  # noqa: F811
    customers.session("owner", "administration").set_budget("customers", 2.0, 1e-6)
    total = customers.budgets.get("customers").rho_total
    unit = total / 40.5  # 40 spends fit
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_spender, args=(str(customers.path), unit, q)) for _ in range(3)]
    counts: list[int] = []

    def thread_spender() -> None:
        n = 0
        while True:
            try:
                customers.budgets.spend("owner", "customers", "analytics", unit, 1e-6, "q", "laplace")
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
    state = customers.budgets.get("customers")
    assert state.rho_spent <= state.rho_total
    assert customers.ledger.count_by_kind()["dp.spent"] == 40
