"""Purpose-bound sessions: the way to reach personal data and change governance state.

The session is part of the composition root (beside workspace.py): it fronts the governance layer
(vault, access) and the engines (deid, later dp and federated), so it may use all of them, while none
of them imports it.

`ws.session(token_or_principal, purpose)` authenticates the caller (an API token, or a principal name
for trusted in-process callers such as the workspace owner's CLI), binds a declared purpose, and
checks every operation against the policy (deny by default) before the vault does it. Allowed
operations record their own ledger event with the principal as actor; refusals record access.denied.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from complai.access.identity import Principal
from complai.errors import InvalidInput
from complai.vault.schema import DatasetSchema, DeidSpec

if TYPE_CHECKING:
    from complai.workspace import Workspace

ALL = "*"


class Session:
    def __init__(self, ws: Workspace, principal: Principal, purpose: str) -> None:
        self._ws = ws
        self.principal = principal.name
        self.roles = principal.roles
        self.purpose = purpose
        self.last_seq: int | None = None

    def _check(self, action: str, dataset: str = ALL) -> None:
        self._ws.policy.check(self.principal, dataset, action, self.purpose)

    # --- data ------------------------------------------------------------------------------------

    def read(
        self, dataset: str, columns: list[str] | None = None, deidentify: DeidSpec | dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The dataset's rows this purpose may see, decrypted, after the de-identification the dataset
        requires for the purpose (and any the caller adds); the read is recorded in the ledger."""
        self._check("read", dataset)
        return self._governed(dataset, columns, deidentify)[0]

    def _governed(
        self,
        dataset: str,
        columns: list[str] | None,
        deidentify: DeidSpec | dict[str, Any] | None = None,
        pseudonym_column: str | None = None,
    ) -> tuple[pd.DataFrame, dict[str, Any] | None]:
        """Fetch, de-identify as the purpose requires, record the read (the policy is checked by callers)."""
        from complai.deid.governed import apply
        from complai.deid.operators import Anonymizer

        vault = self._ws.vault
        schema = self._ws.catalog.get(dataset).schema
        extra = DeidSpec.model_validate(deidentify) if isinstance(deidentify, dict) else deidentify
        spec = schema.deidentify.get(self.purpose, DeidSpec()).merged(extra)
        frame, pseudos, total, _ = vault.fetch(dataset, self.purpose, columns, pseudonym_column)
        done = None
        if not spec.is_empty():
            frame, done = apply(frame, schema, spec, Anonymizer(self._ws.deid_keys))
        shown = [c for c in frame.columns if c != pseudonym_column]
        self.last_seq = vault.record_read(
            dataset, self.purpose, self.principal, shown, len(frame), pseudos, total, done
        )
        return frame, done

    def ingest(self, dataset: str, data: pd.DataFrame | Path | str | list[dict[str, Any]], consents: Any = None) -> Any:
        self._check("ingest", dataset)
        return self._ws.vault.ingest(dataset, data, self.principal, consents, purpose=self.purpose)

    def create_dataset(self, schema: Any) -> Any:
        self._check("admin", schema.name)
        return self._ws.catalog.register(schema, actor=self.principal)

    # --- subject rights --------------------------------------------------------------------------

    def export_subject(self, subject: str) -> dict[str, Any]:
        self._check("export")
        return self._ws.vault.export(subject, self.principal)

    def erase_subject(self, subject: str) -> int:
        self._check("erase")
        return self._ws.vault.erase(subject, self.principal)

    def rectify(self, subject: str, dataset: str, field: str, value: Any) -> int:
        self._check("ingest", dataset)
        return self._ws.vault.rectify(subject, dataset, field, value, self.principal)

    def restrict(self, subject: str, reason: str = "", lift: bool = False) -> int:
        self._check("erase")
        return self._ws.vault.restrict(subject, self.principal, reason, lift)

    def object(self, subject: str, purpose: str, kind: str = "objection") -> int:
        self._check("erase")
        return self._ws.vault.object(subject, purpose, self.principal, kind)

    def grant_consent(self, subject: str, purpose: str, **kw: Any) -> int:
        self._check("admin")
        return self._ws.vault.grant_consent(subject, purpose, self.principal, **kw)

    def withdraw_consent(self, subject: str, purpose: str) -> int:
        self._check("admin")
        return self._ws.vault.withdraw_consent(subject, purpose, self.principal)

    # --- operations ------------------------------------------------------------------------------

    def retention_sweep(self) -> dict[str, Any]:
        self._check("admin")
        return self._ws.vault.retention_sweep(self.principal)

    def rotate_keys(self, **kw: Any) -> dict[str, object]:
        self._check("admin")
        return self._ws.keys.rotate(self.principal, **kw)

    def backup(self, path: Path, key: bytes, **kw: Any) -> dict[str, Any]:
        from complai.vault.backup import create_backup

        self._check("admin")
        return create_backup(self._ws, path, key, self.principal, **kw)

    def trust_witness(self, vkey: Any) -> None:
        self._check("admin")
        self._ws.ledger.add_witness(vkey, self._ws.clock.now(), actor=self.principal)

    def deidentify_table(
        self,
        frame: pd.DataFrame,
        schema: DatasetSchema | str | None = None,
        deliver: Any = None,
        **kw: Any,
    ) -> tuple[pd.DataFrame, Any]:
        """k-anonymise a table the caller holds (not vault data: no dataset policy applies) and record
        the run: parameters, achieved guarantees, digests of input and output. Direct identifiers (by
        `schema`, a schema or a dataset's name, for the columns it declares; by the scanner for the
        rest) are dropped, or pseudonymised with the workspace's keyed pseudonyms, unless kept by name.
        `deliver(table, report)` (writing the output) runs before the run is recorded: a failed
        delivery records nothing."""
        from complai.crypto.pseudonym import digest
        from complai.deid.operators import Anonymizer
        from complai.deid.tabular import anonymize
        from complai.events import TableDeidentified

        if isinstance(schema, str):
            self._check_may_describe(schema)
            schema = self._ws.catalog.get(schema).schema
        declared = {f.name: f.identifier for f in schema.fields} if schema is not None else None
        anonymizer = Anonymizer(self._ws.deid_keys)
        kw.setdefault("pseudonymize", lambda value: anonymizer.pseudonym("ID", value))
        out, report = anonymize(frame, schema=declared, **kw)
        if deliver is not None:
            deliver(out, report)
        self.last_seq = self._ws.ledger.record(
            TableDeidentified(
                time=self._ws.clock.now(),
                actor=self.principal,
                purpose=self.purpose,
                rows=report.rows,
                quasi_identifiers=report.quasi_identifiers,
                sensitive=report.sensitive,
                k=report.k,
                l=report.l,
                t=report.t,
                achieved_k=report.achieved["k"],
                classes=report.classes,
                suppressed_rows=report.suppressed_rows,
                input_digest=digest(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()),
                output_digest=digest(out.to_csv(index=False).encode()),
            )
        )
        return out, report

    def deidentify_text(
        self,
        texts: list[str],
        default: str = "replace",
        operators: dict[str, str] | None = None,
        regex_only: bool = False,
        subject: str = "",
        deliver: Any = None,
    ) -> list[tuple[str, list[Any]]]:
        """Find and transform personal data in texts the caller holds; one event for the whole call.
        `deliver(results)` (writing the output) runs before the event is recorded: a failed delivery
        records nothing."""
        from collections import Counter

        from complai.crypto.pseudonym import digest
        from complai.deid.analyzer import TextAnalyzer
        from complai.deid.operators import Anonymizer
        from complai.events import TextDeidentified

        anonymizer = Anonymizer(self._ws.deid_keys)
        found = TextAnalyzer(regex_only=regex_only).analyze_batch(texts)
        out = [anonymizer.anonymize(t, f, operators, default, subject) for t, f in zip(texts, found, strict=True)]
        counts = Counter(f.entity for fs in found for f in fs)
        if deliver is not None:
            deliver(out)
        self.last_seq = self._ws.ledger.record(
            TextDeidentified(
                time=self._ws.clock.now(),
                actor=self.principal,
                purpose=self.purpose,
                documents=len(texts),
                characters=sum(len(t) for t in texts),
                findings=dict(counts),
                operators={"default": default, **(operators or {})},
                input_digest=digest("\x00".join(texts).encode()),
            )
        )
        return out

    def detokenize(self, text: str) -> str:
        """Reverse tokenisation: an action the policy must allow; every use is recorded."""
        from complai.crypto.pseudonym import digest
        from complai.deid.operators import Anonymizer
        from complai.events import TextDetokenized

        self._check("detokenize")
        restored, n = Anonymizer(self._ws.deid_keys).detokenize(text)
        self.last_seq = self._ws.ledger.record(
            TextDetokenized(
                time=self._ws.clock.now(),
                actor=self.principal,
                purpose=self.purpose,
                tokens=n,
                input_digest=digest(text.encode()),
            )
        )
        return restored

    def set_budget(self, dataset: str, epsilon: float, delta: float, principal: str = "*") -> Any:
        """Set a dataset's (or a principal's) total privacy budget: an admin action, recorded."""
        self._check("admin", dataset)
        self._ws.catalog.get(dataset)
        if principal != "*":
            self._ws.identity.get(principal)
        return self._ws.budgets.set(self.principal, dataset, epsilon, delta, principal)

    def dp_query(self, sql: Any, epsilon: float, delta: float | None = None, max_rows: int = 1) -> Any:
        """Answer a SQL aggregate with differential privacy over the rows this purpose may see.

        Order: the statement's syntax (it names the dataset), then authorisation, then the statement
        against the dataset's schema and the public parameters (dp.queries.Plan), so a principal who
        may not query learns nothing about the dataset or its schema. Everything that can be refused is
        refused before any data is read or budget spent; the budget is reserved (atomically) and the
        answer recorded in one transaction. The answer and its event hold only noisy values and public
        parameters (dp.queries.Answer)."""
        from complai.crypto.pseudonym import digest
        from complai.dp import queries
        from complai.dp.sql import parse
        from complai.errors import ComplaiError, InvalidInput
        from complai.events import DPQueryAnswered

        sql = str(sql)  # a SQL string or a dp.sql.QueryBuilder
        query = parse(sql)
        self._check("query_dp", query.dataset)
        schema = self._ws.catalog.get(query.dataset).schema
        names = {f.name for f in schema.fields}
        unknown = sorted(query.columns - names)
        if unknown:
            raise InvalidInput(f"unknown column(s) {unknown} in dataset {query.dataset}")
        bounds = {f.name: (f.min, f.max) for f in schema.fields if f.min is not None and f.max is not None}
        integer = {f.name for f in schema.fields if f.type == "integer"}
        keys = None
        if query.group_by:
            spec = schema.field(query.group_by)
            keys = spec.values or ([False, True] if spec.type == "boolean" else None)
        predicate = query.predicate(schema)
        plan = queries.Plan(
            query.aggregates, bounds, integer, epsilon, delta, query.group_by, keys, max_rows, schema.subject_column
        )
        schema.basis(self.purpose)
        frame, _, _, _ = self._ws.vault.fetch(
            query.dataset, self.purpose, sorted(query.columns | {schema.subject_column})
        )
        with self._ws.store.write() as conn:
            if plan.noise.gaussian:
                self._ws.budgets.reserve(conn, query.dataset, self.principal, "dp.query", "gaussian", rho=plan.rho)
            else:
                self._ws.budgets.reserve(conn, query.dataset, self.principal, "dp.query", "laplace", eps=epsilon)
            try:
                rows = frame if predicate is None else frame[predicate(frame)]
                answer = plan.answer(rows)
            except ComplaiError:
                raise
            except Exception:  # never expected; its message could describe the data, so none is passed on
                raise ComplaiError("the DP query failed while computing its answer; nothing was spent") from None
            self.last_seq = self._ws.ledger.append(
                conn,
                DPQueryAnswered(
                    time=self._ws.clock.now(),
                    actor=self.principal,
                    purpose=self.purpose,
                    dataset=query.dataset,
                    query_digest=digest(sql.encode()),
                    statistics=[a.label for a in query.aggregates],
                    group_by=query.group_by,
                    **answer.public(),
                    epsilon_remaining=self._ws.budgets.remaining(conn, query.dataset),
                ),
            )
        return answer

    # --- models ----------------------------------------------------------------------------------

    def train(self, dataset: str | None = None, spec: Any = None, progress: Any = None, **kw: Any) -> dict[str, Any]:
        """Train a model on a dataset (DP-SGD unless private=False) and store it with its card.

        `session.train("adult", label="income", model="mlp", target_epsilon=1, ...)` or
        `session.train(spec=TrainingSpec(...))`. Refused before any data is read if the spec is invalid or
        the budget cannot cover target_epsilon, and before any training step if the reservation fails."""
        from complai.dp.training import SUBJECT, TrainingSpec

        if spec is None:
            spec = TrainingSpec.parse({"dataset": dataset, **kw})
        elif dataset is not None or kw:
            raise TypeError("give either a spec or keyword arguments")
        self._check("train", spec.dataset)
        schema = self._ws.catalog.get(spec.dataset).schema
        basis = schema.basis(self.purpose)
        models = self._ws.models
        # delta against 1/N and the budget before the read. N, the training subjects, is at most the
        # dataset's subjects; the check uses that count rounded up to a power of two, so that neither a
        # refusal nor the delta a run picks for itself (min(1e-5, 0.1/size)) tells a principal who may
        # only train the exact number of subjects (a binary search on delta would)
        size = _size_bucket(self._ws.vault.counts(spec.dataset)["subjects"]) if spec.private else 0
        if spec.private and size:
            if spec.delta is not None and spec.delta >= 1 / size:
                raise InvalidInput(
                    f"delta {spec.delta:g} must be below 1/N, N the number of training subjects; this dataset "
                    f"accepts a delta below 1/{size} (its size rounded up to a power of two)"
                )
            if spec.delta is None:
                spec = spec.model_copy(update={"delta": min(1e-5, 0.1 / size)})
        models.preflight(spec, schema, self.principal, delta_floor=min(1e-5, 0.1 / size) if size else 1e-9)
        columns = [spec.label, *(spec.features or []), *([spec.text] if spec.text else [])]
        if not spec.features and not spec.text:
            columns = None
        frame, done = self._governed(spec.dataset, columns, pseudonym_column=SUBJECT)
        card, self.last_seq = models.train(
            spec,
            schema,
            frame,
            actor=self.principal,
            purpose=self.purpose,
            lawful_basis=basis,
            deidentification=done,
            progress=progress,
        )
        return card

    def models(self) -> list[dict[str, Any]]:
        self._check("audit")
        return self._ws.models.list()

    def model(self, model_id: str) -> dict[str, Any]:
        self._check("audit")
        return self._ws.models.get(model_id)

    def model_purpose(self, model_id: str) -> str:
        """The purpose a model was trained for, to open the session its audit runs in: only for a principal
        who may train on its dataset for that purpose; anyone else gets the same refusal whether or not
        the model exists (those who oversee the workspace learn that it does not)."""
        return str(self._trainable_model(model_id)["card"]["data"]["purpose"])

    def _trainable_model(self, model_id: str) -> dict[str, Any]:
        """The model (see model_purpose), once the principal is known to be allowed to train on its
        dataset for its purpose; the refusal is recorded and says nothing about the model."""
        from complai.errors import NotFound, PolicyDenied

        try:
            info = self._ws.models.get(model_id)
        except NotFound:
            if self._may(ALL, self._OVERSIGHT, []):
                raise
            info = None
        purpose = info["card"]["data"]["purpose"] if info else ""
        if info is None or not self._ws.policy.decide(self.principal, info["dataset"], "train", purpose):
            from complai.events import AccessDenied

            self._ws.ledger.record(
                AccessDenied(
                    time=self._ws.clock.now(),
                    actor=self.principal,
                    purpose=self.purpose,
                    action="train",
                    dataset="*",
                    reason="model audit refused: no rule allows training on the model's dataset for its purpose",
                )
            )
            raise PolicyDenied(f"{self.principal} may not audit model {model_id!r}")
        return info

    def audit_model(self, model_id: str, **kw: Any) -> dict[str, Any]:
        """Membership-inference audit of a stored model (dp/audit.py), recorded in the ledger. Re-reads the
        model's dataset under the model's purpose (this session's purpose must be that one). Only for a
        principal who may train on the model's dataset for that purpose (see model_purpose)."""
        from complai.dp.audit import run_audit

        info = self._trainable_model(model_id)  # authorised (train, for the model's purpose) before it is named
        card = info["card"]
        if card["data"]["purpose"] != self.purpose:
            raise InvalidInput(f"audit {model_id} in a session for its training purpose {card['data']['purpose']!r}")
        from complai.dp.training import SUBJECT

        frame, _ = self._governed(info["dataset"], None, pseudonym_column=SUBJECT)
        report = run_audit(self._ws.models, model_id, frame, self._ws.catalog.get(info["dataset"]).schema, **kw)
        self.last_seq = self._ws.models.record_audit(model_id, report, self.principal, self.purpose)
        return report

    # --- compliance ----------------------------------------------------------------------------

    def request_open(self, kind: str, subject: str, jurisdiction: str | None = None) -> dict[str, Any]:
        self._check("admin")
        return self._ws.requests.open(kind, subject, self.principal, jurisdiction)

    def request_update(self, rid: str, change: str, **kw: Any) -> dict[str, Any]:
        """verify (method=), acknowledge, extend (reason=), reject (reason=)."""
        self._check("admin")
        r = self._ws.requests
        if change == "verify":
            return r.verify_identity(rid, kw["method"], self.principal)
        if change == "acknowledge":
            return r.acknowledge(rid, self.principal)
        if change == "extend":
            return r.extend(rid, self.principal, kw.get("reason", ""))
        if change == "reject":
            return r.reject(rid, self.principal, kw.get("reason", ""))
        raise InvalidInput(f"unknown change {change!r}")

    def request_fulfil(self, rid: str, subject: str, **params: Any) -> tuple[dict[str, Any], Any]:
        return self._ws.requests.fulfil(self, rid, subject, **params)

    def incident(self, change: str, iid: str = "", **kw: Any) -> dict[str, Any]:
        """open (kind=, description=), notify (authority=), close."""
        self._check("admin")
        inc = self._ws.incidents
        if change == "open":
            return inc.open(kw.get("kind", "manual"), kw.get("description", ""), kw.get("evidence", {}), self.principal)
        if change == "notify":
            return inc.notify(iid, kw.get("authority", ""), self.principal)
        if change == "close":
            return inc.close(iid, self.principal)
        raise InvalidInput(f"unknown change {change!r}")

    def dpia(self, change: str, dataset: str, **kw: Any) -> dict[str, Any]:
        """generate, sign (by=, version=), status."""
        from complai.compliance import dpia

        self._check("audit" if change == "status" else "admin", dataset)
        self._ws.catalog.get(dataset)  # after the policy: a refusal says nothing about whether it exists
        if change == "status":
            return dpia.status(self._ws, dataset)
        if change == "generate":
            return dpia.generate(self._ws, dataset, self.principal)
        if change == "sign":
            return dpia.sign(self._ws, dataset, kw.get("by", ""), self.principal, kw.get("version"))
        raise InvalidInput(f"unknown change {change!r}")

    def incidents(self) -> list[dict[str, Any]]:
        self._check("audit")
        return self._ws.incidents.list()

    def request(self, rid: str) -> dict[str, Any]:
        self._check("audit")
        return self._ws.requests.get(rid)

    def requests(self, overdue_only: bool = False) -> list[dict[str, Any]]:
        self._check("audit")
        return self._ws.requests.list(overdue_only)

    def compliance_audit(
        self,
        out: Path,
        formats: tuple[str, ...] = ("json", "md", "html"),
        epsilon_cap: float = 10.0,
        since_last: bool = False,
        force: bool = False,
    ) -> dict[str, Any]:
        """Run every control against the workspace and its ledger; write the report; record its digest.
        `since_last`: ledger evidence only from where the last recorded audit stopped (its root checked
        to be a prefix of today's), state controls in full. `force` overwrites earlier report files."""
        from complai.compliance import engine, report

        self._check("audit")
        report.check_out(self._ws, Path(out), formats, force, epsilon_cap=epsilon_cap)
        since, base = 0, None
        if since_last:
            last = report.last_audit(self._ws)
            if last is not None:
                since, base = last
        ctx = engine.AuditContext(self._ws, self._ws.clock.now(), epsilon_cap=epsilon_cap, since=since, base_root=base)
        from complai.workspace import OWNER

        doc = report.build(ctx, self.principal, OWNER)
        written = report.write(self._ws, doc, self.principal, self.purpose, Path(out), formats, force=force)
        self.last_seq = written["ledger_seq"]
        return {**written, "report": doc}

    # --- descriptions of the workspace ---------------------------------------------------------------

    _OVERSIGHT = ("audit", "admin")
    _EXACT = ("read", "ingest", "export", "erase", "audit", "admin")
    _ANY = ("read", "ingest", "query_dp", "train", "export", "erase", "share", "audit", "admin")

    def _may(self, dataset: str, actions: tuple[str, ...], purposes: list[str]) -> bool:
        decide = self._ws.policy.decide
        return any(decide(self.principal, dataset, a, p) for a in actions for p in [*purposes, self.purpose])

    def _check_oversight(self) -> None:
        """Audit or admin on the whole workspace; anyone else is refused (and recorded) as for audit."""
        if not self._may(ALL, self._OVERSIGHT, []):
            self._check("audit")

    def status(self) -> Any:
        """The workspace's status (ledger head, schema revision, counts of datasets and checkpoints):
        for principals who oversee it (audit or admin)."""
        self._check_oversight()
        return self._ws.status()

    def key_status(self) -> dict[str, object]:
        """Key versions and rotation state: for principals who oversee the workspace (audit or admin)."""
        self._check_oversight()
        return self._ws.keys.status()

    def _check_may_describe(self, name: str) -> None:
        """A dataset's declaration is for principals who may act on it for any purpose it declares, or
        oversee the workspace; anyone else is refused (recorded) whether or not it exists."""
        if not self._may(name, self._ANY, []) and not self._may(ALL, self._OVERSIGHT, []):
            # purposes are per dataset: look them up only once the name alone is not enough
            catalog = self._ws.catalog
            known = name in catalog.names()
            purposes = list(catalog.get(name).schema.purposes) if known else []
            if not known or not self._may(name, self._ANY, purposes):
                self._check("audit", name)

    def describe_datasets(self, name: str | None = None) -> list[dict[str, Any]]:
        """Dataset declarations the principal may act on, for any purpose the dataset declares; exact
        record and subject counts only to those who may see exact data (a DP-only analyst gets none: a
        count is a data-dependent value). The policy is asked before the catalogue, so a refusal says
        nothing about whether a dataset exists."""
        catalog, vault = self._ws.catalog, self._ws.vault
        if name is not None:
            self._check_may_describe(name)
            names = [name]
        else:
            names = catalog.names()
        out = []
        for n in names:
            info = catalog.get(n)
            purposes = list(info.schema.purposes)
            if name is None and not self._may(n, self._ANY, purposes):
                continue
            doc: dict[str, Any] = {**info.schema.model_dump(mode="json"), "created_at": info.created_at}
            if self._may(n, self._EXACT, purposes):
                doc.update(vault.counts(n))
            out.append(doc)
        return out

    def audit_access(self) -> None:
        """Ledger and audit views: the auditor's action (no personal data involved)."""
        self._check("audit")

    def __repr__(self) -> str:
        return f"Session(principal={self.principal!r}, purpose={self.purpose!r})"


def _size_bucket(n: int) -> int:
    """The least power of two at or above n (0 for an empty dataset): a public stand-in for a size."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
