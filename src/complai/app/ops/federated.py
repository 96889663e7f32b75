"""Session operations: Federated learning (what an organisation and the coordinating server do
through their own workspaces; federated/engine.py's Organisation and Coordinator describe them)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from complai.app.core import ALL, SessionCore
from complai.errors import InvalidInput
from complai.events import FederatedRound, FederatedUpdateSent
from complai.federated import engine
from complai.vault.schema import DatasetSchema

PSEUDONYM = "__subject__"  # the pseudonym column a partition's read carries


class FederatedOps(SessionCore):
    def federated_partition(self, spec: engine.FederatedSpec) -> engine.Partition:
        """The spec's dataset split into its organisations' shares, for a simulated federation: the spec
        checked against the schema before anything is read, then one governed read for the spec's
        purpose (only subjects with a live lawful basis for it; recorded), optionally sampled to
        `spec.rows`, partitioned IID or by label (Dirichlet). Subjects are named by their pseudonym;
        only the subject, the features and the label leave the workspace."""
        self._check("read", spec.dataset)
        if spec.purpose != self.purpose:
            raise InvalidInput(f"the spec's purpose is {spec.purpose!r}, this session's {self.purpose!r}")
        schema = self._svc.catalog.get(spec.dataset).schema
        schema.basis(self.purpose)
        cols = engine.columns(schema, spec)
        org_schema = engine.organisation_schema(schema, spec, cols)
        governed = self._governed(spec.dataset, [*cols.features, spec.label], pseudonym_column=PSEUDONYM)
        frame = governed.frame
        frame = frame[cols.labels.known(frame)]
        if spec.rows and spec.rows < len(frame):
            frame = frame.sample(n=spec.rows, random_state=spec.seed)
        frame = frame.reset_index(drop=True)
        subject = schema.subject_column
        frame = frame.drop(columns=[subject], errors="ignore").rename(columns={PSEUDONYM: subject})
        frame = frame[[subject, *cols.features, spec.label]]
        labels = cols.labels.transform(frame) if len(frame) else np.zeros(0, dtype=np.int64)
        parts = engine.partition(labels, spec.organisations, spec.partition, spec.alpha, spec.seed)
        shares = [frame.iloc[idx].reset_index(drop=True) for idx in parts]
        return engine.Partition(schema=org_schema, shares=shares, ledger_seq=governed.ledger_seq)

    def training_schema(self, dataset: str) -> DatasetSchema:
        """The declared schema of a dataset this principal may read for the purpose: the features of a
        model trained on it are built from the schema before its rows are read."""
        self._check("read", dataset)
        return self._svc.catalog.get(dataset).schema

    def record_federated_update(
        self,
        *,
        run_id: str,
        round: int,
        dataset: str,
        examples: int,
        secure_aggregation: bool,
        local_dp: bool,
        update_digest: str,
    ) -> int:
        """Record what left this organisation in one round: a digest of the (masked) update trained on
        rows of `dataset` read for this purpose, never the data."""
        self._check("read", dataset)
        self.last_seq = self._svc.ledger.emit(
            None,
            FederatedUpdateSent,
            actor=self.principal,
            purpose=self.purpose,
            run_id=run_id,
            round=round,
            dataset=dataset,
            examples=examples,
            secure_aggregation=secure_aggregation,
            local_dp=local_dp,
            update_digest=update_digest,
        )
        return self.last_seq

    def record_federated_round(
        self,
        *,
        run_id: str,
        round: int,
        sampled: int,
        survivors: int,
        dropped: int,
        secure_aggregation: bool,
        dp: str,
        noise_multiplier: float | None,
        clip_norm: float | None,
        sample_rate: float,
        epsilon: float | None,
        delta: float | None,
        aggregate_digest: str,
    ) -> int:
        """Record one aggregation round as the coordinating server saw it (counts, privacy parameters,
        a digest of the aggregate)."""
        self._check("train", ALL)
        self.last_seq = self._svc.ledger.emit(
            None,
            FederatedRound,
            actor=self.principal,
            purpose=self.purpose,
            run_id=run_id,
            round=round,
            sampled=sampled,
            survivors=survivors,
            dropped=dropped,
            secure_aggregation=secure_aggregation,
            dp=dp,
            noise_multiplier=noise_multiplier,
            clip_norm=clip_norm,
            sample_rate=sample_rate,
            epsilon=epsilon,
            delta=delta,
            aggregate_digest=aggregate_digest,
        )
        return self.last_seq

    def federated_runs(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The federated runs the ledger recorded, newest first: per run, its rounds as the coordinating
        server recorded them (sampled, survivors, dropped, secure aggregation, DP and its parameters, the
        privacy spent after the last round) and the updates organisations recorded sending. Only counts,
        public parameters and digests: the events hold nothing else. For those who oversee the workspace
        (audit or admin); anyone else is refused (recorded)."""
        self._check_oversight()
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        runs: dict[str, dict[str, Any]] = {}
        ledger = self._svc.ledger
        for entry in ledger.entries(kind=FederatedRound.kind):
            ev = json.loads(entry.data)
            run = runs.setdefault(ev["run_id"], _new_run(ev["run_id"]))
            run["rounds"] += 1
            run["last_round"] = max(run["last_round"] or 0, int(ev["round"]))
            for key in ("secure_aggregation", "dp", "noise_multiplier", "clip_norm", "sample_rate"):
                run[key] = ev[key]
            run["epsilon"], run["delta"] = ev["epsilon"], ev["delta"]
            run["clients_sampled"] += int(ev["sampled"])
            run["clients_dropped"] += int(ev["dropped"])
            run["coordinator"] = ev["actor"]
            _span(run, entry.seq, ev["time"])
        for entry in ledger.entries(kind=FederatedUpdateSent.kind):
            ev = json.loads(entry.data)
            run = runs.setdefault(ev["run_id"], _new_run(ev["run_id"]))
            run["updates_sent"] += 1
            run["datasets"] = sorted({*run["datasets"], ev["dataset"]})
            _span(run, entry.seq, ev["time"])
        ordered = sorted(runs.values(), key=lambda r: r["last_seq"], reverse=True)
        return ordered[:limit]


def _new_run(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "rounds": 0,
        "last_round": None,
        "coordinator": None,
        "secure_aggregation": None,
        "dp": None,
        "noise_multiplier": None,
        "clip_norm": None,
        "sample_rate": None,
        "epsilon": None,
        "delta": None,
        "clients_sampled": 0,
        "clients_dropped": 0,
        "updates_sent": 0,
        "datasets": [],
        "first_seq": None,
        "last_seq": None,
        "started_at": None,
        "last_at": None,
    }


def _span(run: dict[str, Any], seq: int, at: str) -> None:
    if run["first_seq"] is None or seq < run["first_seq"]:
        run["first_seq"], run["started_at"] = seq, at
    if run["last_seq"] is None or seq > run["last_seq"]:
        run["last_seq"], run["last_at"] = seq, at
