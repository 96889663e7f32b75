"""Audit reports: canonical JSON (RFC 8785; its SHA-256 goes into the ledger) and Markdown, and the
check that a report file is one the ledger recorded."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from sqlalchemy import func, select

from complai.clock import as_utc, to_us, utc_iso
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
from complai.store.tables import (
    consents,
    datasets,
    dp_budgets,
    ledger_entries,
    model_subjects,
    models,
    records,
    subjects,
)

FORMATS = ("json", "md", "html")


def canonical(report: dict[str, Any]) -> bytes:
    return rfc8785.dumps(finite(report))


def build(ctx: AuditContext, actor: str, owner: str | None = None) -> dict[str, Any]:
    """Run the controls, then open incidents for what they found (a ledger that fails verification,
    anomalous reads), and assemble the report."""
    svc = ctx.svc
    head = ctx.head()  # the size every part of the report states: the ledger before this audit wrote to it
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
        "models": _model_inventory(ctx, results),
        "refused_accesses": _refused(ctx),
        "consent_coverage": _consent_coverage(ctx),
        "ledger_activity": _activity(ctx),
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
        "ledger entries": ctx.head().size,
    }
    return metrics, series, totals


def _model_inventory(ctx: AuditContext, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every model: what it is for, its privacy guarantee, its headline utility, and what an auditor
    should know about it (trained without DP, over the cap, flagged by an erasure or a retention sweep,
    trained on subjects whose records are now past retention, failing its integrity check)."""
    integrity = ctx.models_checked()
    now_us = to_us(ctx.now)
    with ctx.svc.store.read() as conn:
        rows = conn.execute(select(models).order_by(models.c.created_at, models.c.id)).all()
        expired: dict[str, int] = dict(
            conn.execute(
                select(model_subjects.c.model_id, func.count(func.distinct(records.c.subject_id)))
                .select_from(
                    model_subjects.join(models, models.c.id == model_subjects.c.model_id).join(
                        records,
                        (records.c.subject_id == model_subjects.c.subject_id) & (records.c.dataset == models.c.dataset),
                    )
                )
                .where(records.c.expires_us <= now_us)
                .group_by(model_subjects.c.model_id)
            ).all()
        )
    out = []
    for m in rows:
        try:
            card = json.loads(m.card)
        except ValueError:
            card = {}
        utility = card.get("utility") if isinstance(card.get("utility"), dict) else {}
        metric = next(
            (k for k in ("accuracy", "auc", "r2", "mae", "loss") if isinstance(utility.get(k), (int, float))), None
        )
        flags = []
        if not m.private:
            flags.append("trained without differential privacy")
        elif m.epsilon is None or m.epsilon > ctx.epsilon_cap:
            flags.append(f"epsilon above the cap {ctx.epsilon_cap:g}")
        if m.flagged_at is not None:
            flags.append(f"flagged for retraining: {m.flag_reason or 'an erasure or an expiry'}")
        if expired.get(m.id):
            flags.append(f"trained on {int(expired[m.id]):,} subjects whose records are past retention")
        flags += integrity.get(str(m.id), [])
        out.append(
            {
                "id": m.id,
                "dataset": m.dataset,
                "purpose": m.purpose,
                "task": m.task,
                "architecture": m.architecture,
                "created_at": utc_iso(as_utc(m.created_at)),
                "private": bool(m.private),
                "epsilon": m.epsilon,
                "delta": m.delta,
                "subjects": int(m.subjects),
                "utility_metric": metric,
                "utility": utility.get(metric) if metric else None,
                "flags": flags,
            }
        )
    return out


