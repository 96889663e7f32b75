"""Reading user-supplied input: files, CSV tables and integers from the command line.

Every path a user names as input (a data or consents CSV, a schema, a spec, a text file) is read through
`read_input`: it must be a regular file (not a directory, a device or a FIFO, which would block or never
end) no larger than the limit, and every failure is one `InvalidInput` line. `read_csv_table` parses a
CSV strictly: every row has exactly the header's fields, and all the ragged rows of a file are reported
at once, with their line numbers.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import pandas as pd
import yaml

from complai.errors import InvalidInput

# Generous defaults: a spec or schema is small; a table may be large but must fit in memory anyway.
SPEC_MAX_BYTES = 16 * 1024 * 1024
TABLE_MAX_BYTES = 8 * 1024 * 1024 * 1024
# Most problems listed in one error message; the rest are counted.
MAX_REPORTED = 20
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_FIELD_LIMIT = 1 << 30


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_input(path: Path | str, what: str, max_bytes: int | None = None) -> BinaryIO:
    """A user-supplied input file opened for reading; InvalidInput unless it is a regular file (of at
    most `max_bytes`). Opened without blocking, so a FIFO is refused instead of waiting for a writer."""
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise InvalidInput(f"{what} {p} not found") from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} {p} is a directory, not a file") from None
    except PermissionError:
        raise InvalidInput(f"{what} {p} is not readable (permission denied)") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open {what} {p}: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{what} {p} is {_kind(st.st_mode)}, not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise InvalidInput(f"{what} {p} is larger than {max_bytes:,} bytes")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path: Path | str, what: str, max_bytes: int | None = SPEC_MAX_BYTES) -> bytes:
    """The bytes of a user-supplied input file; InvalidInput unless it is a readable regular file."""
    with open_input(path, what, max_bytes) as fh:
        try:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} {path}: {exc.strerror or type(exc).__name__}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidInput(f"{what} {path} is larger than {max_bytes:,} bytes")
    return data


def read_text_input(path: Path | str, what: str, max_bytes: int | None = SPEC_MAX_BYTES) -> str:
    """A user-supplied UTF-8 text file (a leading byte-order mark is dropped)."""
    data = read_input(path, what, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} {Path(path).name} is not UTF-8 text (byte {exc.start})") from None


def parse_yaml(text: str, what: str) -> Any:
    """YAML from a user's file (safe loader); InvalidInput for bad YAML and for nesting too deep to build
    (a RecursionError would otherwise end the command as an internal error)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"{what} is not valid YAML ({first})") from None
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply") from None


def json_object(data: bytes | str) -> dict[str, Any] | None:
    """A JSON object from bytes an outsider may have crafted (a file header), or None when it is not
    one: invalid JSON, another JSON type, or nesting too deep to parse."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def summarise(problems: list[str], total: int | None = None) -> str:
    """The first MAX_REPORTED problems joined on one line, and how many more there are."""
    total = len(problems) if total is None else total
    shown = "; ".join(problems[:MAX_REPORTED])
    more = total - min(len(problems), MAX_REPORTED)
    return shown + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class CsvTable:
    """A parsed CSV: its header, its rows (lists of strings, "" for an empty field) and each row's line."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int]


def csv_delimiter(text: str) -> str:
    """A CSV field delimiter given by a user: one character (`\\t` or `tab` for a tab), never a quote,
    a line break or a space (fields are read with leading spaces skipped)."""
    value = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(value) != 1 or value in '"\r\n ' or (not value.isprintable() and value != "\t"):
        raise InvalidInput(f"the CSV delimiter must be one character other than a quote or a line break, not {text!r}")
    return value


