"""Data files to ingest, read in chunks: CSV (delimiter, encoding), JSON Lines and Parquet.

A `Source` keeps one open file (a regular file, through complai.inputs) and reads it from the start on
each pass, `chunk_rows` rows at a time, so memory holds one chunk whatever the file's size. Each pass
hashes the bytes it read (the ingest's source digest; a file that changes between passes is refused).
Rows a reader cannot make into a row (a ragged CSV row, a line that is not a JSON object) are reported
by line; values are checked against the schema by the ingest.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pandas as pd

from complai.errors import InvalidInput
from complai.inputs import MAX_REPORTED, TABLE_MAX_BYTES, CsvStream, csv_delimiter, open_input, summarise, text_encoding

Format = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
CHUNK_ROWS = 50_000
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True)
class SourceOptions:
    """How to read a data file. `mapping` renames the file's columns (source name -> field name);
    `format` None: by the file's extension (CSV when it says nothing)."""

    format: Format | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    mapping: Mapping[str, str] = field(default_factory=dict)
    chunk_rows: int = CHUNK_ROWS


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """`source=field` pairs from the command line as a mapping; InvalidInput for a malformed pair, a
    column mapped twice, or two columns mapped to one field."""
    out: dict[str, str] = {}
    for item in items:
        source, sep, target = item.partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target:
            raise InvalidInput(f"--map takes source=field, not {item!r}")
        if source in out:
            raise InvalidInput(f"--map names column {source!r} twice")
        out[source] = target
    targets = list(out.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise InvalidInput(f"--map maps several columns to field(s) {twice}")
    return out


class RowProblems:
    """Problems with rows of one file, from every chunk: the first MAX_REPORTED by position (line or
    row number) kept, the rest counted, so a file with many bad rows costs no more memory than a few."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []
        self.count = 0

    def add(self, position: int, text: str) -> None:
        self.count += 1
        self.items.append((position, text))
        if len(self.items) > 4 * MAX_REPORTED:
            self.items = sorted(self.items)[:MAX_REPORTED]

    def extend(self, items: Sequence[tuple[int, str]], count: int) -> None:
        """Problems counted elsewhere: `items` the reported ones, `count` all of them."""
        for position, text in items:
            self.add(position, text)
        self.count += count - len(items)

    def texts(self) -> list[str]:
        return [text for _, text in sorted(self.items)[:MAX_REPORTED]]


@dataclass
class Chunk:
    """Up to `chunk_rows` rows of a file as a frame of the file's values (columns mapped to field
    names), with each row's line (CSV, JSON Lines) or row number (Parquet, frames) in `lines`."""

    frame: pd.DataFrame
    lines: list[int]


