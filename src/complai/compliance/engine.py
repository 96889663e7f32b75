"""The compliance engine: each control in controls/catalogue.yaml that names a check is a function over
the workspace (store and ledger) returning pass, fail or not applicable, with evidence and, for each
failure, the items at fault. Controls without a check are reported as not evaluated, never as passed.

The ledger is read once per audit (entries parsed as JSON, not re-validated: LEDGER-1 verifies them)
and shared by the controls that need it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from complai.clock import to_us, utc_iso
from complai.store.tables import (
    consents,
    datasets,
    ledger_cosignatures,
    ledger_entries,
    model_subjects,
    models,
    principals,
    records,
    subject_keys,
    subjects,
)

CATALOGUE = Path(__file__).parent / "controls" / "catalogue.yaml"
PASS, FAIL, NA, NOT_EVALUATED = "pass", "fail", "not applicable", "not evaluated"


@dataclass
class Finding:
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AuditContext:
    ws: Any
    now: datetime
    epsilon_cap: float = 10.0
    key_rotation_days: int = 365
    _entries: list[dict[str, Any]] | None = None

    def entries(self) -> list[dict[str, Any]]:
        """Every ledger entry's event, parsed once, with its sequence number."""
        if self._entries is None:
            out = []
            with self.ws.store.read() as conn:
                for seq, data in conn.execute(select(ledger_entries.c.seq, ledger_entries.c.data).order_by("seq")):
                    try:
                        e = json.loads(bytes(data))
                    except ValueError:
                        e = {"type": "unreadable"}
                    e["_seq"] = int(seq)
                    out.append(e)
            self._entries = out
        return self._entries


CHECKS: dict[str, Callable[[AuditContext], Finding]] = {}


def check(name: str) -> Callable[[Callable[[AuditContext], Finding]], Callable[[AuditContext], Finding]]:
    def register(fn: Callable[[AuditContext], Finding]) -> Callable[[AuditContext], Finding]:
        CHECKS[name] = fn
        return fn

    return register


def load_catalogue(path: Path = CATALOGUE) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return list(doc["controls"])


# --- the checks --------------------------------------------------------------------------------------


@check("ledger_integrity")
def ledger_integrity(ctx: AuditContext) -> Finding:
    from complai.ledger.verify import verify_ledger

    ledger = ctx.ws.ledger
    report = verify_ledger(ledger)
    head = ledger.head()
    evidence = {"ledger_size": head.size, "root": head.root.hex() if head.size else None}
    items = []
    if not report.ok:
        items.append({"item": "ledger", "problem": report.problem or "verification failed"})
    notes = ledger.checkpoints()
    latest = max((n.checkpoint.size for n in notes), default=None)
    evidence["latest_checkpoint"] = latest
    if latest is None:
        items.append({"item": "checkpoints", "problem": "no signed checkpoint"})
    witnesses = [w.name for w in ledger.witnesses()]
    evidence["witnesses"] = witnesses
    if not witnesses:
        items.append({"item": "witnesses", "problem": "no witness is trusted to cosign checkpoints"})
    elif latest is not None:
        with ctx.ws.store.read() as conn:
            signed = {
                str(w)
                for w in conn.execute(
                    select(ledger_cosignatures.c.witness).where(ledger_cosignatures.c.size == latest)
                ).scalars()
            }
        for w in witnesses:
            if w not in signed:
                items.append({"item": f"witness {w}", "problem": f"has not cosigned the checkpoint at size {latest}"})
    if items:
        return Finding(FAIL, f"{len(items)} problem(s) with the ledger's integrity evidence", evidence, items)
    return Finding(PASS, f"{head.size} entries verify; checkpoint at {latest} cosigned by {len(witnesses)}", evidence)


def _raw_schemas(ctx: AuditContext) -> list[dict[str, Any]]:
    with ctx.ws.store.read() as conn:
        rows = conn.execute(select(datasets.c.name, datasets.c.schema_json, datasets.c.retention)).all()
    out = []
    for name, text, retention in rows:
        try:
            schema = json.loads(text)
        except ValueError:
            schema = {}
        out.append({"name": name, "schema": schema, "retention": retention})
    return out


@check("fields_categorised")
def fields_categorised(ctx: AuditContext) -> Finding:
    known = set(ctx.ws.taxonomy.keys("data_categories"))
    schemas = _raw_schemas(ctx)
    if not schemas:
        return Finding(NA, "no datasets")
    items, fields = [], 0
    for d in schemas:
        for f in d["schema"].get("fields", []):
            fields += 1
            cat = f.get("category")
            if not cat:
                items.append({"item": f"{d['name']}.{f.get('name')}", "problem": "no data category"})
            elif cat not in known:
                items.append({"item": f"{d['name']}.{f.get('name')}", "problem": f"unknown category {cat!r}"})
    evidence = {"datasets": len(schemas), "fields": fields}
    if items:
        return Finding(FAIL, f"{len(items)} of {fields} fields lack a valid category", evidence, items)
    return Finding(PASS, f"all {fields} fields of {len(schemas)} datasets categorised", evidence)


