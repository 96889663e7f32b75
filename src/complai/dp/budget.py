"""The privacy budget of each dataset (and optionally of each principal on it).

A budget is a total (epsilon, delta). Spends are accounted in three parts: pure epsilon-DP mechanisms
(Laplace) add their epsilon (basic composition); zCDP mechanisms (Gaussian queries) add their rho
(zCDP composition); (epsilon, delta)-DP spends (DP-SGD, whose subsampled Gaussian is accounted by
Opacus at a chosen delta) add both their epsilon and their delta. What has been spent is

    eps_spent + approx_eps_spent + epsilon_of(rho_spent, delta - approx_delta_spent)

at the budget's delta, a valid (epsilon, delta) guarantee for the whole sequence (basic sequential
composition adds epsilons and deltas; the zCDP part is converted at the delta the approximate spends
left). A spend is refused if that would exceed the total.

A spend locks the budget rows (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the write transaction
already holds the database's write lock), checks, and updates them inside the caller's transaction,
so two concurrent queries can never overspend, and nothing is written when any budget would be
exceeded.
"""

from __future__ import annotations

import math
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
    approx_eps_spent: float = 0.0
    approx_delta_spent: float = 0.0

    @classmethod
    def of(cls, r: Any, rho: float = 0.0, eps: float = 0.0, approx: tuple[float, float] = (0.0, 0.0)) -> BudgetState:
        """From a dp_budgets row, plus a prospective spend."""
        return cls(
            r.dataset,
            r.principal,
            r.epsilon,
            r.delta,
            r.rho_total,
            r.rho_spent + rho,
            r.eps_spent + eps,
            r.approx_eps_spent + approx[0],
            r.approx_delta_spent + approx[1],
        )

    @property
    def delta_left(self) -> float:
        """The delta the zCDP part may still be converted at."""
        return self.delta - self.approx_delta_spent

    @property
    def epsilon_spent(self) -> float:
        if self.rho_spent <= 0:
            zcdp = 0.0
        elif self.delta_left <= 1e-12 * self.delta:
            zcdp = math.inf
        else:
            zcdp = epsilon_of(self.rho_spent, self.delta_left)
        return self.eps_spent + self.approx_eps_spent + zcdp

    @property
    def epsilon_remaining(self) -> float:
        return max(0.0, self.epsilon - self.epsilon_spent)

    @property
    def rho_remaining(self) -> float:
        """The zCDP rho a Gaussian spend could still use."""
        if self.epsilon_remaining <= 0 or self.delta_left <= 1e-12 * self.delta:
            return 0.0
        return rho_for(self.epsilon_remaining, self.delta_left)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "principal": self.principal,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho_total": self.rho_total,
            "rho_spent": self.rho_spent,
            "eps_spent_pure": self.eps_spent,
            "eps_spent_approx": self.approx_eps_spent,
            "delta_spent_approx": self.approx_delta_spent,
            "epsilon_spent_at_delta": self.epsilon_spent,
            "epsilon_remaining_at_delta": self.epsilon_remaining,
            "accounting": "pure spends compose by addition; zCDP spends by rho, converted with "
            "rho + 2 sqrt(rho ln(1/delta')) (Bun & Steinke 2016) at the delta' (epsilon, delta) spends "
            "(DP-SGD) left; all three add",
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
        return BudgetState.of(row)

    def all(self, dataset: str) -> list[BudgetState]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(dp_budgets).where(dp_budgets.c.dataset == dataset).order_by(dp_budgets.c.principal)
            )
            return [BudgetState.of(r) for r in rows]

    def reserve(
        self,
        conn: Connection,
        dataset: str,
        principal: str,
        what: str,
        mechanism: str,
        eps: float = 0.0,
        rho: float = 0.0,
        approx: tuple[float, float] | None = None,
    ) -> None:
        """Reserve a pure-DP `eps`, a zCDP `rho` and/or an (epsilon, delta)-DP `approx` from the dataset's
        budget and the principal's (if it has one), in the caller's transaction; BudgetExhausted (naming
        what remains) if either would be overspent, and then nothing is written."""
        a_eps, a_delta = approx or (0.0, 0.0)
        if eps < 0 or rho < 0 or a_eps < 0 or a_delta < 0 or not (eps > 0 or rho > 0 or a_eps > 0):
            raise InvalidInput("a privacy cost must be positive")
        c = dp_budgets.c
        rows = conn.execute(
            select(dp_budgets)
            .where(c.dataset == dataset, c.principal.in_([ALL, principal]))
            .order_by(c.principal)
            .with_for_update()
        ).all()
        self._check(rows, dataset, principal, eps, rho, (a_eps, a_delta))
        for r in rows:
            conn.execute(
                update(dp_budgets)
                .where(c.dataset == dataset, c.principal == r.principal)
                .values(
                    rho_spent=c.rho_spent + rho,
                    eps_spent=c.eps_spent + eps,
                    approx_eps_spent=c.approx_eps_spent + a_eps,
                    approx_delta_spent=c.approx_delta_spent + a_delta,
                )
            )
        conn.execute(
            insert(dp_spends).values(
                dataset=dataset,
                principal=principal,
                rho=rho,
                eps=eps + a_eps,
                delta=a_delta,
                mechanism=mechanism,
                what=what[:200],
                created_at=self.clock.now(),
            )
        )

    @staticmethod
    def _check(rows: Any, dataset: str, principal: str, eps: float, rho: float, approx: tuple[float, float]) -> None:
        if not any(r.principal == ALL for r in rows):
            raise BudgetExhausted(f"dataset {dataset!r} has no privacy budget; set one with `complai dp budget`")
        a_eps, a_delta = approx
        for r in rows:
            after = BudgetState.of(r, rho, eps, approx)
            who = "the dataset" if r.principal == ALL else principal
            now = BudgetState.of(r)
            if after.delta_left < -1e-12 * r.delta:
                raise BudgetExhausted(
                    f"privacy budget of {who} on {dataset!r}: this needs delta={a_delta:.3g}, "
                    f"{max(now.delta_left, 0.0):.3g} of delta {r.delta:g} remains"
                )
            if after.epsilon_spent > r.epsilon * (1 + 1e-12):
                if a_eps:
                    cost = f"epsilon={a_eps:.4g} at delta={a_delta:.3g}"
                else:
                    cost = f"epsilon={eps:.4g}" if eps else f"rho={rho:.4g}"
                raise BudgetExhausted(
                    f"privacy budget of {who} on {dataset!r} exhausted: this needs {cost}, "
                    f"epsilon {now.epsilon_remaining:.4g} remains at delta {r.delta:g}"
                )

    def check(self, dataset: str, principal: str, approx: tuple[float, float]) -> None:
        """Would an (epsilon, delta) spend fit? BudgetExhausted if not (nothing is reserved)."""
        c = dp_budgets.c
        with self.store.read() as conn:
            rows = conn.execute(select(dp_budgets).where(c.dataset == dataset, c.principal.in_([ALL, principal]))).all()
        self._check(rows, dataset, principal, 0.0, 0.0, approx)

    def remaining(self, conn: Connection, dataset: str) -> float:
        """Epsilon (at the budget's delta) the dataset has left."""
        r = conn.execute(select(dp_budgets).where(dp_budgets.c.dataset == dataset, dp_budgets.c.principal == ALL)).one()
        return BudgetState.of(r).epsilon_remaining

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
