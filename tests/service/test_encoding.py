"""A page's JSON and CSV as the service writes them (complai.service.encoding), value by value."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd

from complai.service.encoding import csv_text, json_rows


def frame() -> pd.DataFrame:
    """One column of every kind a governed read's frame holds, with missing values in each."""
    when = pd.Series(["2020-01-01", None, "2021-05-06T07:08:09.123456+02:00"], dtype="object")
    return pd.DataFrame(
        {
            "id": pd.array(["A1", None, "A3"], dtype="string"),
            "n": np.array([1, 2, -3], dtype="int64"),
            "maybe_n": pd.array([1, None, 3], dtype="Int64"),
            "x": np.array([0.1, np.nan, 1 / 3]),
            "big": np.array([np.inf, -np.inf, 1e300]),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "kind": pd.Categorical(["a", None, '=b"q'], categories=["a", '=b"q', "unused"]),
            "at": pd.to_datetime(when, utc=True, format="ISO8601").array,
            "note": pd.array(["plain", "-1+2", "é\nline"], dtype="string"),
            "mixed": np.array([30, "30-39", None], dtype=object),
        }
    )


def test_json_rows_value_by_value() -> None:
    rows = json.loads(json_rows(frame()))
    assert rows == [
        {
            "id": "A1", "n": 1, "maybe_n": 1, "x": 0.1, "big": None, "flag": True, "kind": "a",
            "at": "2020-01-01T00:00:00.000000Z", "note": "plain", "mixed": "30",
        },
        {
            "id": None, "n": 2, "maybe_n": None, "x": None, "big": None, "flag": None, "kind": None,
            "at": None, "note": "-1+2", "mixed": "30-39",
        },
        {
            "id": "A3", "n": -3, "maybe_n": 3, "x": 1 / 3, "big": 1e300, "flag": False, "kind": '=b"q',
            "at": "2021-05-06T05:08:09.123456Z", "note": "é\nline", "mixed": None,
        },
    ]  # fmt: skip
    # the keys in the frame's column order, and a float with all its digits (pandas wrote 10)
    text = json_rows(frame()).decode()
    assert text.index('"id"') < text.index('"n"') < text.index('"mixed"')
    assert "0.3333333333333333" in text


def test_json_rows_of_no_rows_is_an_empty_array() -> None:
    assert json.loads(json_rows(frame().iloc[:0])) == []


def test_csv_quotes_text_keeps_numbers_bare_and_neutralises_formulas() -> None:
    text = csv_text(frame()).decode()
    lines = text.split("\n")
    assert lines[0] == '"id","n","maybe_n","x","big","flag","kind","at","note","mixed"'
    assert lines[1] == '"A1",1,1,0.1,inf,"true","a","2020-01-01T00:00:00.000000Z","plain","30"'
    assert lines[2] == ',2,,,-inf,,,,"\'-1+2","30-39"'
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["kind"] for r in rows] == ["a", "", "'=b\"q"]  # a formula starts with an apostrophe
    assert [r["note"] for r in rows] == ["plain", "'-1+2", "é\nline"]  # a newline inside a quoted text
    assert rows[2]["x"] == "0.3333333333333333" and rows[2]["at"] == "2021-05-06T05:08:09.123456Z"


def test_formulas_behind_blanks_nuls_and_in_fullwidth_forms_are_neutralised() -> None:
    texts = [" =1+1", "\n=cmd", "\x00@SUM(A1)", "\uff1d1+1", " \t\uff20x", "\n", "a=b", " x", "1-2", ""]
    rows = list(csv.reader(io.StringIO(csv_text(pd.DataFrame({"t": texts})).decode(), newline="")))
    assert [r[0] for r in rows[1:]] == [
        "' =1+1", "'\n=cmd", "'\x00@SUM(A1)", "'\uff1d1+1", "' \t\uff20x", "'\n", "a=b", " x", "1-2", "",
    ]  # fmt: skip
