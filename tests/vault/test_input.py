"""Bad input files and values are refused in one line, all at once, and nothing is written."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.inputs import MAX_REPORTED, parse_csv, read_input
from complai.vault.schema import load_schema, parse_retention
from tests.vault.conftest import SCHEMA

ACCOUNTS: dict[str, Any] = {
    **SCHEMA,
    "name": "accounts",
    "fields": [
        *SCHEMA["fields"],
        {"name": "score", "type": "float", "category": "user.behavior"},
        {"name": "ref", "type": "integer", "category": "user.behavior"},
    ],
}


@pytest.fixture
def accounts(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(ACCOUNTS, ws.taxonomy), actor="owner")
    ws.vault.ingest("accounts", pd.DataFrame([{"customer_id": "A-1", "ref": 1}]), actor="owner")
    return ws


def _state(ws: Workspace) -> tuple[int, dict[str, int]]:
    return ws.ledger.head().size, ws.vault.counts()


def _refused(ws: Workspace, match: str, data: Any, **kw: Any) -> InvalidInput:
    before = _state(ws)
    with pytest.raises(InvalidInput, match=match) as info:
        ws.vault.ingest("accounts", data, actor="owner", **kw)
    assert "\n" not in info.value.message
    assert _state(ws) == before
    return info.value


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_trailing_comma_is_refused_not_shifted(accounts: Workspace, tmp_path: Path) -> None:
    path = _csv(tmp_path, "customer_id,email,full_name\nT-1,t1@ex.com,hello,\n")
    _refused(accounts, r"1 row\(s\) do not have the header's 3 fields: line 2 has 4", path)


def test_every_ragged_row_is_reported_at_once_with_a_cap(accounts: Workspace, tmp_path: Path) -> None:
    rows = ["customer_id,email"] + [f"T-{i},e{i}" + ("," if i % 2 else "") for i in range(60)]
    err = _refused(accounts, "30 row", _csv(tmp_path, "\n".join(rows) + "\n"))
    assert err.message.count(" has 3") == MAX_REPORTED and err.message.endswith("and 10 more")
    assert "line 3 has 3" in err.message  # T-1 is on line 3
    # a short row, and a quoted field spanning two lines, keep line numbers right
    err = _refused(accounts, "line 5 has 1", _csv(tmp_path, 'customer_id,email\nT-1,"a\nb"\n\nT-2\n'))
    assert "1 row(s)" in err.message


def test_bad_values_are_reported_at_once_with_file_lines(accounts: Workspace, tmp_path: Path) -> None:
    text = "customer_id,income,score,ref\nT-1,-5,inf,1\nT-2,7,1e400,x\nT-3,1,-Infinity,2\n,1,1,1\n"
    err = _refused(accounts, "^6 invalid values: ", _csv(tmp_path, text))
    for part in (
        "line 5: missing subject id in 'customer_id'",
        "column income: line 2: '-5' is below the declared min 0",
        "column score: line 2: 'inf' is not a finite number",
        "column score: line 3: '1e400' is not a finite number",
        "column ref: line 3: 'x' is not an integer",
        "column score: line 4: '-Infinity' is not a finite number",
    ):
        assert part in err.message


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), "1e400", "-Infinity", "NaN"])
def test_non_finite_floats_are_refused_from_frames(accounts: Workspace, value: Any) -> None:
    _refused(accounts, "column score: row 1: .* is not a (finite )?number", [{"customer_id": "T-1", "score": value}])


def test_integers_are_exact_or_refused(accounts: Workspace, tmp_path: Path) -> None:
    exact = [2**53 + 1, 2**63 - 1, -(2**63), 123456789012345678]
    text = "customer_id,ref\n" + "".join(f"I-{i},{v}\n" for i, v in enumerate(exact)) + "I-9,1e3\nI-8,+7\n"
    accounts.vault.ingest("accounts", _csv(tmp_path, text), actor="owner")
    accounts.vault.ingest("accounts", [{"customer_id": "I-7", "ref": 2**62 + 1}], actor="owner")
    got = accounts.session("owner", "customer_support").read("accounts").set_index("customer_id")["ref"]
    assert [int(got[f"I-{i}"]) for i in range(len(exact))] == exact
    assert int(got["I-9"]) == 1000 and int(got["I-8"]) == 7 and int(got["I-7"]) == 2**62 + 1
    for big in ("123456789012345678901", "9223372036854775808", "-9223372036854775809", "1e30", "9" * 5000, "\u0663"):
        _refused(
            accounts,
            "is outside the 64-bit integer range|is not an integer",
            _csv(tmp_path, f"customer_id,ref\nT,{big}\n"),
        )
    _refused(accounts, "outside the 64-bit integer range", [{"customer_id": "T", "ref": 2**64}])
    _refused(accounts, "is not an integer", [{"customer_id": "T", "ref": "1_000"}])


def test_rectify_checks_values_the_same_way(accounts: Workspace) -> None:
    with pytest.raises(InvalidInput, match="outside the 64-bit integer range"):
        accounts.vault.rectify("A-1", "accounts", "ref", "123456789012345678901", actor="owner")
    with pytest.raises(InvalidInput, match="not a finite number"):
        accounts.vault.rectify("A-1", "accounts", "score", "inf", actor="owner")


def test_directories_devices_and_fifos_are_not_input_files(accounts: Workspace, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    good = _csv(tmp_path, "customer_id\nA-1\n")
    for path, kind in ((tmp_path, "a directory"), (Path("/dev/zero"), "a device"), (fifo, "a FIFO")):
        _refused(accounts, f"data file {path} is {kind}, not a regular file", path)
        _refused(accounts, f"consents file {path} is {kind}", good, consents_data=path)
        with pytest.raises(InvalidInput, match=f"schema file {path} is {kind}"):
            load_schema(path, accounts.taxonomy)
    with pytest.raises(InvalidInput, match="not found"):
        read_input(tmp_path / "missing.yaml", "spec")
    with pytest.raises(InvalidInput, match="larger than 3 bytes"):
        read_input(good, "spec", max_bytes=3)


def test_consents_for_undeclared_purposes_are_refused(accounts: Workspace, tmp_path: Path) -> None:
    data = [{"customer_id": "A-1"}]
    consents = pd.DataFrame([("A-1", "analytics"), ("A-1", "marketing")], columns=["subject", "purpose"])
    err = _refused(
        accounts,
        "consents row 1: purpose 'analytics' is not declared by dataset accounts",
        data,
        consents_data=consents,
    )
    assert "credit_scoring" in err.message
    path = _csv(tmp_path, "subject,purpose\nA-1,analytics\nA-1,marketing\nA-1,telepathy\n", "consents.csv")
    err = _refused(
        accounts,
        "^2 invalid consent rows: consents line 2: .*consents line 4: unknown purpose",
        data,
        consents_data=path,
    )
    before = _state(accounts)
    with pytest.raises(InvalidInput, match="purpose 'analytics' is not declared by the subject's dataset"):
        accounts.vault.grant_consent("A-1", "analytics", actor="owner")
    assert _state(accounts) == before
    accounts.vault.grant_consent("A-1", "marketing", actor="owner")  # a declared purpose still works


@pytest.mark.parametrize("text", ["P99999999Y", "P101Y", "P1300M", "P40000D", "P6000W", "P9999999999D", "P1D\n"])
def test_absurd_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="duration"):
        parse_retention(text)


def test_durations_up_to_a_century_are_accepted() -> None:
    assert parse_retention("P100Y").years == 100 and parse_retention("P36500D").days == 36500


_cell = st.one_of(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8).filter(
        lambda c: not c.startswith(" ")
    ),
    st.sampled_from(["", ",", '"', "\n", "\r\n", "a,b", 'say "hi"']),
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(_cell, min_size=n, max_size=n), min_size=1, max_size=6)))
def test_csv_round_trips_exactly_and_ragged_rows_are_refused(rows: list[list[str]]) -> None:
    n = len(rows[0])
    header = [f"c{i}" for i in range(n)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    table = parse_csv(out.getvalue().encode(), "data", "t.csv")
    assert table.header == header
    assert table.rows == rows
    # one field more or less on a row: refused with that row's line, never shifted or filled in
    line = len(io.StringIO(out.getvalue(), newline="").readlines()) + 1
    for width in (n + 1, n - 1):
        if width >= 1:
            with pytest.raises(InvalidInput, match=f"1 row\\(s\\) .*: line {line} has {width}$"):
                parse_csv((out.getvalue() + ",".join(["x"] * width) + "\n").encode(), "data", "t.csv")


def test_a_lone_surrogate_in_a_value_is_refused(accounts: Workspace) -> None:
    # JSON's "\ud800" escape reads as a text Python holds but no UTF-8 store can keep
    _refused(accounts, "not Unicode text", [{"customer_id": "A-2", "full_name": "x\ud800y"}])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("source", "x\x00y", "source holds a control character"),
        ("notice_version", "\x1b[31m", "notice_version holds a control character"),
        ("source", "s" * 129, "source is longer than 128 characters"),
        ("notice_version", "v" * 65, "notice_version is longer than 64 characters"),
        ("source", "\udc00", "not Unicode"),
    ],
)
def test_consent_texts_the_store_cannot_keep_are_refused(
    accounts: Workspace, field: str, value: str, match: str
) -> None:
    consents = pd.DataFrame([{"subject": "A-2", "purpose": "credit_scoring", field: value}], dtype=object)
    err = _refused(accounts, match, [{"customer_id": "A-2"}], consents_data=consents)
    assert value not in err.message
    before = _state(accounts)
    with pytest.raises(InvalidInput, match=match):
        accounts.vault.grant_consent("A-1", "credit_scoring", actor="owner", **{field: value})
    assert _state(accounts) == before
