"""Session operations: Reading, ingesting and describing datasets; de-identifying what the caller holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from complai.app.core import SessionCore
from complai.vault.schema import DatasetSchema, DeidSpec


class DataOps(SessionCore):
    def read(
        self, dataset: str, columns: list[str] | None = None, deidentify: DeidSpec | dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The dataset's rows this purpose may see, decrypted, after the de-identification the dataset
        requires for the purpose (and any the caller adds); the read is recorded in the ledger."""
        self._check("read", dataset)
        return self._governed(dataset, columns, deidentify)[0]

    def ingest(self, dataset: str, data: pd.DataFrame | Path | str | list[dict[str, Any]], consents: Any = None) -> Any:
        self._check("ingest", dataset)
        return self._svc.vault.ingest(dataset, data, self.principal, consents, purpose=self.purpose)

    def create_dataset(self, schema: Any) -> Any:
        self._check("admin", schema.name)
        return self._svc.catalog.register(schema, actor=self.principal)

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
            doc: dict[str, Any] = {**info.schema.model_dump(mode="json"), "created_at": info.created_at}
            if self._may(n, self._EXACT, purposes):
                doc.update(vault.counts(n))
            out.append(doc)
        return out

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
        from complai.crypto.digest import digest
        from complai.deid.operators import Anonymizer
        from complai.deid.tabular import anonymize
        from complai.events import TableDeidentified

        if isinstance(schema, str):
            self._check_may_describe(schema)
            schema = self._svc.catalog.get(schema).schema
        declared = {f.name: f.identifier for f in schema.fields} if schema is not None else None
        anonymizer = Anonymizer(self._svc.deid_keys)
        kw.setdefault("pseudonymize", lambda value: anonymizer.pseudonym("ID", value))
        out, report = anonymize(frame, schema=declared, **kw)
        if deliver is not None:
            deliver(out, report)
        self.last_seq = self._svc.ledger.record(
            TableDeidentified(
                time=self._svc.clock.now(),
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

        from complai.crypto.digest import digest
        from complai.deid.analyzer import TextAnalyzer
        from complai.deid.operators import Anonymizer
        from complai.events import TextDeidentified

        anonymizer = Anonymizer(self._svc.deid_keys)
        found = TextAnalyzer(regex_only=regex_only).analyze_batch(texts)
        out = [anonymizer.anonymize(t, f, operators, default, subject) for t, f in zip(texts, found, strict=True)]
        counts = Counter(f.entity for fs in found for f in fs)
        if deliver is not None:
            deliver(out)
        self.last_seq = self._svc.ledger.record(
            TextDeidentified(
                time=self._svc.clock.now(),
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
        from complai.crypto.digest import digest
        from complai.deid.operators import Anonymizer
        from complai.events import TextDetokenized

        self._check("detokenize")
        restored, n = Anonymizer(self._svc.deid_keys).detokenize(text)
        self.last_seq = self._svc.ledger.record(
            TextDetokenized(
                time=self._svc.clock.now(),
                actor=self.principal,
                purpose=self.purpose,
                tokens=n,
                input_digest=digest(text.encode()),
            )
        )
        return restored
