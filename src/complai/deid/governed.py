"""De-identification applied to governed reads: what a dataset requires for a purpose, plus what the
caller asks for. Runs on the decrypted frame before it leaves the session."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from complai.deid.analyzer import TextAnalyzer
from complai.deid.operators import Anonymizer
from complai.deid.tabular import anonymize
from complai.vault.schema import DatasetSchema, DeidSpec


def dropped_identifiers(schema: DatasetSchema, spec: DeidSpec, columns: Iterable[str]) -> list[str]:
    """The direct identifiers among `columns` that `spec` drops: all but those it pseudonymises."""
    present = set(columns)
    return [c for c in schema.direct_identifiers() if c in present and c not in spec.pseudonymize]


def apply(
    frame: pd.DataFrame, schema: DatasetSchema, spec: DeidSpec, anonymizer: Anonymizer
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Returns the transformed frame and a summary of what was done (for the ledger)."""
    out = frame.copy()
    done: dict[str, Any] = {}
    for col in spec.pseudonymize:
        if col in out.columns:
            # one label for every column, so a value gets the same pseudonym in every dataset
            out[col] = [None if pd.isna(v) else anonymizer.pseudonym("ID", str(v)) for v in out[col]]
    if spec.pseudonymize:
        done["pseudonymized"] = [c for c in spec.pseudonymize if c in out.columns]
    if spec.drop_direct_identifiers:
        drop = dropped_identifiers(schema, spec, out.columns)
        out = out.drop(columns=drop)
        done["dropped"] = drop
    if spec.text:
        analyzer = TextAnalyzer()
        for col, op in spec.text.items():
            if col in out.columns:
                values = ["" if pd.isna(v) else str(v) for v in out[col]]
                found = analyzer.analyze_batch(values)
                out[col] = [anonymizer.anonymize(v, f, default=op)[0] for v, f in zip(values, found, strict=True)]
        done["text"] = dict(spec.text)
    if spec.k:
        quasi = [f.name for f in schema.fields if f.identifier == "quasi" and f.name in out.columns]
        numeric = [q for q in quasi if schema.field(q).type in ("integer", "float")]
        if quasi and len(out) >= spec.k:
            # the schema says which columns are direct identifiers; the ones this purpose pseudonymises
            # were asked for by name and stay (named in the summary), any other is dropped
            declared = {f.name: f.identifier for f in schema.fields}
            keep = [c for c in spec.pseudonymize if c in out.columns]
            out, report = anonymize(out, quasi, spec.k, numeric=numeric, schema=declared, keep=keep)
            done["k_anonymity"] = {
                "k": spec.k,
                "achieved_k": report.achieved["k"],
                "quasi_identifiers": quasi,
                "direct_identifiers": report.direct_identifiers,
            }
        elif quasi:
            out = out.iloc[0:0]
            done["k_anonymity"] = {"k": spec.k, "suppressed_all_rows": True}
    return out, done
