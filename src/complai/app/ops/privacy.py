"""Session operations: Differential privacy: budgets, DP queries, training and model audits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from complai.app.core import ALL, SessionCore
from complai.app.ops.external import check_source
from complai.crypto.digest import digest_text
from complai.dp.budget import BUDGET_KINDS, BudgetState, Derived, charged, replay
from complai.dp.training import (
    SUBJECT,
    ModelCard,
    TrainingSpec,
    fairness_attributes,
    fairness_exclusions,
    without_evaluation,
)
from complai.errors import ComplaiError, InvalidInput, NotFound, PolicyDenied
from complai.events import AccessDenied, DPQueryAnswered

if TYPE_CHECKING:
    from complai.dp import queries
    from complai.dp.sql import QueryBuilder
    from complai.vault.catalog import DatasetInfo

Progress = Callable[[int, int], None]


def _percent(progress: Progress | None) -> Progress | None:
    """Progress of a DP path's read in whole percents, each told once (0 to 100 of 100): neither what it
    is told nor how often depends on how many records the purpose may see (a data-dependent count)."""
    if progress is None:
        return None
    told = -1

    def tell(done: int, total: int) -> None:
        nonlocal told
        now = 100 if total <= 0 else done * 100 // total
        for pct in range(told + 1, now + 1):
            progress(pct, 100)
        told = max(told, now)

    return tell


class PrivacyOps(SessionCore):
    def set_budget(self, dataset: str, epsilon: float, delta: float, principal: str = ALL) -> BudgetState:
        """Set a dataset's (or a principal's) total privacy budget: an admin action, recorded."""
        self._check("admin", dataset)
        self._svc.catalog.get(dataset)
        if principal != ALL:
            self._svc.identity.get(principal)
        return self._svc.budgets.set(self.principal, dataset, epsilon, delta, principal)

    def budgets(self, dataset: str) -> list[BudgetState]:
        """Every budget on a dataset (its own and its principals'), with what each has spent: for those
        who may change them (admin on the dataset) or oversee the workspace (audit); anyone else is
        refused (recorded, as for audit) before the dataset is looked up."""
        if not self._may(dataset, ("admin",), []):
            self._check("audit")
        self._svc.catalog.get(dataset)
        return self._svc.budgets.all(dataset)

    def audited_budgets(self, dataset: str) -> list[BudgetState]:
        """`budgets`, as the auditor's view: only for principals who may audit (the CLI's `dp budget`
        without `--set`); anyone else is refused (recorded) before the dataset is looked up."""
        self._check("audit")
        self._svc.catalog.get(dataset)
        return self._svc.budgets.all(dataset)

    def budget_history(self, dataset: str) -> dict[str, list[dict[str, Any]]]:
        """Every budget on a dataset (its own, "*", and its principals') after each spend the ledger
        records on it, oldest first: {principal: [{seq, time, actor, purpose, kind, mechanism,
        epsilon_spent, epsilon_left}]},
        epsilon at each budget's delta, replayed from the ledger as the store applies spends
        (dp/budget.py). The auditor's view, as `audited_budgets`: refused (recorded) before the dataset
        is looked up."""
        self._check("audit")
        self._svc.catalog.get(dataset)
        with self._svc.store.read() as conn:
            entries = [(seq, kind, json.loads(data)) for seq, kind, data in self._svc.ledger.scan(conn, BUDGET_KINDS)]
        state: dict[tuple[str, str], Derived] = {}
        out: dict[str, list[dict[str, Any]]] = {}
        for seq, kind, e in entries:
            if e.get("dataset") != dataset:
                continue
            replay(state, [(seq, kind, e)])
            spent = charged(kind, e)
            if spent is None:
                continue
            for principal in dict.fromkeys((ALL, spent[1])):
                row = state.get((dataset, principal))
                if row is None:
                    continue
                now = BudgetState(dataset, principal, row.epsilon, row.delta, row.rho_total, *row.spent)
                out.setdefault(principal, []).append(
                    {
                        "seq": seq,
                        "time": e.get("time"),
                        "actor": spent[1],
                        "purpose": e.get("purpose"),
                        "kind": kind,
                        "mechanism": e.get("mechanism"),
                        "epsilon_spent": now.epsilon_spent,
                        "epsilon_left": now.epsilon_remaining,
                    }
                )
        return out

    def budget(self, dataset: str) -> BudgetState:
        """The dataset's own budget and what remains of it: for those who may spend it (query_dp) or
        change it (admin) in this purpose, or audit the workspace; anyone else is refused (recorded)."""
        if not self._may(dataset, ("query_dp", "admin"), []):
            self._check("audit")
        return self._svc.budgets.get(dataset)

    def dp_query(
        self,
        sql: str | QueryBuilder,
        epsilon: float,
        delta: float | None = None,
        max_rows: int = 1,
        progress: Progress | None = None,
        selection_delta: float | None = None,
    ) -> queries.Answer:
        """Answer a SQL aggregate with differential privacy over the rows this purpose may see.

        Order: the statement's syntax (it names the dataset), then authorisation, then the plan: the
        statement against the dataset's schema and the public parameters (dp.queries.plan), so a
        principal who may not query learns nothing about the dataset or its schema. Everything that can
        be refused is refused before any data is read or budget spent; the plan is released, then the
        budget reserved for its cost (atomically) and the answer recorded in one transaction (an answer
        whose reservation is refused is never returned). The
        answer and its event hold only noisy values and public parameters (dp.queries.Answer). On an
        external dataset the exact aggregates are computed by Spark over its governed frame (dp.spark),
        and the rest is the same, its event included.
        `progress(percent, 100)` follows the read in whole percents, never in records. A GROUP BY key
        without declared values is selected by DP partition selection, which spends `selection_delta`
        of `delta` (by default half of it)."""
        text = str(sql)
        from complai.dp import queries  # heavy: OpenDP and its scikit-learn extras, for DP queries only
        from complai.dp.sql import parse  # heavy: sqlglot (and OpenDP through dp.queries)

        query = parse(text)
        # every read up to the answer (the policy, the schema, the budget's pre-check, the records) in one
        # snapshot; the reservation and the record below are one write transaction
        with self._svc.store.shared_reads():
            self._check("query_dp", query.dataset)
            info = self._svc.catalog.get(query.dataset)
            schema = info.schema
            plan = queries.plan(
                query,
                schema,
                epsilon=epsilon,
                delta=delta,
                max_rows=max_rows,
                purpose=self.purpose,
                selection_delta=selection_delta,
            )
            cost = plan.cost
            # a query the budget cannot cover is refused here, before its data is read or its answer computed
            # (the answer is drawn before the reservation below: a refusal there must be a rare race, not a
            # free way to run the computation on the data as often as one likes)
            self._svc.budgets.precheck(
                query.dataset, self.principal, eps=cost.pure_epsilon, rho=cost.zcdp_rho, approx=cost.approx
            )
            # the exact aggregates (in process from the vault, or by a Spark job over an external dataset's
            # governed frame) and the noise, outside any write transaction: drawn before the budget's row is
            # locked, so that concurrent queries on the dataset wait for each other only as long as a
            # reservation takes; an answer whose reservation is refused is dropped unseen
            answer = self._release(plan, info, _percent(progress))
        with self._svc.store.write() as conn:
            # the dataset's budget after this answer, for the caller (one who may query may see it)
            self.last_budget = self._svc.budgets.reserve(
                conn,
                query.dataset,
                self.principal,
                "dp.query",
                cost.kind,
                eps=cost.pure_epsilon,
                rho=cost.zcdp_rho,
                approx=cost.approx,
            )
            self.last_seq = self._svc.ledger.emit(
                conn,
                DPQueryAnswered,
                actor=self.principal,
                purpose=self.purpose,
                dataset=query.dataset,
                query_digest=digest_text(text),
                statistics=plan.statistics,
                group_by=plan.group_by,
                schema_digest=schema.digest(),
                **answer.public(),
                epsilon_remaining=self.last_budget.epsilon_remaining,
            )
        return answer

    def _release(self, plan: queries.Plan, info: DatasetInfo, progress: Progress | None) -> queries.Answer:
        """The plan released over what this purpose may see of the dataset: a vault dataset's records read
        and aggregated in process (`release`: its exact aggregates, then the noise); an external dataset's
        rows aggregated by Spark where they are (only per-key aggregates reach the driver), then the same
        noise (`release_exact`). A failure of the Spark job says nothing about the data (the generic DP
        query failure). `info` is the dataset's catalog entry as the query read it (a vault read checks it
        in its own snapshot)."""
        dataset = info.schema.name
        if info.source is None:
            fetched = self._svc.vault.fetch(dataset, self.purpose, list(plan.reads), progress=progress, info=info)
            return plan.release(fetched.frame)
        from complai.dp import spark as dp_spark  # heavy: pyspark, for external datasets only

        if progress is not None:
            progress(0, 1)
        spark = self._svc.spark.session()
        check_source(self._svc, dataset, spark)  # a source changed since registration: refused, nothing spent
        try:
            frame = self._svc.vault.lake_frame(dataset, self.purpose, list(plan.reads), spark)
        except ComplaiError:
            raise
        except Exception:
            raise ComplaiError("the DP query failed while reading its dataset; nothing was spent") from None
        exact = dp_spark.exact(plan, frame)
        if progress is not None:
            progress(1, 1)
        return plan.release_exact(exact)

    def train(
        self,
        dataset: str | None = None,
        spec: TrainingSpec | None = None,
        progress: Progress | None = None,
        **kw: object,
    ) -> dict[str, Any]:
        """Train a model on a dataset (DP-SGD unless private=False) and store it with its card.

        `session.train("adult", label="income", model="mlp", target_epsilon=1, ...)` or
        `session.train(spec=TrainingSpec(...))`. Refused before any data is read if the spec is invalid or
        the budget cannot cover target_epsilon, and before any training step if the reservation fails.
        The run's ledger entry is `last_seq`. A private run's card states no count of subjects and, for a
        principal who may not read the dataset for this purpose, withholds the held-out evaluation
        (training.without_evaluation); otherwise it is the model's card as stored."""
        if spec is None:
            spec = TrainingSpec.parse({"dataset": dataset, **kw})
        elif dataset is not None or kw:
            raise TypeError("give either a spec or keyword arguments")
        self._check("train", spec.dataset)
        if not spec.private:
            # a run without DP releases exact functions of the data (its weights, counts and metrics): only
            # for a principal who may read the dataset for this purpose
            self._check("read", spec.dataset)
        schema = self._svc.catalog.get(spec.dataset).schema
        basis = schema.basis(self.purpose)
        models = self._svc.models
        # delta against 1/N and the budget before the read. N, the training subjects, is at most the
        # dataset's subjects; the check uses that count rounded up to a power of two, so that neither a
        # refusal nor the delta a run picks for itself (min(1e-5, 0.1/size)) tells a principal who may
        # only train the exact number of subjects (a binary search on delta would)
        size = _size_bucket(self._svc.vault.counts(spec.dataset)["subjects"]) if spec.private else 0
        if spec.private and size:
            if spec.delta is not None and spec.delta >= 1 / size:
                raise InvalidInput(
                    f"delta {spec.delta:g} must be below 1/N, N the number of training subjects; this dataset "
                    f"accepts a delta below 1/{size} (its size rounded up to a power of two)"
                )
            if spec.delta is None:
                spec = spec.model_copy(update={"delta": min(1e-5, 0.1 / size)})
        models.preflight(spec, schema, self.principal, delta_floor=min(1e-5, 0.1 / size) if size else 1e-9)
        # the sensitive attributes the card's fairness section measures are read too (recorded with the
        # read), unless the purpose's de-identification removes or rewrites them: the card says so then
        excluded = fairness_exclusions(schema, spec.label, schema.deidentify.get(self.purpose))
        audited = [c for c in fairness_attributes(schema, spec.label) if c not in excluded]
        columns: list[str] | None = [spec.label, *(spec.features or []), *([spec.text] if spec.text else [])]
        if not spec.features and not spec.text:
            columns = None
        elif columns is not None:
            columns += [c for c in audited if c not in columns]
        governed = self._governed(spec.dataset, columns, pseudonym_column=SUBJECT)
        frame, done = governed.frame, governed.deidentification
        card, self.last_seq = models.train(
            spec,
            schema,
            frame,
            actor=self.principal,
            purpose=self.purpose,
            lawful_basis=basis,
            deidentification=done,
            progress=progress,
            fairness_excluded=excluded,
            population=size or None,
        )
        # the sampling rate, steps, progress and counts of a private run come from `size` (public) only; its
        # held-out evaluation is exact, so it goes only to those who may read the dataset for this purpose
        if spec.private and not self._may(spec.dataset, ("read",), []):
            card = without_evaluation(card)
        return ModelCard(card)

    def models(self) -> list[dict[str, Any]]:
        self._check("audit")
        return self._svc.models.list()

    def model(self, model_id: str) -> dict[str, Any]:
        """A stored model's registry entry, its card (a ModelCard) under "card"."""
        self._check("audit")
        info = self._svc.models.get(model_id)
        info["card"] = ModelCard(info["card"])
        return info

    def model_purpose(self, model_id: str) -> str:
        """The purpose a model was trained for, to open the session its audit runs in: only for a principal
        who may train on its dataset for that purpose; anyone else gets the same refusal whether or not
        the model exists (those who oversee the workspace learn that it does not)."""
        return str(self._trainable_model(model_id)["card"]["data"]["purpose"])

    def _trainable_model(self, model_id: str) -> dict[str, Any]:
        """The model (see model_purpose), once the principal is known to be allowed to train on its
        dataset for its purpose; the refusal is recorded and says nothing about the model."""
        info: dict[str, Any] | None
        try:
            info = self._svc.models.get(model_id)
        except NotFound:
            if self._may(ALL, self._OVERSIGHT, []):
                raise
            info = None
        purpose = info["card"]["data"]["purpose"] if info else ""
        if info is None or not self._svc.policy.decide(self.principal, info["dataset"], "train", purpose):
            self._svc.ledger.emit(
                None,
                AccessDenied,
                actor=self.principal,
                purpose=self.purpose,
                action="train",
                dataset="*",
                reason="model audit refused: no rule allows training on the model's dataset for its purpose",
            )
            raise PolicyDenied(f"{self.principal} may not audit model {model_id!r}")
        return info

    def audit_model(
        self, model_id: str, *, shadows: int = 8, seed: int = 0, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Membership-inference audit of a stored model (dp/audit.py), recorded in the ledger; the report
        carries its ledger entry (`ledger_seq`, also `last_seq`). Re-reads the model's dataset under the
        model's purpose (this session's purpose must be that one). Only for a principal who may train on
        the model's dataset for that purpose (see model_purpose) and read it: the report is exact."""
        info = self._trainable_model(model_id)  # authorised (train, for the model's purpose) before it is named
        card = info["card"]
        if card["data"]["purpose"] != self.purpose:
            raise InvalidInput(f"audit {model_id} in a session for its training purpose {card['data']['purpose']!r}")
        # the attacks score every subject and report exact counts and rates: not a DP release, so only for
        # one who may read the dataset itself for this purpose (training on it is not enough)
        self._check("read", info["dataset"])
        frame = self._governed(info["dataset"], None, pseudonym_column=SUBJECT).frame
        schema = self._svc.catalog.get(info["dataset"]).schema
        from complai.dp.audit import run_audit  # heavy: scipy.stats, and torch once it trains shadows

        report = run_audit(self._svc.models, model_id, frame, schema, shadows=shadows, seed=seed, progress=progress)
        self.last_seq = self._svc.models.record_audit(model_id, report, self.principal, self.purpose)
        return report


def _size_bucket(n: int) -> int:
    """The least power of two at or above n (0 for an empty dataset): a public stand-in for a size."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
