"""Session operations: Federated learning (what an organisation and the coordinating server do
through their own workspaces; federated/engine.py's Organisation and Coordinator describe them)."""

from __future__ import annotations

from complai.app.core import ALL, SessionCore
from complai.events import FederatedRound, FederatedUpdateSent
from complai.vault.schema import DatasetSchema


class FederatedOps(SessionCore):
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
