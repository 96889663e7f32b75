"""The human renderings of an audit report: HTML from autoescaped templates (a dataset description
holding markup is shown, never run), failures first and then warnings, the same order in Markdown,
the ledger size stated once, refused accesses and consent coverage counted, and the notebook view of
the audit result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.errors import PolicyDenied
from complai.vault.schema import load_schema

SCRIPT = "<script>alert('report')</script>"


def _workspace_with_markup(ws: Workspace, rows: int = 60) -> Workspace:
    raw = yaml.safe_load(adult_schema_path().read_text())
    raw["description"] = f"Census extract {SCRIPT}"
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(raw, ws.taxonomy))
    df = load_adult("train").head(rows).drop(columns=["split"], errors="ignore")
    admin.ingest("adult", df, adult_consents(df["subject_id"], now=ws.clock.now()))
    admin.set_budget("adult", 10.0, 1e-3)
    ws.session(OWNER, "analytics").dp_query("SELECT COUNT(*) FROM adult", 0.5)
    ws.identity.add(OWNER, "analyst", "service")
    for _ in range(2):
        with pytest.raises(PolicyDenied):
            ws.session("analyst", "marketing").read("adult", columns=["age"])
    return ws


def test_report_renderings_escape_markup_and_put_failures_first(ws: Workspace, tmp_path: Path) -> None:
    ws = _workspace_with_markup(ws)
    result = ws.session(OWNER, "audit").compliance_audit(tmp_path / "r")
    doc = result["report"]
    status = {c["id"]: c["status"] for c in doc["controls"]}
    failing = [k for k, s in status.items() if s == "fail"]
    warning = [k for k, s in status.items() if s == "warning"]
    # no DPIA for a dataset that needs one fails; no checkpoint or witness yet only warns
    assert "DPIA-1" in failing and warning == ["LEDGER-1"]

    page = Path(result["files"]["html"]).read_text()
    assert SCRIPT not in page and "&lt;script&gt;alert(&#39;report&#39;)&lt;/script&gt;" in page
    assert "<script" not in page  # the page runs nothing
    order = [m.group(1) for m in re.finditer(r'<section class="control [a-z-]+" id="control-([A-Z0-9-]+)"', page)]
    assert set(order[: len(failing)]) == set(failing) and order[len(failing) :] == warning  # failures, then warnings
    assert page.index('id="summary"') < page.index('id="failures"') < page.index('id="warnings"')
    assert page.index('id="warnings"') < page.index('id="passed"') < page.index('id="models"')
    for anchor in ("#summary", "#failures", "#warnings", "#models", "#refused", "#consent", "#charts"):
        assert f'href="{anchor}"' in page  # the table of contents
    assert "complai ledger checkpoint" in page  # the warning's advice names the command
    assert 'id="chart-activity"' in page and 'id="chart-budget"' in page

    # one ledger size: the scope, LEDGER-1's evidence and the metrics state the same number
    size = doc["scope"]["ledger_size"]
    ledger = next(c for c in doc["controls"] if c["id"] == "LEDGER-1")
    assert ledger["evidence"]["ledger_size"] == size == doc["metrics"]["ledger entries"]
    assert f"the {size:,} ledger entries it held when the audit began" in page
    assert result["ledger_seq"] >= size  # the audit's own entry comes after what it audited

    # refusals counted without naming any subject; consent coverage per purpose (60 subjects ingested)
    assert [(r["principal"], r["purpose"], r["action"], r["count"]) for r in doc["refused_accesses"]] == [
        ("analyst", "marketing", "read", 2)
    ]
    coverage = {p["purpose"]: p for p in doc["consent_coverage"]}
    assert coverage["credit_scoring"]["subjects"] == 60
    assert 0 < coverage["credit_scoring"]["consented"] <= 60

    md = Path(result["files"]["md"]).read_text()
    assert md.index("## Failures") < md.index("## Warnings") < md.index("## Passed")
    assert "complai ledger checkpoint" in md

    notebook = result._repr_html_()
    for k in [*failing, *warning]:
        assert f'id="control-{k}"' in notebook
    assert 'id="control-RECON-1"' not in notebook  # passes are left to the full report
    assert "<script" not in notebook
