"""Session operations: external datasets (rows in the organisation's lake, read through Spark, governed by
the vault): registration, enrolment of their subjects, and the erasure requests to their owner systems."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import ValidationError

from complai.app.core import ALL, SessionCore
from complai.app.services import Services
from complai.deid.spark import apply_spark
from complai.errors import ComplaiError, InvalidInput
from complai.vault.external import EnrolResult, ErasureRequest, ExternalSource
from complai.vault.lake import (
    LINK,
    erasure_scan,
    link_column,
    physical_schema,
    registered_physical,
    source_frame,
    subject_ids,
    verify_source,
)
from complai.vault.schema import DatasetSchema, DeidSpec, load_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def check_source(svc: Services, dataset: str, spark: SparkSession) -> dict[str, str]:
    """The physical types `dataset`'s source was registered with, after checking (from its metadata: no
    rows, no job) that the source still has them: IntegrityError naming the dataset and the column
    otherwise, before anything is read, spent or recorded."""
    info, source = svc.vault.external.info(dataset)
    registered = registered_physical(svc.store, dataset)
    verify_source(spark, source, info.schema, registered)
    return registered


def external_source(source: ExternalSource | dict[str, Any]) -> ExternalSource:
    """A source as given (a mapping from a file or a form), checked; InvalidInput naming what is wrong."""
    if isinstance(source, ExternalSource):
        return source
    try:
        return ExternalSource.model_validate(source)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"invalid external source: {where + ': ' if where else ''}{err['msg']}") from None


@dataclass(frozen=True)
class GovernedSparkRead:
    """What a governed read of an external dataset returned: the rows (pinned: what was recorded is what
    is returned), the de-identification applied, and the read's ledger entry."""

    frame: DataFrame
    deidentification: dict[str, Any] | None
    ledger_seq: int


