"""The privacy budget of each dataset (and optionally of each principal on it), held in zCDP rho.

A spend reserves rho with one conditional UPDATE per budget row (`spent + cost <= total`), inside the
caller's transaction: on SQLite writers are serialised, on PostgreSQL the row lock makes a second
writer re-check the condition after the first commits, so two concurrent queries can never overspend.
Nothing is written when any budget would be exceeded. A reserved spend stays spent even if the query
it paid for then fails: the conservative choice.
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

    @property
    def rho_remaining(self) -> float:
        return max(0.0, self.rho_total - self.rho_spent)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "principal": self.principal,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho_total": self.rho_total,
            "rho_spent": self.rho_spent,
            "rho_remaining": self.rho_remaining,
            "epsilon_spent_at_delta": epsilon_of(self.rho_spent, self.delta),
            "epsilon_remaining_at_delta": epsilon_of(self.rho_remaining, self.delta),
            "conversion": "rho-zCDP => (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Bun & Steinke 2016)",
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
        return BudgetState(row.dataset, row.principal, row.epsilon, row.delta, row.rho_total, row.rho_spent)

    def all(self, dataset: str) -> list[BudgetState]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(dp_budgets).where(dp_budgets.c.dataset == dataset).order_by(dp_budgets.c.principal)
            )
            return [BudgetState(r.dataset, r.principal, r.epsilon, r.delta, r.rho_total, r.rho_spent) for r in rows]

    def reserve(self, conn: Connection, dataset: str, principal: str, rho: float, what: str, mechanism: str) -> float:
        """Reserve `rho` from the dataset's budget and the principal's (if it has one), in the caller's
        transaction; BudgetExhausted (naming what remains) if either would be overspent."""
        if not rho > 0:
            raise InvalidInput("a privacy cost must be positive")
        c = dp_budgets.c
        rows = conn.execute(
            select(c.principal, c.rho_total, c.rho_spent, c.delta).where(
                c.dataset == dataset, c.principal.in_([ALL, principal])
            )
        ).all()
        if not any(r.principal == ALL for r in rows):
            raise BudgetExhausted(f"dataset {dataset!r} has no privacy budget; set one with `complai dp budget`")
        for r in sorted(rows, key=lambda r: r.principal):
            done = conn.execute(
                update(dp_budgets)
                .where(c.dataset == dataset, c.principal == r.principal, c.rho_spent + rho <= c.rho_total)
                .values(rho_spent=c.rho_spent + rho)
            ).rowcount
            if done != 1:
                fresh = conn.execute(
                    select(c.rho_total, c.rho_spent, c.delta).where(c.dataset == dataset, c.principal == r.principal)
                ).one()
                left = max(0.0, fresh.rho_total - fresh.rho_spent)
                who = "the dataset" if r.principal == ALL else principal
                raise BudgetExhausted(
                    f"privacy budget of {who} on {dataset!r} exhausted: this needs rho={rho:.6g}, "
                    f"{left:.6g} remains (epsilon {epsilon_of(left, fresh.delta):.4g} at delta {fresh.delta:g})"
                )
        conn.execute(
            insert(dp_spends).values(
                dataset=dataset,
                principal=principal,
                rho=rho,
                mechanism=mechanism,
                what=what[:200],
                created_at=self.clock.now(),
            )
        )
        return rho

    def spend(self, actor: str, dataset: str, purpose: str, rho: float, delta: float, what: str, mechanism: str) -> int:
        """Reserve and record a spend on its own (one event); the ledger sequence number."""
        with self.store.write() as conn:
            self.reserve(conn, dataset, actor, rho, what, mechanism)
            after = conn.execute(
                select(dp_budgets.c.rho_total, dp_budgets.c.rho_spent).where(
                    dp_budgets.c.dataset == dataset, dp_budgets.c.principal == ALL
                )
            ).one()
            return self.ledger.append(
                conn,
                BudgetSpent(
                    time=self.clock.now(),
                    actor=actor,
                    purpose=purpose,
                    dataset=dataset,
                    rho=rho,
                    epsilon=epsilon_of(rho, delta),
                    delta=delta,
                    mechanism=mechanism,
                    rho_remaining=max(0.0, after.rho_total - after.rho_spent),
                ),
            )