@check("lawful_basis")
def lawful_basis(ctx: AuditContext) -> Finding:
    tax = ctx.ws.taxonomy
    bases = set(tax.keys("legal_bases"))
    schemas = _raw_schemas(ctx)
    if not schemas:
        return Finding(NA, "no datasets")
    items, purposes = [], 0
    for d in schemas:
        s = d["schema"]
        special = [f["name"] for f in s.get("fields", []) if f.get("category") and _special(tax, f["category"])]
        gdpr = str(s.get("jurisdiction", "")).upper() in ("EU", "EEA", "UK") or str(
            s.get("jurisdiction", "")
        ).startswith("EU")
        for purpose, basis in (s.get("purposes") or {}).items():
            purposes += 1
            if not basis or basis not in bases:
                items.append({"item": f"{d['name']}: {purpose}", "problem": f"no known lawful basis ({basis!r})"})
            elif special and gdpr and not str(basis).startswith("gdpr.art9"):
                items.append(
                    {
                        "item": f"{d['name']}: {purpose}",
                        "problem": f"basis {basis} is not an Art. 9(2) condition, but the dataset holds special "
                        f"categories ({', '.join(special[:3])})",
                    }
                )
    evidence = {"datasets": len(schemas), "purposes": purposes}
    if items:
        return Finding(FAIL, f"{len(items)} of {purposes} purposes lack a valid basis", evidence, items)
    return Finding(PASS, f"{purposes} purposes, each with a valid lawful basis", evidence)


def _special(tax: Any, category: str) -> bool:
    try:
        return bool(tax.is_special(category))
    except Exception:
        return False


@check("retention")
def retention(ctx: AuditContext) -> Finding:
    from complai.vault.schema import parse_retention

    schemas = _raw_schemas(ctx)
    if not schemas:
        return Finding(NA, "no datasets")
    items = []
    for d in schemas:
        try:
            parse_retention(d["retention"])
        except Exception:
            items.append({"item": d["name"], "problem": f"retention {d['retention']!r} is not a typed period"})
    with ctx.ws.store.read() as conn:
        past = conn.execute(
            select(records.c.dataset, func.count(), func.min(records.c.expires_us))
            .where(records.c.expires_us <= to_us(ctx.now))
            .group_by(records.c.dataset)
        ).all()
        total = conn.execute(select(func.count()).select_from(records)).scalar_one()
    for ds, n, oldest in past:
        days = (to_us(ctx.now) - int(oldest)) / 86_400e6
        items.append({"item": ds, "problem": f"{n} records past retention (the oldest by {days:.0f} days)"})
    evidence = {
        "datasets": len(schemas),
        "records": int(total),
        "records_past_retention": sum(int(n) for _, n, _ in past),
    }
    if items:
        return Finding(FAIL, f"{len(items)} retention problem(s)", evidence, items)
    return Finding(PASS, f"typed retention on {len(schemas)} datasets; nothing past it", evidence)


@check("encryption")
def encryption(ctx: AuditContext) -> Finding:
    r, k = records.c, subject_keys.c
    with ctx.ws.store.read() as conn:
        total = conn.execute(select(func.count()).select_from(records)).scalar_one()
        if not total:
            return Finding(NA, "no records")
        orphans = conn.execute(
            select(func.count())
            .select_from(records.outerjoin(subject_keys, (k.subject_id == r.subject_id) & (k.version == r.dek_version)))
            .where(k.subject_id.is_(None))
        ).scalar_one()
        cutoff = ctx.now - timedelta(days=ctx.key_rotation_days)
        old = conn.execute(
            select(func.count(func.distinct(k.subject_id)))
            .select_from(records.join(subject_keys, (k.subject_id == r.subject_id) & (k.version == r.dek_version)))
            .where(k.created_at < cutoff)
        ).scalar_one()
    items = []
    if orphans:
        items.append({"item": "records", "problem": f"{orphans} records have no data key (unreadable or unencrypted)"})
    if old:
        items.append(
            {"item": "data keys", "problem": f"{old} subjects' data keys are older than {ctx.key_rotation_days} days"}
        )
    evidence = {"records": int(total), "records_without_key": int(orphans), "subjects_with_old_keys": int(old)}
    if items:
        return Finding(FAIL, "encryption coverage or key age problems", evidence, items)
    return Finding(PASS, f"all {total} records under live per-subject keys younger than the rotation period", evidence)