class ExternalOps(SessionCore):
    def register_external(
        self,
        schema: DatasetSchema | Path | str | dict[str, object],
        source: ExternalSource | dict[str, Any],
        physical: dict[str, str] | None = None,
    ) -> DatasetSchema:
        """Register an external dataset: `admin` on it, as creating a dataset; then the source's physical
        types (read from its metadata through Spark unless given) are checked against the schema, and
        the catalogue entry, its source and one event are written together."""
        spec = schema if isinstance(schema, DatasetSchema) else load_schema(schema, self._svc.taxonomy)
        self._check("admin", spec.name)
        src = external_source(source)
        types = physical if physical is not None else physical_schema(self._svc.spark.session(), src)
        return self._svc.vault.register_external(spec, src, types, self.principal)

    def enrol(self, dataset: str, ids: Iterable[str], consents: pd.DataFrame | Path | str | None = None) -> EnrolResult:
        """Enrol the lake's subject ids in an external dataset (needs `ingest` on it, as bringing records
        does); consents as an ingest's: only for the subjects it creates unless the principal may record
        consents (`admin`, as grant_consent). One event; refusals recorded."""
        self._check("ingest", dataset)
        any_subject = consents is None or self._may(ALL, ("admin",), [])
        return self._svc.vault.enrol(
            dataset, ids, self.principal, consents, any_subject=any_subject, purpose=self.purpose
        )

    def require_external(self, dataset: str, action: str | None = None) -> None:
        """Nothing when `dataset` is an external dataset whose stored source is the one registered, for a
        principal who may `action` it (None: oversee the workspace); refused (recorded) otherwise, then
        NotFound, InvalidInput (its records are in the vault) or IntegrityError. No Spark: what a service
        checks before it queues a job that would read the source."""
        if action is None:
            self._check_oversight()
        else:
            self._check(action, dataset)
        self._svc.vault.external.info(dataset)

    def enrol_from_source(self, dataset: str, consents: pd.DataFrame | Path | str | None = None) -> EnrolResult:
        """Enrol every distinct subject id the source holds now (read through Spark, streamed)."""
        self._check("ingest", dataset)
        info, source = self._svc.vault.external.info(dataset)
        spark = self._svc.spark.session()
        check_source(self._svc, dataset, spark)
        ids = subject_ids(spark, source, info.schema)
        any_subject = consents is None or self._may(ALL, ("admin",), [])
        return self._svc.vault.enrol(
            dataset, ids, self.principal, consents, any_subject=any_subject, purpose=self.purpose
        )

    def read_spark(
        self, dataset: str, columns: list[str] | None = None, deidentify: DeidSpec | dict[str, Any] | None = None
    ) -> GovernedSparkRead:
        """A governed read of an external dataset through Spark: `read` on it for the session's purpose;
        only the rows of subjects the purpose may reach now, pinned (checkpointed) and counted in one
        job, then recorded as a vault read is (its ledger entry and the access log of the subjects it
        reached). The de-identification the dataset requires for the purpose (and any the caller adds)
        is applied by Spark before the rows are pinned (`deid.spark.apply_spark`, under the governed keys:
        the pseudonyms an in-process governed read shows) and recorded as an in-process read records it;
        a spec with k is refused before any job (k-anonymisation runs in process only)."""
        self._check("read", dataset)
        vault = self._svc.vault
        info, _ = vault.external.info(dataset)
        schema = info.schema
        schema.basis(self.purpose)
        try:
            extra = DeidSpec.model_validate(deidentify) if isinstance(deidentify, dict) else deidentify
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(f"invalid deidentify: {where + ': ' if where else ''}{err['msg']}") from None
        names = [f.name for f in schema.fields]
        if extra is not None:  # a name that is no column of the dataset (complai's link column) is refused
            named = [*extra.pseudonymize, *extra.text]
            unknown = [c for c in named if c not in names]
            if unknown:
                raise InvalidInput(f"unknown column(s) {unknown} in deidentify for dataset {dataset}")
        spec = schema.deidentify.get(self.purpose, DeidSpec()).merged(extra, schema.direct_identifiers())
        if spec.k:
            raise InvalidInput(
                f"dataset {dataset} is k-anonymised for {self.purpose}: k-anonymity is applied in process only, "
                "not on a governed Spark read; use a DP query, or a purpose without k"
            )
        shown = list(columns) if columns else names
        unknown = [c for c in shown if c not in names]
        if unknown:
            raise InvalidInput(f"unknown column(s) {unknown} in dataset {dataset}")
        spark = self._svc.spark.session()
        check_source(self._svc, dataset, spark)
        at = self._svc.clock.now()
        try:
            frame = vault.lake_frame(dataset, self.purpose, shown, spark, at=at)
            linked = frame.withColumn(LINK, link_column(frame[schema.subject_column], vault.link_key(dataset)))
            linked = linked.select(*shown, LINK)
            done = None
            if not spec.is_empty():  # the rows pinned are the de-identified ones: one analysis, recorded as returned
                linked, done = apply_spark(linked, schema, spec, self._svc.deid_keys)
            pinned = linked.localCheckpoint(eager=True)
            per_link = {bytes(r[LINK]): int(r["count"]) for r in pinned.groupBy(LINK).count().collect()}
            total = source_frame(spark, info.source).count() if info.source is not None else 0
        except ComplaiError:
            raise
        except Exception as exc:  # a Spark failure: its message may quote a value of the data, never shown
            raise ComplaiError(
                f"the governed read of dataset {dataset} failed in Spark ({type(exc).__name__}); nothing was recorded"
            ) from None
        reached = vault.external.subjects_of(dataset, per_link)
        out = pinned.drop(LINK)
        seq = vault.record_read(
            dataset, self.purpose, self.principal, out.columns, sum(per_link.values()), reached, total, done
        )
        self.last_seq = seq
        return GovernedSparkRead(out, done, seq)

    def erasure_requests(self, dataset: str | None = None) -> list[ErasureRequest]:
        """The erasure requests to owner systems (pseudonyms, dates and states; no id): for oversight."""
        self._check_oversight()
        return self._svc.vault.external.pending(dataset)

    def export_erasure_requests(self, dataset: str, out: Path | str, force: bool = False) -> int:
        """Write a dataset's open erasure requests, each sealed to its owner system's key, to `out`
        (JSON Lines, 0600, never overwritten unless `force`). `admin` on the dataset; one event."""
        self._check("admin", dataset)
        return self._svc.vault.external.export_requests(dataset, Path(out), self.principal, force=force)

    def verify_external_erasures(self, dataset: str | None = None) -> dict[str, dict[str, int]]:
        """Scan the external datasets with open erasure requests (or `dataset`) for the rows of erased
        subjects: a request with no row left is verified gone, one with rows is present. Audit or admin
        on the workspace; one event (none when no request is open)."""
        self._check_oversight()
        seq, results = scan_external(self._svc, self.principal, dataset)
        if seq is not None:
            self.last_seq = seq
        return results


def scan_external(
    svc: Services, actor: str, dataset: str | None = None
) -> tuple[int | None, dict[str, dict[str, int]]]:
    """Scan the external datasets with open erasure requests (or `dataset`) for the rows of erased
    subjects and record what was found (one event; none, and no Spark, when no request is open)."""
    external = svc.vault.external
    if dataset is not None:
        external.info(dataset)  # NotFound, or not external: say so
    live = set(svc.catalog.names())  # a dropped dataset's source is no longer known here
    names = sorted({r.dataset for r in external.pending(dataset) if r.state != "gone" and r.dataset in live})
    if not names:
        return None, {}
    spark = svc.spark.session()
    # every source is checked against its registered physical types before any scan: a drifted one
    # (a subject column of another type finds no row) must never mark a request gone
    registered = {name: check_source(svc, name, spark) for name in names}
    found: dict[str, dict[bytes, int]] = {}
    for name in names:
        info, source = external.info(name)
        links = external.open_links(name)
        try:
            rows = erasure_scan(spark, source, info.schema, links, external.link_key(name), registered[name])
        except ComplaiError:
            raise
        except Exception as exc:  # a Spark failure: its message may quote a value of the data, never shown
            raise ComplaiError(
                f"the erasure scan of dataset {name} failed in Spark ({type(exc).__name__}); nothing was recorded"
            ) from None
        found[name] = {link: 0 for link in links} | rows
    return external.record_check(found, actor)
