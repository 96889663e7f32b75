"""The privacy budget of each dataset (and optionally of each principal on it).

A budget is a total (epsilon, delta). Spends are accounted in two parts: pure epsilon-DP mechanisms
(Laplace) add their epsilon (basic composition), zCDP mechanisms (Gaussian, DP-SGD) add their rho
(zCDP composition); what has been spent is eps_spent + epsilon_of(rho_spent, delta), which is a valid
(epsilon, delta) guarantee for the whole sequence (sequential composition of an eps-DP and an
(eps', delta)-DP computation is (eps + eps', delta)-DP). A spend is refused if that would exceed the
total.

A spend locks the budget rows (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the write transaction
already holds the database's write lock), checks, and updates them inside the caller's transaction,
so two concurrent queries can never overspend, and nothing is written when any budget would be
exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from complai.clock import Clock
from complai.dp.accounting import check_epsilon_delta, epsilon_of, rho_for
from complai.errors import BudgetExhausted, InvalidInput, NotFound
from complai.events import BudgetSet, BudgetSpent
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import dp_budgets, dp_spends

ALL = "*"


@dataclass(frozen=True)
class BudgetState:
    dataset: str
    principal: str
    epsilon: float
    delta: float
    rho_total: float
    rho_spent: float
    eps_spent: float = 0.0

    @property
    def epsilon_spent(self) -> float:
        return self.eps_spent + epsilon_of(self.rho_spent, self.delta)

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.epsilon - self.epsilon_spent)

    @property
    def rho_remaining(self) -> float:
        """The zCDP rho a Gaussian spend could still use."""
        return rho_for(self.epsilon_remaining, self.delta) if self.epsilon_remaining > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "principal": self.principal,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho_total": self.rho_total,
            "rho_spent": self.rho_spent,
            "eps_spent_pure": self.eps_spent,
            "epsilon_spent_at_delta": self.epsilon_spent,
            "epsilon_remaining_at_delta": self.epsilon_remaining,
            "accounting": "pure spends compose by addition; zCDP spends by rho, converted with "
            "rho + 2 sqrt(rho ln(1/delta)) (Bun & Steinke 2016); the two add",
        }


class Budgets:
    def __init__(self, store: Store, ledger: Ledger, clock: Clock) -> None:
        self.store, self.ledger, self.clock = store, ledger, clock

    def set(self, actor: str, dataset: str, epsilon: float, delta: float, principal: str = ALL) -> BudgetState:
        """Set (or change) a total budget; what was spent stays spent."""
        check_epsilon_delta(epsilon, delta)
        rho = rho_for(epsilon, delta)
        now = self.clock.now()
        with self.store.write() as conn:
            key = and_(dp_budgets.c.dataset == dataset, dp_budgets.c.principal == principal)
            exists = conn.execute(select(dp_budgets.c.rho_spent).where(key)).first()
            if exists is None:
                conn.execute(
                    insert(dp_budgets).values(
                        dataset=dataset,
                        principal=principal,
                        epsilon=epsilon,
                        delta=delta,
                        rho_total=rho,
                        rho_spent=0.0,
                        eps_spent=0.0,
                        updated_at=now,
                    )
                )
            else:
                conn.execute(
                    update(dp_budgets).where(key).values(epsilon=epsilon, delta=delta, rho_total=rho, updated_at=now)
                )
            self.ledger.append(
                conn,
                BudgetSet(
                    time=now,
                    actor=actor,
                    purpose="administration",
                    dataset=dataset,
                    principal=principal,
                    epsilon=epsilon,
                    delta=delta,
                    rho=rho,
                ),
            )
        return self.get(dataset, principal)

    def get(self, dataset: str, principal: str = ALL) -> BudgetState:
        with self.store.read() as conn:
            row = conn.execute(
                select(dp_budgets).where(dp_budgets.c.dataset == dataset, dp_budgets.c.principal == principal)
            ).first()
        if row is None:
            raise NotFound(f"no privacy budget set for {dataset!r}" + ("" if principal == ALL else f" and {principal}"))
        return BudgetState(
            row.dataset, row.principal, row.epsilon, row.delta, row.rho_total, row.rho_spent, row.eps_spent
        )

    def all(self, dataset: str) -> list[BudgetState]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(dp_budgets).where(dp_budgets.c.dataset == dataset).order_by(dp_budgets.c.principal)
            )
            return [
                BudgetState(r.dataset, r.principal, r.epsilon, r.delta, r.rho_total, r.rho_spent, r.eps_spent)
                for r in rows
            ]

    def reserve(
        self,
        conn: Connection,
        dataset: str,
        principal: str,
        what: str,
        mechanism: str,
        eps: float = 0.0,
        rho: float = 0.0,
    ) -> None:
        """Reserve a pure-DP `eps` and/or a zCDP `rho` from the dataset's budget and the principal's (if it
        has one), in the caller's transaction; BudgetExhausted (naming what remains) if either would be
        overspent, and then nothing is written."""
        if eps < 0 or rho < 0 or not (eps > 0 or rho > 0):
            raise InvalidInput("a privacy cost must be positive")
        c = dp_budgets.c
        rows = conn.execute(
            select(dp_budgets)
            .where(c.dataset == dataset, c.principal.in_([ALL, principal]))
            .order_by(c.principal)
            .with_for_update()
        ).all()
        if not any(r.principal == ALL for r in rows):
            raise BudgetExhausted(f"dataset {dataset!r} has no privacy budget; set one with `complai dp budget`")
        for r in rows:
            after = BudgetState(
                r.dataset, r.principal, r.epsilon, r.delta, r.rho_total, r.rho_spent + rho, r.eps_spent + eps
            )
            if after.epsilon_spent > r.epsilon * (1 + 1e-12):
                now = BudgetState(r.dataset, r.principal, r.epsilon, r.delta, r.rho_total, r.rho_spent, r.eps_spent)
                who = "the dataset" if r.principal == ALL else principal
                cost = f"epsilon={eps:.4g}" if eps else f"rho={rho:.4g}"
                raise BudgetExhausted(
                    f"privacy budget of {who} on {dataset!r} exhausted: this needs {cost}, "
                    f"epsilon {now.epsilon_remaining:.4g} remains at delta {r.delta:g}"
                )
        for r in rows:
            conn.execute(
                update(dp_budgets)
                .where(c.dataset == dataset, c.principal == r.principal)
                .values(rho_spent=c.rho_spent + rho, eps_spent=c.eps_spent + eps)
            )
        conn.execute(
            insert(dp_spends).values(
                dataset=dataset,
                principal=principal,
                rho=rho,
                eps=eps,
                mechanism=mechanism,
                what=what[:200],
                created_at=self.clock.now(),
            )
        )

    def remaining(self, conn: Connection, dataset: str) -> float:
        """Epsilon (at the budget's delta) the dataset has left."""
        r = conn.execute(select(dp_budgets).where(dp_budgets.c.dataset == dataset, dp_budgets.c.principal == ALL)).one()
        return BudgetState(
            r.dataset, r.principal, r.epsilon, r.delta, r.rho_total, r.rho_spent, r.eps_spent
        ).epsilon_remaining

    def spend(
        self,
        actor: str,
        dataset: str,
        purpose: str,
        delta: float,
        what: str,
        mechanism: str,
        eps: float = 0.0,
        rho: float = 0.0,
    ) -> int:
        """Reserve and record a spend on its own (one event); the ledger sequence number."""
        with self.store.write() as conn:
            self.reserve(conn, dataset, actor, what, mechanism, eps=eps, rho=rho)
            return self.ledger.append(
                conn,
                BudgetSpent(
                    time=self.clock.now(),
                    actor=actor,
                    purpose=purpose,
                    dataset=dataset,
                    rho=rho,
                    epsilon=eps + (epsilon_of(rho, delta) if rho else 0.0),
                    delta=delta if rho else 0.0,
                    mechanism=mechanism,
                    epsilon_remaining=self.remaining(conn, dataset),
                ),
            )
