"""A page of records as the service sends it: JSON rows and CSV written by polars from Arrow columns.

A governed read hands the service a pandas frame; encoding it with pandas' own writers converted every
categorical and Arrow-backed text column to Python objects first, which cost a 1,000-row page about as
much as reading it from opened records. Here each column becomes an Arrow array without copying (a
categorical becomes a dictionary array of its codes), and polars writes the JSON or CSV in Rust.

Every page, whichever way it is written, follows the same rules: a timestamp is RFC 3339 in UTC with
microseconds (`2020-01-01T00:00:00.000000Z`, as the store writes it), a date `YYYY-MM-DD`; a float
keeps every digit it has; a missing value or a NaN is `null` in JSON and empty in CSV; JSON, which has
no infinity, writes one as `null` too (CSV as `inf`, `-inf`). A column that
Arrow cannot type (an object column of mixed values, as a generalised quasi-identifier can be), or
types only as an extension (pandas' intervals), is written as text, each value as Python's `str`
writes it; pandas' NA and NaT in it are missing values, not their names.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the fraction at the column's unit
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S"


def _missing(v: Any) -> bool:
    """None, a NaN of any width, or pandas' NA and NaT (in an object column, str would name them)."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float | np.floating | np.datetime64) and v != v)


def _text(values: Any) -> pa.Array:
    """Mixed values as text (a missing value stays missing)."""
    return pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())


def _timestamps_as_text(arr: pa.Array) -> pa.Array:
    typ = arr.type
    assert isinstance(typ, pa.TimestampType)
    if typ.unit != "us":  # one width of fraction for every column, whatever its unit
        arr = pc.cast(arr, pa.timestamp("us", tz=typ.tz), safe=False)
    if typ.tz is None:
        return pc.strftime(arr, format=_ISO_NAIVE)
    return pc.strftime(pc.cast(arr, pa.timestamp("us", tz="UTC")), format=_ISO_UTC)


def _column(values: Any, finite: bool) -> pa.Array:
    if isinstance(values, pd.Categorical):
        codes = values.codes
        cats = values.categories.array
        try:
            dictionary = pa.array(cats)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            dictionary = _text(cats)
        arr: pa.Array = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), dictionary)
        if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
            arr = arr.dictionary_decode()
    else:
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return _text(values)
    typ = arr.type
    if isinstance(typ, pa.ExtensionType):  # pandas' intervals and periods: polars writes no CSV of them
        return _text(values)
    if pa.types.is_timestamp(typ):
        return _timestamps_as_text(arr)
    if pa.types.is_date(typ):
        return pc.strftime(arr, format="%Y-%m-%d")
    if finite and pa.types.is_floating(typ):  # NaN and infinities: missing, as JSON has neither
        return pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, typ))
    if pa.types.is_time(typ) or pa.types.is_duration(typ) or pa.types.is_decimal(typ) or pa.types.is_binary(typ):
        return _text(values)
    if pa.types.is_nested(typ) or pa.types.is_null(typ):
        return _text(values) if not pa.types.is_null(typ) else pa.nulls(len(arr), pa.string())
    return arr


def arrow_page(frame: pd.DataFrame, *, finite: bool) -> pa.Table:
    """The frame's columns as Arrow arrays, typed for writing (timestamps and dates as their text);
    `finite`: a NaN or an infinity is missing."""
    names, arrays = [], []
    for name, series in frame.items():  # by position (iloc) costs several times more a column
        names.append(str(name))
        numeric = isinstance(series.dtype, np.dtype) and series.dtype.kind in "iufb"
        arrays.append(_column(series.to_numpy() if numeric else series.array, finite))
    return pa.Table.from_arrays(arrays, names=names)


def json_rows(frame: pd.DataFrame) -> bytes:
    """The rows as a JSON array of objects, one key a column, in the frame's column order."""
    import polars as pl  # heavy: polars (0.3 s), loaded by the service at start-up

    if not len(frame):
        return b"[]"
    out = io.BytesIO()
    pl.from_arrow(arrow_page(frame, finite=True)).write_json(out)  # type: ignore[union-attr]
    return out.getvalue()


# A text a spreadsheet would run as a formula (OWASP, CSV injection): one that starts with =, +, -, @ or
# their fullwidth forms, after any leading spaces, tabs, line breaks or NULs (spreadsheets skip them), or
# that starts with a tab, a line break or a NUL at all. RE2 syntax (Arrow's).
FORMULA = r"^(?:[\t\r\n\x00]|[ \t\r\n\x00]*[=+\-@\x{FF1D}\x{FF0B}\x{FF0D}\x{FF20}])"


def spreadsheet_safe(table: pa.Table) -> pa.Table:
    """Every text that a spreadsheet would read as a formula (FORMULA) prefixed with an apostrophe."""
    columns = []
    for col in table.columns:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            hit = pc.fill_null(pc.match_substring_regex(arr, FORMULA), False)
            quote, empty = pa.scalar("'", arr.type), pa.scalar("", arr.type)
            arr = pc.if_else(hit, pc.binary_join_element_wise(quote, arr, empty), arr)
        columns.append(arr)
    return pa.Table.from_arrays(columns, names=table.column_names)


def csv_text(frame: pd.DataFrame) -> bytes:
    """The rows as CSV: a header line, every text (and the header) quoted, numbers bare, a missing value
    empty; a text that a spreadsheet would run as a formula (FORMULA) starts with an apostrophe."""
    import polars as pl  # heavy: as above

    out = io.BytesIO()
    table = spreadsheet_safe(arrow_page(frame, finite=False))
    pl.from_arrow(table).write_csv(out, quote_style="non_numeric")  # type: ignore[union-attr]
    return out.getvalue()
