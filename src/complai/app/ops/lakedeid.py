"""Session operations: de-identification on Spark of Parquet data the caller holds: a text column
de-identified where the rows are, and the k, l and t a table achieves. As `deidentify_text` and
`deidentify_table` (app/ops/data.py), they read no vault data and ask the policy nothing; the keyed
operators use the principal's and purpose's ad-hoc keys, and each call records one event."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from complai.app.core import SessionCore
from complai.crypto.digest import digest_text
from complai.deid.operators import NONCE
from complai.deid.spark import FINDINGS, anonymity, check_free, check_text_column, col, deidentify_column
from complai.deid.tabular import check_measured
from complai.errors import ComplaiError, InvalidInput
from complai.events import AnonymityChecked, TextColumnDeidentified
from complai.files import check_dataset_dir, staged_dataset_dir, workspace_protected

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_LENGTH = "__complai_length"  # each row's text length before de-identification, beside the rows
L_KINDS = ("distinct", "entropy")
MAX_COUNT = 2**53 - 1  # the largest k or l a threshold may ask: the ledger records it as an exact JSON number


@dataclass(frozen=True)
class ColumnDeidentified:
    """What `deidentify_text_column` wrote (the Parquet folder `out`) and recorded."""

    out: Path
    column: str
    rows: int
    characters: int
    findings: dict[str, int]
    ledger_seq: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "column": self.column,
            "rows": self.rows,
            "characters": self.characters,
            "findings": dict(self.findings),
            "ledger_seq": self.ledger_seq,
        }


@dataclass(frozen=True)
class AnonymityCheck:
    """What a table achieves as it is (`figures`: rows, classes, k and, with a sensitive column,
    l_distinct, l_entropy and t), the thresholds asked (`asked`: k, l, l_kind, t) and, per threshold
    asked, whether the table meets it (`met`)."""

    figures: dict[str, Any]
    asked: dict[str, Any]
    met: dict[str, bool]
    ledger_seq: int

    @property
    def all_met(self) -> bool:
        """Every threshold asked is met (true when none was asked)."""
        return all(self.met.values())

    def as_dict(self) -> dict[str, Any]:
        return {**self.figures, "asked": dict(self.asked), "met": dict(self.met), "all_met": self.all_met}


def _open_parquet(spark: SparkSession, source: Path) -> DataFrame:
    """The Parquet file or folder `source` as a lazy frame (its schema read: no row); InvalidInput when
    it is missing or not Parquet."""
    if not source.exists():
        raise InvalidInput(f"source {source} does not exist")
    if not (source.is_file() or source.is_dir()):
        raise InvalidInput(f"source {source} is not a file or a folder")
    try:
        frame = spark.read.parquet(str(source.resolve()))
        columns = frame.columns  # the schema, read now: a file that is not Parquet fails here
    except Exception as exc:  # AnalysisException and friends; the message may quote the data
        raise InvalidInput(f"cannot read {source} as Parquet ({type(exc).__name__})") from None
    if not columns:
        raise InvalidInput(f"source {source} has no columns")
    return frame


def _input_digest(frame: DataFrame, source: Path) -> str:
    """The input's identity without reading its rows: its physical schema (Spark's JSON) and its data
    files' names (relative to the source) and sizes."""
    root = source.resolve()
    files = []
    for uri in frame.inputFiles():
        path = Path(unquote(urlparse(uri).path))
        name = path.relative_to(root).as_posix() if root in path.parents else path.name
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        files.append([name, size])
    body = {"schema": json.loads(frame.schema.json()), "files": sorted(files)}
    return digest_text(json.dumps(body, sort_keys=True, separators=(",", ":")))


def _apart(source: Path, out: Path) -> None:
    """Refuse an output that is the input, inside it, or holds it."""
    src, dest = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    if src == dest or src in dest.parents or dest in src.parents:
        raise InvalidInput(f"the output {out} would overlap its input {source}; choose another path")


