"""Reading a budget while others spend from it: the read checks the store's totals against the ledger's
spend events, and must see both as of one moment (a snapshot), never a spend in one and not the other."""

from __future__ import annotations

import threading

import pytest

from complai.app.workspace import Workspace
from complai.errors import IntegrityError
from tests.dp.test_budget import spend
from tests.vault.conftest import customers  # noqa: F401


def test_budget_reads_never_see_half_a_concurrent_spend(customers: Workspace) -> None:  # noqa: F811
    customers.session("owner", "administration").set_budget("customers", 100.0, 1e-6)
    errors: list[Exception] = []
    done = threading.Event()

    def spender() -> None:
        try:
            for _ in range(60):
                spend(customers, eps=0.01)
        finally:
            done.set()

    def reader() -> None:
        while not done.is_set():
            try:
                customers.budgets.get("customers")
            except IntegrityError as exc:  # the store and the ledger seen at different moments
                errors.append(exc)

    threads = [threading.Thread(target=spender), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert customers.budgets.get("customers").eps_spent == pytest.approx(0.60)
