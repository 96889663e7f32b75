"""`complai deid scan FILE --schema-out`: a schema drafted from a CSV, with coarse bounds and only
frequent category values, refused by `dataset create` until its placeholders are filled, then accepted
and able to ingest the same file."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from complai.deid.scanner import coarse_bounds
from tests.cli.test_cli import run

CITIES = ["Paris"] * 20 + ["Lyon"] * 20 + ["Brest"] * 17 + ["Tulle"] * 3  # Tulle: too rare to list


def _csv(path: Path) -> Path:
    lines = ["customer_id,email,age,birthdate,segment,city,income"]
    for i in range(60):
        age = 23 + i  # 23 .. 82
        born = f"{1951 + (i * 52) // 59}-{1 + i % 12:02d}-{1 + i % 28:02d}"  # 1951 .. 2003
        segment = "retail" if i % 3 else "premium"  # 20 premium, 40 retail
        lines.append(f"C-{1000 + i},person{i}@example.org,{age},{born},{segment},{CITIES[i]},{15_000 + 3_000 * i}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (18, 87, (0, 90)),  # non-negative data: from 0; 87 lies in [80, 90)
        (23, 90, (0, 100)),  # a maximum on the grid still gets the next step above it
        (-3.2, 41, (-10, 50)),  # step 10 (the larger magnitude is 41)
        (1_234, 98_765, (0, 100_000)),
        (0, 0, (0, 1)),
    ],
)
def test_coarse_bounds(lo: float, hi: float, expected: tuple[float, float]) -> None:
    assert coarse_bounds(lo, hi) == expected


def test_draft_fill_create_ingest(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    assert run("init", "--workspace", ws).returncode == 0
    data, out = _csv(tmp_path / "people.csv"), tmp_path / "people.yaml"
    r = run("--workspace", ws, "deid", "scan", str(data), "--regex-only", "--schema-out", str(out))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    text = out.read_text()
    draft = yaml.safe_load(text)
    fields = {f["name"]: f for f in draft["fields"]}
    assert draft["name"] == "people"
    email = fields["email"]
    assert (email["type"], email["category"], email["identifier"]) == ("string", "user.contact.email", "direct")
    age = fields["age"]
    assert (age["type"], age["identifier"], age["category"]) == ("integer", "quasi", "user.demographic.age")
    assert (age["min"], age["max"]) == (0, 90)  # 23..82 rounded outward, not the data's own extremes
    born = fields["birthdate"]
    assert (born["type"], born["identifier"]) == ("date", "quasi")
    assert (str(born["min"]), str(born["max"])) == ("1950-01-01", "2010-01-01")  # whole decades
    assert fields["customer_id"]["type"] == "string" and fields["customer_id"]["identifier"] == "direct"
    assert fields["segment"]["type"] == "category" and fields["segment"]["values"] == ["premium", "retail"]
    assert fields["city"]["type"] == "category" and "values" not in fields["city"]  # Tulle occurs 3 times
    assert "Tulle" not in text
    assert fields["income"]["sensitive"] is True and (fields["income"]["min"], fields["income"]["max"]) == (0, 200_000)
    for key in ("subject_column", "jurisdiction", "retention"):
        assert draft[key] == "FILL-IN"
    assert draft["purposes"] == {"FILL-IN": "FILL-IN"}

    # no overwrite without --force
    again = run("--workspace", ws, "deid", "scan", str(data), "--regex-only", "--schema-out", str(out))
    assert again.returncode == 2 and out.read_text() == text

    # the draft as written is refused, naming what to fill in
    refused = run("--workspace", ws, "dataset", "create", "people", "--schema", str(out))
    assert refused.returncode == 2
    assert "FILL-IN in subject_column, jurisdiction, retention, purposes" in refused.stderr

    filled = tmp_path / "filled.yaml"
    filled.write_text(
        re.sub(r"^subject_column: FILL-IN", "subject_column: customer_id", text, flags=re.M)
        .replace("jurisdiction: FILL-IN", "jurisdiction: EU")
        .replace("retention: FILL-IN", "retention: P1Y")
        .replace("  FILL-IN: FILL-IN", "  analytics: gdpr.legitimate_interests")
    )
    created = run("--workspace", ws, "dataset", "create", "people", "--schema", str(filled))
    assert created.returncode == 0, created.stderr
    ingested = run("--workspace", ws, "dataset", "ingest", "people", str(data))
    assert ingested.returncode == 0, ingested.stderr
    assert "60 rows" in ingested.stdout


def test_schema_out_needs_a_csv(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    assert run("init", "--workspace", ws).returncode == 0
    r = run("--workspace", ws, "deid", "scan", "adult", "--schema-out", str(tmp_path / "s.yaml"))
    assert r.returncode == 2 and "drafts from a CSV file" in r.stderr
    assert not (tmp_path / "s.yaml").exists()