class _Tap(io.RawIOBase):
    """A binary file read through: hashes what is read and counts it (a pass's digest and progress)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.hash, self.position = fh, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.fh.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.hash.update(data)
        self.position += n
        return n


class Source:
    """A data file read in chunks, one pass at a time (`chunks()`); `digest` is the SHA-256 of the
    bytes the last complete pass read, `position` the bytes read so far in the current pass."""

    def __init__(self, path: Path | str, options: SourceOptions, fields: Sequence[str], what: str = "data") -> None:
        self.path, self.options, self.what = Path(path), options, what
        self.name = self.path.name
        self.format: Format = options.format or _EXTENSIONS.get(self.path.suffix.lower(), "csv")
        if self.format not in FORMATS:
            raise InvalidInput(f"unknown data format {self.format!r} (one of {', '.join(FORMATS)})")
        if options.chunk_rows < 1:
            raise InvalidInput("the chunk size must be at least one row")
        self.delimiter = csv_delimiter(options.delimiter)
        self.encoding = text_encoding(options.encoding)
        self.fields = list(fields)
        self.problems = RowProblems()
        self.fh = open_input(self.path, f"{what} file", TABLE_MAX_BYTES)
        self.size = self.fh.seek(0, io.SEEK_END)
        self.position = 0
        self.digest: str | None = None
        self.hash = hashlib.sha256()
        self.rows = 0
        self.ragged_message: str | None = None  # a CSV's ragged rows, when they are its only problem

    @property
    def where(self) -> str:
        """How rows are located in this file's messages."""
        return "row" if self.format == "parquet" else "line"

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chunks(self) -> Iterator[Chunk]:
        """One pass over the file from its start. Rows the reader cannot read go to `problems` (each
        pass starts them afresh); InvalidInput for what makes the whole file unreadable."""
        self.fh.seek(0)
        self.problems, self.rows, self.position = RowProblems(), 0, 0
        self.ragged_message = None
        tap = _Tap(self.fh)
        if self.format == "parquet":
            passes = self._parquet(tap)
        else:
            text = io.TextIOWrapper(io.BufferedReader(tap, 1 << 16), encoding=self.encoding, newline="")
            passes = self._csv(text, tap) if self.format == "csv" else self._jsonl(text, tap)
        for chunk in passes:
            self.rows += len(chunk.lines)
            yield chunk
        self.hash = tap.hash
        self.digest = "sha256:" + tap.hash.hexdigest()

    def _mapped(self, header: list[str]) -> list[str]:
        mapping = self.options.mapping
        missing = [s for s in mapping if s not in header]
        if missing:
            raise InvalidInput(f"{self.what} file {self.name} has no column(s) {missing} to map")
        names = [mapping.get(h, h) for h in header]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidInput(f"{self.what} file {self.name}: after mapping, column(s) {twice} appear twice")
        return names

    def _csv(self, text: io.TextIOWrapper, tap: _Tap) -> Iterator[Chunk]:
        stream = CsvStream(text, self.what, self.name, self.delimiter, self.options.encoding)
        header = self._mapped(stream.header)
        if len(header) == 1 and self.delimiter not in header[0]:
            for other in (";", "\t", "|"):
                if other in header[0] and header[0] not in self.fields:
                    raise InvalidInput(
                        f"{self.what} file {self.name}: the header is one column {header[0]!r}; "
                        f"is the file {other!r}-delimited? (--delimiter {other!r})"
                    )
        for table in stream.chunks(self.options.chunk_rows):
            frame = pd.DataFrame(table.rows, columns=header, dtype=object)
            for column in header:
                empty = (frame[column] == "").to_numpy(dtype=bool)
                if empty.any():
                    frame.loc[empty, column] = None
            self.position = tap.position
            yield Chunk(frame, table.lines)
        width = len(header)
        if stream.ragged_rows:
            self.ragged_message = stream.ragged_message()
        self.problems.extend(
            [(line, f"line {line}: {n} fields, where the header has {width}") for line, n in stream.ragged],
            stream.ragged_rows,
        )

    def _jsonl(self, text: io.TextIOWrapper, tap: _Tap) -> Iterator[Chunk]:
        mapping, known = self.options.mapping, set(self.fields)
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        number = 0
        try:
            for raw in text:
                number += 1
                if not raw.strip():
                    continue
                problem = None
                try:
                    obj = json.loads(raw)
                except (ValueError, RecursionError):
                    problem = "is not valid JSON"
                else:
                    if not isinstance(obj, dict):
                        problem = "is not a JSON object"
                    else:
                        obj = {mapping.get(k, k): v for k, v in obj.items()}
                        unknown = sorted(k for k in obj if k not in known)
                        nested = sorted(k for k, v in obj.items() if isinstance(v, dict | list))
                        if unknown:
                            problem = f"has unknown field(s) {unknown}"
                        elif nested:
                            problem = f"has field(s) {nested} holding an object or a list, not a value"
                if problem is not None:
                    self.problems.add(number, f"line {number}: {problem}")
                    continue
                rows.append(obj)
                lines.append(number)
                if len(rows) >= self.options.chunk_rows:
                    self.position = tap.position
                    yield Chunk(pd.DataFrame.from_records(rows, columns=self.fields).astype(object), lines)
                    rows, lines = [], []
        except UnicodeDecodeError:
            raise InvalidInput(
                f"{self.what} file {self.name} is not {self.options.encoding} text (after line {number})"
            ) from None
        self.position = tap.position
        yield Chunk(pd.DataFrame.from_records(rows, columns=self.fields).astype(object), lines)

    def _parquet(self, tap: _Tap) -> Iterator[Chunk]:
        # heavy: pyarrow loads only for a Parquet file, not with every command
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # heavy: as above

        while tap.read(1 << 20):  # the digest of the bytes, in one sequential read
            pass
        self.fh.seek(0)
        try:
            reader = pq.ParquetFile(self.fh)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidInput(f"{self.what} file {self.name} is not a Parquet file ({_first(exc)})") from None
        schema = reader.schema_arrow
        header = self._mapped(list(schema.names))
        nested = [n for n, t in zip(header, schema.types, strict=True) if pa.types.is_nested(t)]
        if nested:
            raise InvalidInput(f"{self.what} file {self.name}: column(s) {nested} hold lists or structs, not values")
        total = max(1, reader.metadata.num_rows)
        done = 0
        try:
            for batch in reader.iter_batches(batch_size=self.options.chunk_rows):
                data = {name: batch.column(i).to_pylist() for i, name in enumerate(header)}
                frame = pd.DataFrame(data, columns=header, dtype=object)
                lines = list(range(done + 1, done + batch.num_rows + 1))
                done += batch.num_rows
                self.position = self.size * done // total
                yield Chunk(frame, lines)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidInput(f"{self.what} file {self.name} cannot be read ({_first(exc)})") from None
        if done == 0:
            yield Chunk(pd.DataFrame(columns=header, dtype=object), [])


