"""Audit reports: canonical JSON (RFC 8785; its SHA-256 goes into the ledger) and Markdown, and the
check that a report file is one the ledger recorded."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import rfc8785
from sqlalchemy import select

from complai.compliance import engine, html
from complai.compliance.context import AuditContext, ComplianceServices
from complai.compliance.ropa import records_of_processing
from complai.crypto.digest import digest
from complai.dp.accounting import finite
from complai.errors import IntegrityError, InvalidInput
from complai.events import ComplianceAudited
from complai.files import check_outputs, output_dir, workspace_protected, write_private
from complai.inputs import read_input
from complai.ledger.verify import verify_ledger
from complai.store.tables import dp_budgets, ledger_entries, models

FORMATS = ("json", "md", "html")


def canonical(report: dict[str, Any]) -> bytes:
    return rfc8785.dumps(finite(report))


def build(ctx: AuditContext, actor: str, owner: str | None = None) -> dict[str, Any]:
    """Run the controls, then open incidents for what they found (a ledger that fails verification,
    anomalous reads), and assemble the report."""
    svc = ctx.svc
    head = svc.ledger.head()
    results = engine.run_controls(ctx)
    problem = None if ctx.verify().ok else (ctx.verify().problem or "verification failed")
    opened = svc.incidents.detect(ctx.entries(), problem, owner or "owner", actor)
    metrics, series, totals = _metrics(ctx, results)
    requests = [
        {k: r[k] for k in ("id", "type", "jurisdiction", "status", "due_at", "days_left", "closed_at", "overdue")}
        for r in svc.requests.list()
    ]
    note = svc.ledger.latest_checkpoint()
    return {
        "report_format": 1,
        "title": "complai compliance audit",
        "generated_at": engine.generated_at(ctx),
        "generated_by": actor,
        "scope": {
            "workspace": str(svc.path),
            "ledger_size": head.size,
            "ledger_root": head.root.hex() if head.size else None,
            "since": ctx.since,
            "datasets": sorted(svc.catalog.names()),
            "parameters": {"epsilon_cap": ctx.epsilon_cap, "key_rotation_days": ctx.key_rotation_days},
        },
        "catalogue_digest": digest(engine.CATALOGUE.read_bytes()),
        "summary": engine.summary(results),
        "controls": results,
        "records_of_processing": records_of_processing(svc.store, svc.taxonomy),
        "metrics": metrics,
        "budget_series": series,
        "budget_totals": totals,
        "requests": requests,
        "checkpoint": note.text() if note else None,
        "incidents_opened": [{k: i[k] for k in ("id", "kind", "description", "notify_by")} for i in opened],
    }


def _metrics(
    ctx: AuditContext, results: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, list[list[Any]]], dict[str, float]]:
    """Epsilon per model and dataset, retention backlog, request timeliness, encryption coverage, and the
    cumulative privacy spending per dataset over time (from the ledger's spend entries)."""
    by_id = {c["id"]: c for c in results}
    with ctx.svc.store.read() as conn:
        totals = {
            str(r.dataset): float(r.epsilon)
            for r in conn.execute(select(dp_budgets).where(dp_budgets.c.principal == "*"))
        }
        model_eps = {str(m.id): m.epsilon for m in conn.execute(select(models.c.id, models.c.epsilon))}
    series: dict[str, list[list[Any]]] = {}
    for e in ctx.entries():
        if e.get("type") in ("dp.spent", "dp.query") and e.get("dataset") in totals:
            spent = totals[e["dataset"]] - float(e.get("epsilon_remaining", 0.0))
            series.setdefault(e["dataset"], []).append([e["time"], round(spent, 6)])
    reqs = ctx.svc.requests.list()
    metrics = {
        "epsilon spent per dataset": {
            d: (pts[-1][1] if pts else 0.0) for d, pts in ((d, series.get(d, [])) for d in totals)
        },
        "epsilon per model": model_eps,
        "records past retention": by_id.get("RET-1", {}).get("evidence", {}).get("records_past_retention"),
        "records without a data key": by_id.get("ENC-1", {}).get("evidence", {}).get("records_without_key"),
        "subject requests (open / overdue / total)": f"{sum(1 for r in reqs if not r['closed_at'])} / "
        f"{sum(1 for r in reqs if r['overdue'])} / {len(reqs)}",
        "ledger entries": ctx.svc.ledger.head().size,
    }
    return metrics, series, totals


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


def check_out(
    svc: ComplianceServices, out: Path, formats: tuple[str, ...], force: bool = False, epsilon_cap: float | None = None
) -> None:
    """Refuse, before any work, formats we do not write, report files we may not (over)write, no format
    at all (a report nobody can read) and an epsilon cap that is not a positive number (NaN passes every
    model, -inf fails every one)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InvalidInput(f"unknown report format(s) {bad} (formats: {', '.join(FORMATS)})")
    if not formats:
        raise InvalidInput(f"no report format given (formats: {', '.join(FORMATS)})")
    if epsilon_cap is not None and not (math.isfinite(epsilon_cap) and epsilon_cap > 0):
        raise InvalidInput(f"the epsilon cap must be a positive finite number, not {epsilon_cap}")
    check_outputs(out, [f"report.{f}" for f in formats], force=force, forbidden=workspace_protected(svc.path))


def write(
    svc: ComplianceServices,
    report: dict[str, Any],
    actor: str,
    purpose: str,
    out: Path,
    formats: tuple[str, ...],
    force: bool = False,
) -> dict[str, Any]:
    """Render every requested format, write the files (mode 0600, never over an existing one unless
    `force`), then record the report's digest in the ledger; a failure records nothing and removes
    the files it wrote."""
    check_out(svc, out, formats, force)
    body = canonical(report)
    d = digest(body)
    s = report["summary"]
    rendered: dict[str, bytes] = {}
    if "json" in formats:
        rendered["json"] = body
    if "md" in formats:
        rendered["md"] = markdown(report, d).encode()
    if "html" in formats:
        charts = {
            "status": html.status_chart(report["summary"]),
            "budget": html.burn_down_chart(
                {k: [(t, v) for t, v in pts] for k, pts in report["budget_series"].items()}, report["budget_totals"]
            ),
            "deadlines": html.deadline_chart(report["requests"]),
            "metrics": {k: json.dumps(v) if isinstance(v, dict) else v for k, v in report["metrics"].items()},
            "checkpoint": report["checkpoint"],
        }
        rendered["html"] = html.render(report, d, charts).encode()
    forbidden = workspace_protected(svc.path)
    output_dir(out, forbidden=forbidden)
    files: dict[str, str] = {}
    try:
        for fmt, data in rendered.items():
            files[fmt] = str(write_private(out / f"report.{fmt}", data, force=force, forbidden=forbidden))
        seq = _record(svc, report, d, actor, purpose)
    except BaseException:
        for f in files.values():
            Path(f).unlink(missing_ok=True)
        raise
    return {"digest": d, "ledger_seq": seq, "files": files, "summary": s}


def _record(svc: ComplianceServices, report: dict[str, Any], d: str, actor: str, purpose: str) -> int:
    s = report["summary"]
    return svc.ledger.emit(
        None,
        ComplianceAudited,
        actor=actor,
        purpose=purpose,
        report_digest=d,
        ledger_size=report["scope"]["ledger_size"],
        ledger_root=report["scope"]["ledger_root"] or "",
        since=report["scope"]["since"],
        passed=s["pass"],
        failed=s["fail"],
        not_applicable=s["not applicable"],
        not_evaluated=s["not evaluated"],
    )


def last_audit(svc: ComplianceServices) -> tuple[int, bytes] | None:
    """(ledger size, root) the most recent recorded audit covered, or None."""
    with svc.store.read() as conn:
        raw = conn.execute(
            select(ledger_entries.c.data)
            .where(ledger_entries.c.kind == ComplianceAudited.kind)
            .order_by(ledger_entries.c.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
    if raw is None:
        return None
    e = json.loads(bytes(raw))
    return (int(e["ledger_size"]), bytes.fromhex(e["ledger_root"])) if e.get("ledger_root") else None


def verify(svc: ComplianceServices, path: Path) -> dict[str, Any]:
    """A report file against the ledger: canonical, recorded by a compliance.audited entry, ledger sound."""
    data = read_input(path, "report")
    try:
        parsed = json.loads(data)
    except ValueError:
        raise IntegrityError("the report is not valid JSON (it was changed, or is not a complai report)") from None
    if canonical(parsed) != data:
        raise IntegrityError("the report is not the canonical JSON complai wrote (it was changed)")
    d = digest(data)
    with svc.store.read() as conn:
        rows = conn.execute(select(ledger_entries.c.seq, ledger_entries.c.data).order_by(ledger_entries.c.seq)).all()
    seq = None
    for s, raw in rows:
        e = json.loads(bytes(raw))
        if e.get("type") == ComplianceAudited.kind and e.get("report_digest") == d:
            seq = int(s)
            break
    if seq is None:
        raise IntegrityError("no compliance.audited entry in the ledger records this report's digest")
    check = verify_ledger(svc.ledger)
    if not check.ok:
        raise IntegrityError(f"the ledger does not verify: {check.problem}")
    return {"ok": True, "digest": d, "ledger_seq": seq, "ledger_size": check.size}
