"""Session operations: Reading, ingesting and describing datasets; de-identifying what the caller holds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from complai.app.core import ALL, GovernedRead, SessionCore
from complai.clock import as_utc, utc_iso
from complai.crypto.digest import digest, digest_text
from complai.deid.analyzer import TextAnalyzer
from complai.deid.operators import Anonymizer, Change
from complai.deid.tabular import Report, anonymize
from complai.errors import InvalidInput, PolicyDenied
from complai.events import TableDeidentified, TextDeidentified, TextDetokenized
from complai.vault.ingest import IngestConsents
from complai.vault.lifecycle import AlterResult, DropResult
from complai.vault.lifecycle import Progress as CheckProgress
from complai.vault.schema import DatasetSchema, DeidSpec, load_schema
from complai.vault.service import IngestProgress, IngestResult, SourceOptions

MAX_PAGE = 10_000
"""The most rows one page of a governed read holds."""

DeliverTable = Callable[[pd.DataFrame, Report], None]
"""Writes a de-identified table and its report (the CLI's output files) before the run is recorded."""
DeliverText = Callable[[list[tuple[str, list[Change]]]], None]
"""Writes de-identified texts before the run is recorded."""


class DataOps(SessionCore):
    def read(
        self, dataset: str, columns: list[str] | None = None, deidentify: DeidSpec | dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The dataset's rows this purpose may see, decrypted, after the de-identification the dataset
        requires for the purpose (and any the caller adds); the read is recorded in the ledger."""
        return self.read_governed(dataset, columns, deidentify).frame

    def read_governed(
        self, dataset: str, columns: list[str] | None = None, deidentify: DeidSpec | dict[str, Any] | None = None
    ) -> GovernedRead:
        """`read`, with what the read did: the de-identification applied (the achieved k among it) and
        the ledger entry that records the read."""
        self._check("read", dataset)
        return self._governed(dataset, columns, deidentify)

    def read_page(
        self, dataset: str, columns: list[str] | None = None, *, offset: int = 0, limit: int = 1000
    ) -> GovernedRead:
        """One page of `read`: rows offset..offset+limit of what the purpose may see, in the order `read`
        gives them, after the de-identification the dataset requires for the purpose (computed over every
        row, so a k holds over the whole read). The page is one recorded read of its own rows and subjects."""
        # the authorisation, the schema and the records in one read snapshot (the record of the read is
        # its own write)
        with self._svc.store.shared_reads():
            self._check("read", dataset)
            if offset < 0 or not 1 <= limit <= MAX_PAGE:
                raise InvalidInput(f"a page starts at offset 0 or more and holds 1 to {MAX_PAGE:,} rows")
            return self._governed(dataset, columns, window=(offset, limit))

    def ingest(
        self,
        dataset: str,
        data: pd.DataFrame | Path | str | list[dict[str, Any]],
        consents: pd.DataFrame | Path | str | None = None,
        *,
        mode: str = "insert",
        options: SourceOptions | None = None,
        progress: IngestProgress | None = None,
    ) -> IngestResult:
        """Encrypt and store rows (a CSV, JSON Lines or Parquet file read in chunks, a frame, or a list
        of mappings), with optional consents, all or nothing. `mode`: insert (refuse records already
        stored), append (skip them), upsert (supersede them; needs the dataset's record_key) or replace
        (the dataset's records replaced by the file's). `progress(stage, done, total)` is told as it goes.
        Needs `ingest` on the dataset; replace, which deletes every record the file does not bring back,
        also `admin` on it (as dropping it does). Consents may name only subjects the ingest creates
        unless the principal may record consents (`admin`, as grant_consent); refusals are recorded."""
        self._check("ingest", dataset)
        if mode == "replace":
            try:
                self._check("admin", dataset)
            except PolicyDenied:
                raise PolicyDenied(
                    f"{self.principal} may not ingest into {dataset!r} with mode replace for {self.purpose}: it "
                    "deletes the dataset's other records, which needs admin on the dataset (as dropping it does)"
                ) from None
        given = None
        if consents is not None:  # the right to record consents for any subject: what grant_consent checks
            given = IngestConsents(consents, any_subject=self._may(ALL, ("admin",), []))
        return self._svc.vault.ingest(
            dataset, data, self.principal, given, purpose=self.purpose, mode=mode, options=options, progress=progress
        )

    def create_dataset(self, schema: DatasetSchema) -> DatasetSchema:
        self._check("admin", schema.name)
        return self._svc.catalog.register(schema, actor=self.principal)

    def alter_dataset(
        self,
        name: str,
        schema: DatasetSchema | Path | str | dict[str, object],
        dry_run: bool = False,
        progress: CheckProgress | None = None,
    ) -> AlterResult:
        """Change a dataset's schema to a new version (a full schema: a YAML file, YAML text, a mapping or
        a DatasetSchema). Authorised as creating a dataset is, before the schema is read or checked
        against any record; then every stored record is checked against what the change narrows, and
        the change is refused with the number of records that do not fit. One ledger event; with
        `dry_run` the same checks and nothing written."""
        self._check("admin", name)
        spec = schema if isinstance(schema, DatasetSchema) else load_schema(schema, self._svc.taxonomy)
        return self._svc.vault.alter_dataset(name, spec, self.principal, dry_run, progress)

    def drop_dataset(self, name: str) -> DropResult:
        """Drop a dataset: every record deleted, every subject left without records anywhere crypto-shredded
        (as an erasure does), the name kept as a tombstone; one ledger event. Authorised as creating one."""
        self._check("admin", name)
        return self._svc.vault.drop_dataset(name, self.principal)

    def parse_schema(self, source: Path | str | dict[str, object]) -> DatasetSchema:
        """A dataset schema (a YAML file, YAML text or a mapping) checked against the workspace's
        taxonomy. Needs no authorisation: it reads nothing of the workspace but its (public) vocabulary,
        and changes nothing; what is done with the schema is authorised when it is done."""
        return load_schema(source, self._svc.taxonomy)

    def dataset_schema(self, name: str, action: str | None = None) -> DatasetSchema:
        """A dataset's declared schema. With `action` (read, ingest, ...), for principals the policy
        allows that action on the dataset for this purpose (the caller is about to take it); without,
        for those who may describe the dataset (describe_datasets). Authorised before the catalogue is
        asked, so a refusal says nothing about whether the dataset exists."""
        if action is None:
            self._check_may_describe(name)
        else:
            self._check(action, name)
        return self._svc.catalog.get(name).schema

    def dataset_versions(self, name: str) -> list[dict[str, Any]]:
        """Every schema version a dataset has had, oldest first (version, digest, time, fields, purposes,
        retention), for those who may describe it (describe_datasets); authorised before the catalogue
        is asked. Each version's text is checked against its stored digest (IntegrityError if edited)."""
        self._check_may_describe(name)
        self._svc.catalog.get(name)
        with self._svc.store.read() as conn:
            versions = self._svc.catalog.versions(conn, name)
        return [
            {
                "version": v.version,
                "schema_digest": v.digest,
                "created_at": utc_iso(as_utc(v.created_at)),
                "fields": [f.name for f in v.schema.fields],
                "purposes": dict(v.schema.purposes),
                "retention": v.schema.retention,
            }
            for v in versions.values()
        ]

    def describe_datasets(self, name: str | None = None) -> list[dict[str, Any]]:
        """Dataset declarations the principal may act on, for any purpose the dataset declares; exact
        record and subject counts only to those who may see exact data (a DP-only analyst gets none: a
        count is a data-dependent value). The policy is asked before the catalogue, so a refusal says
        nothing about whether a dataset exists."""
        catalog, vault = self._svc.catalog, self._svc.vault
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
            doc: dict[str, Any] = {
                **info.schema.model_dump(mode="json"),
                "created_at": info.created_at,
                "schema_version": info.version,
            }
            if self._may(n, self._EXACT, purposes):
                doc.update(vault.counts(n))
            out.append(doc)
        return out

    def deidentify_table(
        self,
        frame: pd.DataFrame,
        schema: DatasetSchema | str | None = None,
        deliver: DeliverTable | None = None,
        *,
        quasi: Sequence[str],
        k: int,
        sensitive: str | None = None,
        l: int | None = None,  # noqa: E741
        l_kind: str = "distinct",
        t: float | None = None,
        numeric: Sequence[str] | None = None,
        hierarchies: dict[str, dict[str, list[str]]] | None = None,
        suppress: float = 0.0,
        risk_threshold: float = 0.2,
        keep: Sequence[str] = (),
        direct_identifiers: str = "drop",
        pseudonymize: Callable[[str], str] | None = None,
    ) -> tuple[pd.DataFrame, Report]:
        """k-anonymise a table the caller holds (not vault data: no dataset policy applies) and record
        the run: parameters, achieved guarantees, digests of input and output. Direct identifiers (by
        `schema`, a schema or a dataset's name, for the columns it declares; by the scanner for the
        rest) are dropped, or pseudonymised with keyed pseudonyms of this principal and purpose (never
        the ones governed reads show: Keys.adhoc), unless kept by name. The parameters are
        deid.tabular.anonymize's. `deliver(table, report)` (writing the output) runs before the run is
        recorded: a failed delivery records nothing. Asks the policy nothing but, with a dataset's name,
        whether the principal may see that declaration (see deidentify_text)."""
        if isinstance(schema, str):
            self._check_may_describe(schema)
            schema = self._svc.catalog.get(schema).schema
        declared = {f.name: f.identifier for f in schema.fields} if schema is not None else None
        if pseudonymize is None:
            anonymizer = Anonymizer.adhoc(self._svc.deid_keys, self.principal, self.purpose)
            pseudonymize = lambda value: anonymizer.pseudonym("ID", value)  # noqa: E731
        out, report = anonymize(
            frame,
            quasi,
            k,
            sensitive=sensitive,
            l=l,
            l_kind=l_kind,
            t=t,
            numeric=numeric,
            hierarchies=hierarchies,
            suppress=suppress,
            risk_threshold=risk_threshold,
            schema=declared,
            keep=keep,
            direct_identifiers=direct_identifiers,
            pseudonymize=pseudonymize,
        )
        if deliver is not None:
            deliver(out, report)
        self.last_seq = self._svc.ledger.emit(
            None,
            TableDeidentified,
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
        return out, report

    def deidentify_text(
        self,
        texts: list[str],
        default: str = "replace",
        operators: dict[str, str] | None = None,
        regex_only: bool = False,
        subject: str = "",
        deliver: DeliverText | None = None,
    ) -> list[tuple[str, list[Change]]]:
        """Find and transform personal data in texts the caller holds; one event for the whole call.
        `deliver(results)` (writing the output) runs before the event is recorded: a failed delivery
        records nothing. The keyed operators use this principal's and purpose's ad-hoc keys (Keys.adhoc):
        hashes and date offsets stable across its calls, tokens alike within one call, none of them
        matching what a governed read shows. So the call asks the policy nothing: it reads no vault data,
        and its output links only to what the same principal made for the same purpose from what it
        held (tokens, only to what `detokenize`, an action of its own, reverses)."""
        anonymizer = Anonymizer.adhoc(self._svc.deid_keys, self.principal, self.purpose)
        found = TextAnalyzer(regex_only=regex_only).analyze_batch(texts)
        out = [anonymizer.anonymize(t, f, operators, default, subject) for t, f in zip(texts, found, strict=True)]
        counts = Counter(f.entity for fs in found for f in fs)
        if deliver is not None:
            deliver(out)
        self.last_seq = self._svc.ledger.emit(
            None,
            TextDeidentified,
            actor=self.principal,
            purpose=self.purpose,
            documents=len(texts),
            characters=sum(len(t) for t in texts),
            findings=dict(counts),
            operators={"default": default, **(operators or {})},
            input_digest=digest_text("\x00".join(texts)),
        )
        return out

    def detokenize(self, text: str) -> str:
        """Reverse tokenisation: an action the policy must allow; every use is recorded. A token opens
        only under the key of the domain it was made in (ad-hoc de-identification, with the nonce of
        the call that made it, or governed reads); anything else stays as it is."""
        self._check("detokenize")
        keys = self._svc.deid_keys
        restored, n = Anonymizer.adhoc(keys, self.principal, self.purpose).detokenize(text, Anonymizer(keys))
        self.last_seq = self._svc.ledger.emit(
            None,
            TextDetokenized,
            actor=self.principal,
            purpose=self.purpose,
            tokens=n,
            input_digest=digest_text(text),
        )
        return restored