class FrameSource:
    """Rows given in memory (a DataFrame or a list of mappings), read in chunks like a file; rows are
    located by number and the digest binds the frame's content."""

    format = "frame"
    where = "row"
    what = "data"

    def __init__(self, frame: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> None:
        self.frame, self.chunk_rows = frame, max(1, chunk_rows)
        self.name = "frame"
        self.size = len(frame)
        self.position = 0
        self.problems = RowProblems()
        self.digest: str | None = None
        self.hash = hashlib.sha256()
        self.rows = 0

    def chunks(self) -> Iterator[Chunk]:
        h = hashlib.sha256()
        self.position, self.rows = 0, 0
        n = len(self.frame)
        for start in range(0, max(n, 1), self.chunk_rows):
            part = self.frame.iloc[start : start + self.chunk_rows]
            h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
            self.position = min(n, start + self.chunk_rows)
            self.rows += len(part)
            yield Chunk(part.reset_index(drop=True), list(range(start + 1, start + len(part) + 1)))
        self.hash = h
        self.digest = "sha256:" + h.hexdigest()

    def close(self) -> None:
        return None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def problems_message(source: Source | FrameSource, values: RowProblems) -> str:
    """One line for every row problem of a pass: rows the reader could not read and bad values, the
    first MAX_REPORTED by position, then a count."""
    unread = source.problems
    if not values.count and isinstance(source, Source) and source.ragged_message is not None:
        return source.ragged_message
    if not values.count and unread.count == 1:
        return f"{source.what} file {source.name}: {unread.texts()[0]}"
    if not unread.count and values.count == 1:
        return values.texts()[0]
    if not unread.count:
        return f"{values.count} invalid values: " + summarise(values.texts(), values.count)
    merged = RowProblems()
    merged.extend(unread.items, unread.count)
    merged.extend(values.items, values.count)
    parts = [f"{unread.count} unreadable row(s)"] + ([f"{values.count} invalid values"] if values.count else [])
    return f"{source.what} file {source.name}: {' and '.join(parts)}: " + summarise(merged.texts(), merged.count)