def _count(name: str, value: object) -> None:
    """InvalidInput unless `value` is a whole number from 1 to MAX_COUNT (a k or an l asked)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise InvalidInput(f"{name} is a whole number, at least 1 and at most {MAX_COUNT}")


def _spark_failed(what: str, exc: Exception) -> ComplaiError:
    """A Spark failure as one line (its message may quote a value of the data, never shown)."""
    return ComplaiError(f"{what} failed in Spark ({type(exc).__name__}); nothing was written or recorded")


class LakeDeidOps(SessionCore):
    def deidentify_text_column(
        self,
        source: Path | str,
        column: str,
        out: Path | str,
        *,
        default: str = "replace",
        operators: dict[str, str] | None = None,
        regex_only: bool = False,
        entities: Sequence[str] | None = None,
        force: bool = False,
    ) -> ColumnDeidentified:
        """De-identify the text column `column` of a Parquet file or folder the caller holds on the
        workspace's Spark (`deid.spark.deidentify_column`: the analyzer and operators of `deidentify_text`,
        under this principal's and purpose's ad-hoc keys, tokens bound to one nonce drawn for the call)
        and write the rows, every other column as it was, as Parquet to the new folder `out` (files 0600,
        folders 0700; an existing `out` only with `force`, a link never). The folder appears whole once the
        job succeeds, then one `deid.text_column` event records rows, characters and findings per entity
        type (a folder that cannot be recorded is taken back out, and a replaced output put back); a
        refusal or a failed job writes and records nothing. Asks the policy nothing (see
        `deidentify_text`): it reads no vault data."""
        src, dest = Path(source), Path(out)
        forbidden = workspace_protected(self._svc.path)
        check_dataset_dir(dest, force=force, forbidden=forbidden)
        _apart(src, dest)
        spark = self._svc.spark.session()
        frame = _open_parquet(spark, src)
        check_text_column(frame, column)
        check_free(frame, _LENGTH)
        from pyspark.sql import functions as F  # heavy: pyspark

        keys = self._svc.deid_keys.adhoc(self.principal, self.purpose)
        try:  # the plan (no job yet): a Spark error here is one line too
            measured = frame.withColumn(_LENGTH, F.length(col(column)))
            deid = deidentify_column(
                measured,
                column,
                keys,
                nonce=os.urandom(NONCE),
                default=default,
                operators=operators,
                regex_only=regex_only,
                entities=entities,
            )
            identity = _input_digest(frame, src)
        except ComplaiError:
            raise
        except Exception as exc:
            raise _spark_failed(f"de-identifying column {column}", exc) from None
        done: dict[str, Any] = {}
        recording: list[bool] = []

        def record() -> None:
            """The event, once the folder is in place: if it cannot be recorded, the folder is taken
            back out and a replaced output restored (staged_dataset_dir's `then`)."""
            recording.append(True)
            done["seq"] = self.last_seq = self._svc.ledger.emit(
                None,
                TextColumnDeidentified,
                actor=self.principal,
                purpose=self.purpose,
                column=column,
                operators={"default": default, **(operators or {})},
                input_digest=identity,
                **done,
            )

        try:
            with staged_dataset_dir(dest, force=force, forbidden=forbidden, then=record) as target:
                deid.persist()  # one analysis per row: the write and the counts read the same result
                try:
                    deid.drop(FINDINGS, _LENGTH).write.parquet(str(target))
                    totals = deid.agg(F.count("*").alias("rows"), F.sum(_LENGTH).alias("chars")).first()
                    per_entity = deid.select(F.explode(FINDINGS)).groupBy("key").agg(F.sum("value")).collect()
                finally:
                    deid.unpersist()
                done["rows"] = int(totals["rows"]) if totals is not None else 0
                done["characters"] = int(totals["chars"] or 0) if totals is not None else 0
                done["findings"] = {str(r[0]): int(r[1]) for r in sorted(per_entity, key=lambda r: str(r[0]))}
        except ComplaiError:
            raise
        except Exception as exc:
            if recording:  # the ledger's own failure, not Spark's: as it is
                raise
            raise _spark_failed(f"de-identifying column {column}", exc) from None
        return ColumnDeidentified(dest, column, done["rows"], done["characters"], done["findings"], done["seq"])

    def check_anonymity(
        self,
        source: Path | str,
        quasi: Sequence[str],
        sensitive: str | None = None,
        ordered: bool = False,
        k: int | None = None,
        l: int | None = None,  # noqa: E741
        t: float | None = None,
        l_kind: str = "distinct",
    ) -> AnonymityCheck:
        """Measure on the workspace's Spark what a Parquet file or folder the caller holds achieves as it
        is (`deid.spark.anonymity`: k, and with `sensitive` l distinct and entropy and t, `ordered`
        along the sensitive values' order) and, for each threshold given, whether it is met: k and l
        (`l_kind` distinct or entropy) at least, t at most. A threshold not met is a result, not an error.
        One `deid.anonymity_checked` event; a refusal (before any job over the rows) records nothing.
        Asks the policy nothing (see `deidentify_table`): it reads no vault data."""
        quasi = list(quasi)
        if k is not None:
            _count("k", k)
        if l is not None:
            _count("l", l)
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0):
            raise InvalidInput("t is a number between 0 and 1")
        if l_kind not in L_KINDS:
            raise InvalidInput(f"l_kind is one of {', '.join(L_KINDS)}")
        if (l is not None or t is not None or ordered) and sensitive is None:
            raise InvalidInput("l, t and ordered measure a sensitive column: name it")
        src = Path(source)
        spark = self._svc.spark.session()
        frame = _open_parquet(spark, src)
        check_measured(frame.columns, quasi, sensitive)
        identity = _input_digest(frame, src)
        try:
            figures = anonymity(frame, quasi, sensitive, ordered=ordered)
        except ComplaiError:
            raise
        except Exception as exc:
            raise _spark_failed("measuring the table", exc) from None
        asked: dict[str, Any] = {}
        met: dict[str, bool] = {}
        if k is not None:
            asked["k"], met["k"] = k, figures["k"] >= k
        if l is not None:
            asked["l"], asked["l_kind"] = l, l_kind
            met["l"] = figures[f"l_{l_kind}"] >= l
        if t is not None:
            asked["t"], met["t"] = t, figures["t"] <= t
        self.last_seq = self._svc.ledger.emit(
            None,
            AnonymityChecked,
            actor=self.principal,
            purpose=self.purpose,
            rows=figures["rows"],
            classes=figures["classes"],
            quasi_identifiers=quasi,
            sensitive=sensitive,
            ordered=ordered,
            k=figures["k"],
            l_distinct=figures.get("l_distinct"),
            l_entropy=figures.get("l_entropy"),
            t=figures.get("t"),
            k_asked=k,
            l_asked=l,
            l_kind=l_kind if l is not None else None,
            t_asked=t,
            met=all(met.values()),
            input_digest=identity,
        )
        return AnonymityCheck(figures, asked, met, self.last_seq)
