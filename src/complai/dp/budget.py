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

Budget state is bound to the ledger: every spend is recorded there (a `dp.query` or `dp.spent` event in
the spend's own transaction) and every change of a total (`dp.budget_set`), so the rows are a cache of
what the ledger says. Each spend first re-derives the rows it charges from the ledger and refuses
(IntegrityError, nothing spent) if the store's totals differ: a budget reset at rest cannot spend
again. To keep this cheap on a long ledger, each row has a mark in `meta`: its state as of a ledger
size, authenticated with a key derived from the log key; a spend replays only the spend events since
the mark (read through the ledger's kind index). A missing or forged mark is ignored (the row is
re-derived from the start of the ledger); an old one only means a longer replay, since the ledger is
append-only. The audit re-derives everything from the ledger (compliance/reconcile.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, insert, select, update

from complai.clock import Clock
from complai.dp.accounting import check_epsilon_delta, epsilon_of, rho_for
from complai.errors import BudgetExhausted, IntegrityError, InvalidInput, NotFound
from complai.events import BudgetSet, BudgetSpent, DPQueryAnswered
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import dp_budgets, dp_spends, meta

ALL = "*"
# the ledger events that carry budget state: totals set, and spends
BUDGET_KINDS = (BudgetSet.kind, BudgetSpent.kind, DPQueryAnswered.kind)
SPENT = ("rho_spent", "eps_spent", "approx_eps_spent", "approx_delta_spent")
_MARK = "dp.mark:"
_MARK_INFO = b"complai dp budget mark v1"
# built once: every spend runs these
_READ_MARK = select(meta.c.value).where(meta.c.key == bindparam("key"))
_UPDATE_MARK = update(meta).where(meta.c.key == bindparam("mark_key")).values(value=bindparam("mark_value"))
_INSERT_MARK = insert(meta)


def charged(kind: str, event: dict[str, Any]) -> tuple[str, str, tuple[float, float, float, float]] | None:
    """What a spend event charged: (dataset, principal, (rho, eps, approx_eps, approx_delta)), as the
    reservation that preceded it in the same transaction added to the budget rows; None for other events."""
    try:
        dataset, actor = str(event["dataset"]), str(event["actor"])
        mechanism = str(event.get("mechanism", ""))
        if kind == DPQueryAnswered.kind:
            if mechanism.startswith("gaussian"):
                # partition selection (GROUP BY keys not declared) spends a delta besides its rho
                selection = event.get("selection")
                spent_delta = float(selection["delta"]) if selection is not None else 0.0
                return dataset, actor, (float(event["rho"]), 0.0, 0.0, spent_delta)
            return dataset, actor, (0.0, float(event["epsilon"]), 0.0, 0.0)
        if kind == BudgetSpent.kind:
            epsilon, rho, delta = float(event["epsilon"]), float(event["rho"]), float(event["delta"])
            if mechanism == "dp-sgd":
                return dataset, actor, (0.0, 0.0, epsilon, delta)
            if rho > 0:
                return dataset, actor, (rho, max(0.0, epsilon - epsilon_of(rho, delta)), 0.0, 0.0)
            return dataset, actor, (0.0, epsilon, 0.0, 0.0)
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"a {kind} ledger event does not say what it spent") from None
    return None


@dataclass
class Derived:
    """A budget row as the ledger says it must be."""

    epsilon: float
    delta: float
    rho_total: float
    spent: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # in SPENT order
    spends: int = 0
    since: int = 0  # the ledger size this state starts from (a mark's) or its dp.budget_set entry


def replay(
    state: dict[tuple[str, str], Derived],
    entries: Iterable[tuple[int, str, dict[str, Any]]],
    start: dict[tuple[str, str], int] | None = None,
) -> dict[tuple[str, str], Derived]:
    """Apply ledger entries (seq, kind, event) in order to derived budget rows, as the store applies
    them: a row exists from its first dp.budget_set on; a spend charges the dataset's row and the
    spender's. `start` skips, per row, the entries before its own starting point (a mark)."""
    start = start or {}
    for seq, kind, e in entries:
        if kind == BudgetSet.kind:
            key = (str(e["dataset"]), str(e["principal"]))
            if seq < start.get(key, 0):
                continue
            row = state.get(key)
            if row is None:
                state[key] = Derived(float(e["epsilon"]), float(e["delta"]), float(e["rho"]), since=seq)
            else:
                row.epsilon, row.delta, row.rho_total = float(e["epsilon"]), float(e["delta"]), float(e["rho"])
            continue
        spent = charged(kind, e)
        if spent is None:
            continue
        dataset, actor, cost = spent
        for key in {(dataset, ALL), (dataset, actor)}:
            row = state.get(key)
            if row is not None and seq >= start.get(key, 0):
                row.spent = [a + b for a, b in zip(row.spent, cost, strict=True)]
                row.spends += 1
    return state


def divergence(row: Row[Any], derived: Derived | None) -> str | None:
    """How a dp_budgets row differs from the ledger's account of it (None: it agrees)."""
    who = f"privacy budget {row.dataset}/{row.principal}"
    if derived is None:
        return f"{who} has no dp.budget_set entry in the ledger"

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)

    for name, value in (("epsilon", derived.epsilon), ("delta", derived.delta), ("rho_total", derived.rho_total)):
        if not close(float(getattr(row, name)), value):
            return f"{who}: the store's total {name} {getattr(row, name)!r} differs from the ledger's {value!r}"
    for name, value in zip(SPENT, derived.spent, strict=True):
        if not close(float(getattr(row, name)), value):
            return (
                f"{who}: the store's {name} {getattr(row, name)!r} differs from the {value!r} the ledger's "
                f"spend events add up to"
            )
    return None


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
    def of(
        cls, r: Row[Any], rho: float = 0.0, eps: float = 0.0, approx: tuple[float, float] = (0.0, 0.0)
    ) -> BudgetState:
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
            # the dataset's row serialises this with its spends (whose rows must exist before or after both)
            conn.execute(
                select(dp_budgets.c.principal)
                .where(dp_budgets.c.dataset == dataset, dp_budgets.c.principal == ALL)
                .with_for_update()
            ).first()
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
            if row is not None:
                self._reconcile(conn, dataset, [row], write=False)
        if row is None:
            raise NotFound(f"no privacy budget set for {dataset!r}" + ("" if principal == ALL else f" and {principal}"))
        return BudgetState.of(row)

    def all(self, dataset: str) -> list[BudgetState]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(dp_budgets).where(dp_budgets.c.dataset == dataset).order_by(dp_budgets.c.principal)
            ).all()
            self._reconcile(conn, dataset, rows, write=False)
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
    ) -> BudgetState:
        """Reserve a pure-DP `eps`, a zCDP `rho` and/or an (epsilon, delta)-DP `approx` from the dataset's
        budget and the principal's (if it has one), in the caller's transaction; BudgetExhausted (naming
        what remains) if either would be overspent, and then nothing is written. IntegrityError if the
        rows differ from what the ledger's spend events say (state altered at rest). The caller records
        the spend in the ledger (dp.query or dp.spent) in the same transaction. Returns the dataset's own
        budget after the spend (as `state` would read it back)."""
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
        self._reconcile(conn, dataset, rows)
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
        (own,) = [r for r in rows if r.principal == ALL]  # _check refused a dataset without its own budget
        return BudgetState.of(own, rho, eps, (a_eps, a_delta))

    # --- binding to the ledger ----------------------------------------------------------------------

    def _mark_key(self, dataset: str, principal: str) -> str:
        return _MARK + hashlib.sha256(f"{dataset}\0{principal}".encode()).hexdigest()[:48]

    def _mac(self, body: bytes) -> str:
        if not hasattr(self, "_mark_secret"):
            self._mark_secret = self.ledger.signer.derive_key(_MARK_INFO)
        return hmac.new(self._mark_secret, body, hashlib.sha256).hexdigest()

    def _read_mark(self, conn: Connection, dataset: str, principal: str) -> tuple[int, Derived] | None:
        """A row's authenticated state as of a ledger size; None if absent or not authentic."""
        text = conn.execute(_READ_MARK, {"key": self._mark_key(dataset, principal)}).scalar()
        if text is None:
            return None
        try:
            obj = json.loads(text)
            body = json.dumps(obj["state"], sort_keys=True).encode()
            if not hmac.compare_digest(self._mac(body), str(obj["mac"])):
                return None
            st = obj["state"]
            if st["dataset"] != dataset or st["principal"] != principal:
                return None
            seq = int(st["seq"])
            return seq, Derived(st["epsilon"], st["delta"], st["rho_total"], [float(x) for x in st["spent"]], since=seq)
        except (ValueError, KeyError, TypeError):
            return None

    def _write_mark(self, conn: Connection, row: Row[Any], seq: int) -> None:
        state = {
            "dataset": row.dataset,
            "principal": row.principal,
            "seq": seq,
            "epsilon": row.epsilon,
            "delta": row.delta,
            "rho_total": row.rho_total,
            "spent": [float(getattr(row, n)) for n in SPENT],
        }
        body = json.dumps(state, sort_keys=True).encode()
        key = self._mark_key(row.dataset, row.principal)
        value = json.dumps({"state": state, "mac": self._mac(body)})
        if conn.execute(_UPDATE_MARK, {"mark_key": key, "mark_value": value}).rowcount == 0:
            conn.execute(_INSERT_MARK, {"key": key, "value": value})

    def _reconcile(self, conn: Connection, dataset: str, rows: Sequence[Row[Any]], write: bool = True) -> None:
        """Re-derive the rows from the ledger (from their marks on); IntegrityError on a difference. A
        spend holds the dataset row's lock: every spend on the dataset is committed and visible to the
        scan, and the spend about to be recorded comes after every entry it saw, so it moves the marks
        (`write`). Reads (budget views, a training run's preflight) check a snapshot and write nothing."""
        if not rows:
            return
        state: dict[tuple[str, str], Derived] = {}
        start: dict[tuple[str, str], int] = {}
        for r in rows:
            mark = self._read_mark(conn, dataset, r.principal)
            if mark is not None:
                start[(dataset, r.principal)] = mark[0]
                state[(dataset, r.principal)] = mark[1]
        first = min(start.values()) if len(start) == len(rows) else 0
        end = first
        entries = []
        for seq, kind, data in self.ledger.scan(conn, BUDGET_KINDS, first):
            end = seq + 1
            if (ev := json.loads(data)).get("dataset") == dataset:
                entries.append((seq, kind, ev))
        replay(state, entries, start)
        for r in rows:
            problem = divergence(r, state.get((dataset, r.principal)))
            if problem is not None:
                raise IntegrityError(f"{problem}: budget state was altered outside complai; nothing was spent")
        if write:
            for r in rows:
                self._write_mark(conn, r, max(end, start.get((dataset, r.principal), 0)))

    def derive_all(self) -> dict[tuple[str, str], Derived]:
        """Every budget row as the whole ledger says it must be (for the audit)."""
        with self.store.read() as conn:
            entries = [(seq, kind, json.loads(data)) for seq, kind, data in self.ledger.scan(conn, BUDGET_KINDS)]
        return replay({}, entries)

    @staticmethod
    def _check(
        rows: Sequence[Row[Any]], dataset: str, principal: str, eps: float, rho: float, approx: tuple[float, float]
    ) -> None:
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
            self._reconcile(conn, dataset, rows, write=False)
        self._check(rows, dataset, principal, 0.0, 0.0, approx)

    def precheck(
        self,
        dataset: str,
        principal: str,
        eps: float = 0.0,
        rho: float = 0.0,
        approx: tuple[float, float] | None = None,
    ) -> None:
        """BudgetExhausted now if a pure-DP `eps`, zCDP `rho` or (epsilon, delta) `approx` spend (as
        `reserve` takes them) could not fit (nothing is reserved):
        a query the budget cannot cover is refused before its data is read or its answer computed.
        Only `reserve`, in the spend's own transaction, decides that a spend fits."""
        c = dp_budgets.c
        with self.store.read() as conn:
            rows = conn.execute(select(dp_budgets).where(c.dataset == dataset, c.principal.in_([ALL, principal]))).all()
        self._check(rows, dataset, principal, eps, rho, approx or (0.0, 0.0))

    def remaining(self, conn: Connection, dataset: str) -> float:
        """Epsilon (at the budget's delta) the dataset has left."""
        return self.state(conn, dataset).epsilon_remaining

    def state(self, conn: Connection, dataset: str) -> BudgetState:
        """The dataset's own budget as `conn` sees it (after a reservation in the same transaction)."""
        r = conn.execute(select(dp_budgets).where(dp_budgets.c.dataset == dataset, dp_budgets.c.principal == ALL)).one()
        return BudgetState.of(r)

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