def text_encoding(name: str) -> str:
    """A text encoding a user named, as Python's codec name (UTF-8 read as utf-8-sig: a byte-order mark
    is dropped); InvalidInput if Python has no such codec or it does not decode text."""
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        raise InvalidInput(f"unknown text encoding {name!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise InvalidInput(f"{name!r} is not a text encoding")
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


class CsvStream:
    """Strict CSV read incrementally from a text stream: a header of distinct, non-empty names, then rows
    in chunks. Blank lines are skipped; every ragged row (a trailing comma, a missing field) is counted in
    `ragged_rows` and the first MAX_REPORTED named in `ragged` ("line N has K"), never shifted or filled
    in. Structural errors (a bad header, unparseable CSV, a decoding error) raise InvalidInput at once."""

    def __init__(self, stream: TextIO, what: str, name: str, delimiter: str = ",", encoding: str = "utf-8") -> None:
        if csv.field_size_limit() < _FIELD_LIMIT:  # long text fields are data, not an attack: the file is bounded
            csv.field_size_limit(_FIELD_LIMIT)
        self.what, self.name, self.encoding = what, name, encoding
        self._reader = csv.reader(stream, delimiter=delimiter, skipinitialspace=True, strict=True)
        self._start = 1
        self.ragged: list[tuple[int, int]] = []  # (line, fields it has)
        self.ragged_rows = 0
        self.header: list[str] = self._header()

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        reader = self._reader
        try:
            for record in reader:
                line, self._start = self._start, reader.line_num + 1
                yield line, record
        except csv.Error as exc:
            raise InvalidInput(
                f"{self.what} file {self.name} is not valid CSV (line {reader.line_num}: {exc})"
            ) from None
        except UnicodeDecodeError:
            raise InvalidInput(
                f"{self.what} file {self.name} is not {self.encoding} text (after line {reader.line_num})"
            ) from None

    def _header(self) -> list[str]:
        self._it = self._records()
        for line, record in self._it:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            header = [h.strip() for h in record]
            empty = [i + 1 for i, h in enumerate(header) if not h]
            if empty:
                raise InvalidInput(
                    f"{self.what} file {self.name}: line {line}: header column(s) {empty} have no name"
                    + (" (a trailing comma?)" if empty[-1] == len(header) else "")
                )
            dupes = sorted(h for h, n in Counter(header).items() if n > 1)
            if dupes:
                raise InvalidInput(
                    f"{self.what} file {self.name}: line {line}: column(s) {dupes} appear more than once"
                )
            return header
        raise InvalidInput(f"{self.what} file {self.name} is empty (no header row)")

    def chunks(self, size: int) -> Iterator[CsvTable]:
        """The rows after the header, at most `size` per chunk (the last may be shorter or empty)."""
        width = len(self.header)
        rows: list[list[str]] = []
        lines: list[int] = []
        for line, record in self._it:
            if not record or (len(record) == 1 and not record[0].strip() and width > 1):
                continue  # a blank line (in a one-column file, an empty field is a value)
            if len(record) != width:
                self.ragged_rows += 1
                if len(self.ragged) < MAX_REPORTED:
                    self.ragged.append((line, len(record)))
                continue
            rows.append(record)
            lines.append(line)
            if len(rows) >= size:
                yield CsvTable(self.header, rows, lines)
                rows, lines = [], []
        yield CsvTable(self.header, rows, lines)

    def ragged_message(self) -> str:
        """The one-line report of the ragged rows (call when `ragged_rows` is not 0)."""
        return (
            f"{self.what} file {self.name}: {self.ragged_rows} row(s) do not have the header's {len(self.header)} "
            "fields: " + summarise([f"line {line} has {n}" for line, n in self.ragged], self.ragged_rows)
        )


def parse_csv(data: bytes, what: str, name: str) -> CsvTable:
    """Strict CSV (`CsvStream`) from bytes in memory, all rows at once; every ragged row is reported, with
    its line number, in one InvalidInput."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} file {name} is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise InvalidInput(f"{what} file {name} is not valid CSV (it contains NUL bytes)")
    stream = CsvStream(io.StringIO(text, newline=""), what, name)
    rows: list[list[str]] = []
    lines: list[int] = []
    for chunk in stream.chunks(1 << 62):
        rows += chunk.rows
        lines += chunk.lines
    if stream.ragged_rows:
        raise InvalidInput(stream.ragged_message())
    return CsvTable(stream.header, rows, lines)


def bounded_int(value: int, what: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    """An integer taken from the user (a CLI option), checked against [lo, hi]."""
    if not lo <= value <= hi:
        raise InvalidInput(f"{what} must be between {lo} and {hi}, not {value}")
    return value


def read_table(path: Path | str, what: str, max_bytes: int | None = TABLE_MAX_BYTES) -> pd.DataFrame:
    """A user's CSV as a pandas DataFrame with inferred column types (for tables that are analysed, not
    stored), after the same strict structural check as `parse_csv`: ragged rows are refused, all at once."""
    data = read_input(path, f"{what} file", max_bytes)
    name = Path(path).name
    parse_csv(data, what, name)
    try:
        return pd.read_csv(io.BytesIO(data), skipinitialspace=True, index_col=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{what} file {name} is not valid CSV ({str(exc).splitlines()[0]})") from None