@check("erasure")
def erasure(ctx: AuditContext) -> Finding:
    s = subjects.c
    with ctx.ws.store.read() as conn:
        erased = conn.execute(select(func.count()).select_from(subjects).where(s.erased_at.is_not(None))).scalar_one()
        left = {}
        for name, table, col in (
            ("records", records, records.c.subject_id),
            ("consents", consents, consents.c.subject_id),
            ("data keys", subject_keys, subject_keys.c.subject_id),
            ("model links", model_subjects, model_subjects.c.subject_id),
        ):
            left[name] = conn.execute(
                select(func.count()).select_from(table.join(subjects, s.id == col)).where(s.erased_at.is_not(None))
            ).scalar_one()
        flagged = conn.execute(
            select(models.c.id, models.c.flag_reason).where(models.c.flagged_at.is_not(None)).order_by(models.c.id)
        ).all()
    items = [{"item": what, "problem": f"{n} left for erased subjects"} for what, n in left.items() if n]
    items += [{"item": f"model {mid}", "problem": f"flagged: {reason}; retrain or justify"} for mid, reason in flagged]
    evidence = {"erased_subjects": int(erased), "flagged_models": len(flagged), **{k: int(v) for k, v in left.items()}}
    if not erased and not flagged:
        return Finding(NA, "no erasures", evidence)
    if items:
        return Finding(FAIL, f"{len(items)} erasure problem(s)", evidence, items)
    return Finding(PASS, f"{erased} erasures complete; no model awaits retraining", evidence)


@check("model_privacy")
def model_privacy(ctx: AuditContext) -> Finding:
    with ctx.ws.store.read() as conn:
        rows = conn.execute(select(models).order_by(models.c.id)).all()
    if not rows:
        return Finding(NA, "no models")
    items = []
    for m in rows:
        if not m.private:
            items.append({"item": f"model {m.id}", "problem": "trained without differential privacy"})
            continue
        if m.epsilon is None or m.epsilon > ctx.epsilon_cap:
            items.append(
                {"item": f"model {m.id}", "problem": f"epsilon {m.epsilon:.3g} exceeds the cap {ctx.epsilon_cap:g}"}
            )
        if m.delta is None or (m.subjects and m.delta >= 1 / m.subjects):
            items.append({"item": f"model {m.id}", "problem": f"delta {m.delta} is not below 1/N (N = {m.subjects})"})
    evidence = {
        "models": len(rows),
        "epsilon_cap": ctx.epsilon_cap,
        "epsilons": {m.id: m.epsilon for m in rows},
    }
    if items:
        return Finding(FAIL, f"{len(items)} model(s) outside the privacy caps", evidence, items)
    return Finding(PASS, f"{len(rows)} models within epsilon {ctx.epsilon_cap:g} and delta < 1/N", evidence)


@check("federated_secagg")
def federated_secagg(ctx: AuditContext) -> Finding:
    rounds = [e for e in ctx.entries() if e.get("type") == "federated.round"]
    if not rounds:
        return Finding(NA, "no federated rounds")
    plain = [e for e in rounds if not e.get("secure_aggregation")]
    items = [
        {
            "item": f"run {e.get('run_id')} round {e.get('round')}",
            "problem": "aggregated in the clear",
            "seq": e["_seq"],
        }
        for e in plain
    ]
    evidence = {"rounds": len(rounds), "seq_range": [rounds[0]["_seq"], rounds[-1]["_seq"]]}
    if items:
        return Finding(FAIL, f"{len(items)} of {len(rounds)} rounds without secure aggregation", evidence, items)
    return Finding(PASS, f"all {len(rounds)} federated rounds used secure aggregation", evidence)


@check("known_actors")
def known_actors(ctx: AuditContext) -> Finding:
    with ctx.ws.store.read() as conn:  # the workspace owner is a principal too (seeded at init)
        known = {str(p) for p in conn.execute(select(principals.c.name)).scalars()}
    entries = ctx.entries()
    unknown = Counter(e.get("actor") for e in entries if e.get("actor") not in known)
    first = {}
    for e in entries:
        a = e.get("actor")
        if a in unknown and a not in first:
            first[a] = e["_seq"]
    items = [
        {"item": f"actor {a!r}", "problem": f"{n} entries by an unregistered principal (first at {first[a]})"}
        for a, n in unknown.items()
    ]
    evidence = {"entries": len(entries), "actors": len({e.get("actor") for e in entries})}
    if items:
        return Finding(FAIL, f"{sum(unknown.values())} entries by unknown actors", evidence, items)
    return Finding(PASS, f"all {len(entries)} entries by registered principals", evidence)


# --- running an audit --------------------------------------------------------------------------------


def run_controls(ctx: AuditContext, catalogue: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out = []
    for c in catalogue or load_catalogue():
        fn = CHECKS.get(c.get("check", ""))
        if fn is None:
            f = Finding(NOT_EVALUATED, "no automated check yet")
        else:
            f = fn(ctx)
        out.append(
            {
                "id": c["id"],
                "title": c["title"],
                "articles": c.get("articles", {}),
                "severity": c.get("severity"),
                "status": f.status,
                "summary": f.summary,
                "evidence": f.evidence,
                "items": f.items,
                "remediation": c.get("remediation") if f.status == FAIL else None,
            }
        )
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["status"] for r in results)
    return {s: counts.get(s, 0) for s in (PASS, FAIL, NA, NOT_EVALUATED)}


def generated_at(ctx: AuditContext) -> str:
    return utc_iso(ctx.now)