def _refused(ctx: AuditContext) -> list[dict[str, Any]]:
    """Refused accesses in the audit's window, counted per principal, purpose, action, dataset and reason
    (access.denied events name no subject)."""
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    first: dict[tuple[str, str, str, str, str], str] = {}
    last: dict[tuple[str, str, str, str, str], str] = {}
    for e in ctx.entries():
        if e.get("type") != "access.denied":
            continue
        k5 = (
            str(e.get("actor")),
            str(e.get("purpose")),
            str(e.get("action")),
            str(e.get("dataset")),
            str(e.get("reason")),
        )
        counts[k5] += 1
        first.setdefault(k5, str(e.get("time")))
        last[k5] = str(e.get("time"))
    return [
        {
            "principal": k[0],
            "purpose": k[1],
            "action": k[2],
            "dataset": k[3],
            "reason": k[4],
            "count": n,
            "first": first[k],
            "last": last[k],
        }
        for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _consent_coverage(ctx: AuditContext) -> list[dict[str, Any]]:
    return consent_coverage(ctx.svc, ctx.now)


def consent_coverage(svc: ComplianceServices, now: datetime, dataset: str | None = None) -> list[dict[str, Any]]:
    """Per declared purpose: subjects (not erased) with records in the datasets declaring it (or only in
    `dataset`), and how many of them hold live consent for it at `now`; whether the purpose's lawful
    basis needs consent at all."""
    tax = svc.taxonomy
    declared: dict[str, dict[str, str]] = {}
    with svc.store.read() as conn:
        for name, text in conn.execute(select(datasets.c.name, datasets.c.schema_json)):
            if dataset is not None and name != dataset:
                continue
            try:
                purposes = json.loads(text).get("purposes") or {}
            except (ValueError, AttributeError):
                purposes = {}
            for purpose, basis in purposes.items():
                declared.setdefault(str(purpose), {})[str(name)] = str(basis)
        out = []
        for purpose, by_dataset in sorted(declared.items()):
            names = sorted(by_dataset)
            live = (consents.c.granted_at <= now) & (
                consents.c.withdrawn_at.is_(None) | (consents.c.withdrawn_at > now)
            )
            total_n = conn.execute(
                select(func.count(func.distinct(records.c.subject_id)))
                .select_from(records.join(subjects, subjects.c.id == records.c.subject_id))
                .where(records.c.dataset.in_(names), subjects.c.erased_at.is_(None))
            ).scalar_one()
            consented = conn.execute(
                select(func.count(func.distinct(records.c.subject_id)))
                .select_from(
                    records.join(subjects, subjects.c.id == records.c.subject_id).join(
                        consents, (consents.c.subject_id == records.c.subject_id) & (consents.c.purpose == purpose)
                    )
                )
                .where(records.c.dataset.in_(names), subjects.c.erased_at.is_(None), live)
            ).scalar_one()
            needs = []
            for basis in sorted(set(by_dataset.values())):
                try:
                    needs.append(bool(tax.legal_basis(basis).attrs.get("requires_consent")))
                except Exception:
                    needs.append(True)
            out.append(
                {
                    "purpose": purpose,
                    "datasets": names,
                    "lawful_bases": sorted(set(by_dataset.values())),
                    "consent_required": any(needs),
                    "subjects": int(total_n),
                    "consented": int(consented),
                }
            )
    return out


def _activity(ctx: AuditContext) -> dict[str, dict[str, int]]:
    """Ledger events in the audit's window per UTC day and kind: {day: {kind: count}}."""
    days: dict[str, Counter[str]] = {}
    for e in ctx.entries():
        day = str(e.get("time", ""))[:10]
        if day:
            days.setdefault(day, Counter())[str(e.get("type", "unknown"))] += 1
    return {d: dict(sorted(c.items())) for d, c in sorted(days.items())}


def markdown(report: dict[str, Any], report_digest: str) -> str:
    """The Markdown report: the HTML report's order (failures first) and formatting, without charts."""
    return html.markdown(report, report_digest)


class AuditResult(dict[str, Any]):
    """What an audit returns (digest, ledger_seq, files, summary, report) as a plain mapping that also
    renders its summary in a notebook: counts, then each failing and warning control with its items."""

    def _repr_html_(self) -> str:
        return html.summary(self["report"], self["digest"])


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
        rendered["html"] = html.render(report, d).encode()
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
