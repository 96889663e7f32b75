"""The session's core: the principal and purpose it is bound to, and the one place where an operation is
authorised (`_check`, `_may`). Every operation (app/ops/) authorises through these before it acts."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from complai.access.identity import Principal
from complai.app.services import Services
from complai.deid.governed import apply
from complai.deid.operators import Anonymizer
from complai.dp.budget import BudgetState
from complai.errors import ComplaiError
from complai.logs import log_operation
from complai.vault.schema import DeidSpec

ALL = "*"
_ROW_SUBJECT = "\x00subject"  # each fetched row's pseudonym, kept beside the frame (not a field name)


@dataclass(frozen=True)
class GovernedRead:
    """What a governed read did: the rows it returned, the de-identification applied to them (as its
    ledger entry records it: pseudonymised, dropped, text, k_anonymity...) and that entry's number."""

    frame: pd.DataFrame
    deidentification: dict[str, Any] | None
    ledger_seq: int

    @property
    def achieved_k(self) -> int | None:
        """The k the read's k-anonymisation achieved, when the purpose required one."""
        k_anonymity = (self.deidentification or {}).get("k_anonymity")
        return int(k_anonymity["achieved_k"]) if k_anonymity else None


def _logged(op: Callable[..., Any]) -> Callable[..., Any]:
    """`op` logged at the operation boundary: its name, the principal, purpose, outcome, duration and
    ledger entry; never its arguments or its result (complai/logs.py)."""

    @functools.wraps(op)
    def run(self: SessionCore, *args: Any, **kwargs: Any) -> Any:
        nested, self._depth = self._depth > 0, self._depth + 1
        before, t0, outcome, error = self.last_seq, time.perf_counter(), "ok", None
        try:
            return op(self, *args, **kwargs)
        except BaseException as exc:
            error = type(exc)
            outcome = "refused" if isinstance(exc, ComplaiError) and exc.exit_code == 2 else "failed"
            raise
        finally:
            self._depth -= 1
            seq = self.last_seq if self.last_seq != before else None
            elapsed = time.perf_counter() - t0
            log_operation(
                op.__name__, self.principal, self.purpose, outcome, elapsed, error=error, ledger_seq=seq, nested=nested
            )

    return run


class SessionCore:
    """What every group of session operations shares: the services, the principal and the purpose."""

    def __init__(self, svc: Services, principal: Principal, purpose: str) -> None:
        self._svc = svc
        self.principal = principal.name
        self.roles = principal.roles
        self.purpose = purpose
        self.last_seq: int | None = None
        self.last_budget: BudgetState | None = None  # a DP answer's dataset budget, after its spend
        self._depth = 0  # operations in progress (one operation may use another)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each public operation a group defines (app/ops/) is logged at its boundary."""
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, _logged(value))

    def _check(self, action: str, dataset: str = ALL) -> None:
        """Refuse (and record the refusal) unless the policy allows `action` on `dataset` for the purpose;
        the decision is the access layer's (access/authz.py), the one place permissions are decided."""
        self._svc.authz.check(self.principal, dataset, action, self.purpose)

    _OVERSIGHT = ("audit", "admin")

    _EXACT = ("read", "ingest", "export", "erase", "audit", "admin")

    _ANY = ("read", "ingest", "query_dp", "train", "export", "erase", "share", "audit", "admin")

    def _may(self, dataset: str, actions: tuple[str, ...], purposes: list[str]) -> bool:
        pairs = [(a, p) for a in actions for p in [*purposes, self.purpose]]
        return self._svc.authz.decide_any(self.principal, dataset, pairs)

    def _check_oversight(self) -> None:
        """Audit or admin on the whole workspace; anyone else is refused (and recorded) as for audit."""
        if not self._may(ALL, self._OVERSIGHT, []):
            self._check("audit")

    def _check_may_describe(self, name: str) -> None:
        """A dataset's declaration is for principals who may act on it for any purpose it declares, or
        oversee the workspace; anyone else is refused (recorded) whether or not it exists."""
        if not self._may(name, self._ANY, []) and not self._may(ALL, self._OVERSIGHT, []):
            # purposes are per dataset: look them up only once the name alone is not enough
            catalog = self._svc.catalog
            known = name in catalog.names()
            purposes = list(catalog.get(name).schema.purposes) if known else []
            if not known or not self._may(name, self._ANY, purposes):
                self._check("audit", name)

    def _governed(
        self,
        dataset: str,
        columns: list[str] | None,
        deidentify: DeidSpec | dict[str, Any] | None = None,
        pseudonym_column: str | None = None,
        window: tuple[int, int] | None = None,
    ) -> GovernedRead:
        """Fetch, de-identify as the purpose requires, record the read (the policy is checked by callers).
        With `window` (offset, limit), only that slice of the de-identified rows, in a stable order, is
        returned and recorded (rows and subjects of the slice). A de-identification that works row by row
        (dropping, pseudonymising, text operators) is applied to the slice alone, so a page decrypts only
        its own records; a k-anonymisation still runs over every row the purpose may see."""
        vault = self._svc.vault
        info = self._svc.catalog.get(dataset)
        schema = info.schema
        extra = DeidSpec.model_validate(deidentify) if isinstance(deidentify, dict) else deidentify
        spec = schema.deidentify.get(self.purpose, DeidSpec()).merged(extra, schema.direct_identifiers())
        if window is not None and pseudonym_column is None and spec.k is None:
            frame, pseudos, total, _ = vault.fetch(dataset, self.purpose, columns, window=window, info=info)
            done = None
            if not spec.is_empty():
                frame, done = apply(frame, schema, spec, Anonymizer(self._svc.deid_keys))
            seq = vault.record_read(
                dataset, self.purpose, self.principal, list(frame.columns), len(frame), pseudos, total, done
            )
            self.last_seq = seq
            return GovernedRead(frame, done, seq)
        paged = window is not None and pseudonym_column is None
        frame, pseudos, total, _ = vault.fetch(
            dataset, self.purpose, columns, _ROW_SUBJECT if paged else pseudonym_column, ordered=paged, info=info
        )
        row_subject = frame.pop(_ROW_SUBJECT) if paged else frame[pseudonym_column] if pseudonym_column else None
        done = None
        if not spec.is_empty():
            frame, done = apply(frame, schema, spec, Anonymizer(self._svc.deid_keys))
        if window is not None and row_subject is not None:
            offset, limit = window
            frame = frame.iloc[offset : offset + limit]
            pseudos = {str(p): pseudos[str(p)] for p in row_subject.loc[frame.index]}
            frame = frame.reset_index(drop=True)
        shown = [c for c in frame.columns if c != pseudonym_column]
        seq = vault.record_read(dataset, self.purpose, self.principal, shown, len(frame), pseudos, total, done)
        self.last_seq = seq
        return GovernedRead(frame, done, seq)

    def __repr__(self) -> str:
        return f"Session(principal={self.principal!r}, purpose={self.purpose!r})"
