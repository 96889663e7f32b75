"""Audit reports: canonical JSON (RFC 8785; its SHA-256 goes into the ledger) and Markdown, and the
check that a report file is one the ledger recorded."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import rfc8785
from sqlalchemy import select

from complai.compliance import engine
from complai.errors import IntegrityError, InvalidInput
from complai.events import ComplianceAudited
from complai.store.tables import ledger_entries

FORMATS = ("json", "md")


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def canonical(report: dict[str, Any]) -> bytes:
    return rfc8785.dumps(_finite(report))


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(ctx: engine.AuditContext, actor: str) -> dict[str, Any]:
    ws = ctx.ws
    head = ws.ledger.head()
    from complai.compliance.ropa import records_of_processing

    results = engine.run_controls(ctx)
    return {
        "report_format": 1,
        "title": "complai compliance audit",
        "generated_at": engine.generated_at(ctx),
        "generated_by": actor,
        "scope": {
            "workspace": str(ws.path),
            "ledger_size": head.size,
            "ledger_root": head.root.hex() if head.size else None,
            "datasets": sorted(ws.catalog.names()) if hasattr(ws.catalog, "names") else None,
            "parameters": {"epsilon_cap": ctx.epsilon_cap, "key_rotation_days": ctx.key_rotation_days},
        },
        "catalogue_digest": digest(engine.CATALOGUE.read_bytes()),
        "summary": engine.summary(results),
        "controls": results,
        "records_of_processing": records_of_processing(ws),
    }


def markdown(report: dict[str, Any], report_digest: str) -> str:
    s, scope = report["summary"], report["scope"]
    lines = [
        f"# {report['title']}",
        "",
        f"Generated {report['generated_at']} by {report['generated_by']}. "
        f"Scope: ledger entries 0..{scope['ledger_size'] - 1} (root {scope['ledger_root']}).",
        "",
        "| pass | fail | not applicable | not evaluated |",
        "|---|---|---|---|",
        f"| {s['pass']} | {s['fail']} | {s['not applicable']} | {s['not evaluated']} |",
        "",
        "## Controls",
        "",
    ]
    for c in report["controls"]:
        arts = "; ".join(f"{law.upper()} {', '.join(a)}" for law, a in c["articles"].items())
        lines += [f"### {c['id']}: {c['title']} - **{c['status']}**", "", f"{c['summary']}. Articles: {arts}.", ""]
        if c["evidence"]:
            lines.append("Evidence: " + ", ".join(f"{k} = {v}" for k, v in c["evidence"].items()))
            lines.append("")
        for item in c["items"]:
            lines.append(f"- `{item['item']}`: {item['problem']}")
        if c["items"]:
            lines.append("")
        if c.get("remediation"):
            lines += [f"What to do: {c['remediation']}", ""]
    lines += ["## Appendix", "", f"Report digest (recorded in the ledger): `{report_digest}`", ""]
    return "\n".join(lines)


def write(
    ws: Any, report: dict[str, Any], actor: str, purpose: str, out: Path, formats: tuple[str, ...]
) -> dict[str, Any]:
    """Record the report's digest in the ledger, then write the requested formats into `out`."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InvalidInput(f"unknown report format(s) {bad} (formats: {', '.join(FORMATS)})")
    body = canonical(report)
    d = digest(body)
    s = report["summary"]
    seq = ws.ledger.record(
        ComplianceAudited(
            time=ws.clock.now(),
            actor=actor,
            purpose=purpose,
            report_digest=d,
            ledger_size=report["scope"]["ledger_size"],
            passed=s["pass"],
            failed=s["fail"],
            not_applicable=s["not applicable"],
            not_evaluated=s["not evaluated"],
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if "json" in formats:
        (out / "report.json").write_bytes(body)
        files["json"] = str(out / "report.json")
    if "md" in formats:
        (out / "report.md").write_text(markdown(report, d))
        files["md"] = str(out / "report.md")
    return {"digest": d, "ledger_seq": seq, "files": files, "summary": s}


def verify(ws: Any, path: Path) -> dict[str, Any]:
    """A report file against the ledger: canonical, recorded by a compliance.audited entry, ledger sound."""
    from complai.ledger.verify import verify_ledger

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read report {path}: {type(exc).__name__}") from None
    try:
        parsed = json.loads(data)
    except ValueError:
        raise IntegrityError("the report is not valid JSON (it was changed, or is not a complai report)") from None
    if canonical(parsed) != data:
        raise IntegrityError("the report is not the canonical JSON complai wrote (it was changed)")
    d = digest(data)
    with ws.store.read() as conn:
        rows = conn.execute(select(ledger_entries.c.seq, ledger_entries.c.data).order_by(ledger_entries.c.seq)).all()
    seq = None
    for s, raw in rows:
        e = json.loads(bytes(raw))
        if e.get("type") == ComplianceAudited.kind and e.get("report_digest") == d:
            seq = int(s)
            break
    if seq is None:
        raise IntegrityError("no compliance.audited entry in the ledger records this report's digest")
    check = verify_ledger(ws.ledger)
    if not check.ok:
        raise IntegrityError(f"the ledger does not verify: {check.problem}")
    return {"ok": True, "digest": d, "ledger_seq": seq, "ledger_size": check.size}
