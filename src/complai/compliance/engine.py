"""The compliance engine: each control in controls/catalogue.yaml that names a check is a function over
an AuditContext (the audit's services, store and ledger among them; compliance/context.py) returning
pass, fail, warning (evidence missing, not contradicted; it does not fail the audit) or not applicable,
with evidence and, for each failure or warning, the items at fault. Controls without a check are
reported as not evaluated, never as passed.

The ledger is read once per audit (entries parsed as JSON, not re-validated: LEDGER-1 verifies them)
and shared by the controls that need it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from complai.clock import as_utc, to_us, utc_iso
from complai.compliance.context import (
    FAIL,
    NA,
    NOT_EVALUATED,
    PASS,
    STATUSES,
    WARN,
    AuditContext,
    ComplianceServices,
    Finding,
    event_time,
)
from complai.compliance.dpia import status, triggers
from complai.compliance.reconcile import reconcile
from complai.compliance.ropa import incomplete, records_of_processing, special
from complai.ledger.verify import check_checkpoints
from complai.store.tables import (
    access_log,
    agreements,
    consents,
    datasets,
    external_erasures,
    ledger_cosignatures,
    model_subjects,
    models,
    objections,
    principals,
    records,
    subject_keys,
    subjects,
)
from complai.vault.schema import parse_retention
from complai.vault.service import unpack_ids

CATALOGUE = Path(__file__).parent / "controls" / "catalogue.yaml"


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
    """Inconsistency (an entry, node, head or checkpoint that does not verify) fails; evidence not yet
    there (no checkpoint, no trusted witness, a witness behind the newest checkpoint) is a warning, since
    signing or cosigning supplies it and nothing was contradicted. Items name their `cause`, which the
    catalogue's `advice` answers with the command to run."""
    ledger = ctx.svc.ledger
    report = ctx.verify()
    head = ctx.head()
    evidence: dict[str, Any] = {"ledger_size": head.size, "root": head.root.hex() if head.size else None}
    broken, missing = [], []
    if not report.ok:
        broken.append({"item": "ledger", "problem": report.problem or "verification failed", "cause": "inconsistent"})
    # every checkpoint the log recorded is stored and vice versa (also when the audit is incremental)
    for problem in check_checkpoints(ledger):
        if report.ok or problem != report.problem:
            broken.append({"item": "checkpoints", "problem": problem, "cause": "inconsistent"})
    notes = ledger.checkpoints()
    latest = max((n.checkpoint.size for n in notes), default=None)
    evidence["latest_checkpoint"] = latest
    if latest is None:
        missing.append({"item": "checkpoints", "problem": "no signed checkpoint yet", "cause": "no_checkpoint"})
    witnesses = [w.name for w in ledger.witnesses()]
    evidence["witnesses"] = witnesses
    if not witnesses:
        missing.append(
            {"item": "witnesses", "problem": "no witness is trusted to cosign checkpoints", "cause": "no_witness"}
        )
    elif latest is not None:
        with ctx.svc.store.read() as conn:
            signed = {
                str(w)
                for w in conn.execute(
                    select(ledger_cosignatures.c.witness).where(ledger_cosignatures.c.size == latest)
                ).scalars()
            }
        for w in witnesses:
            if w not in signed:
                missing.append(
                    {
                        "item": f"witness {w}",
                        "problem": f"has not cosigned the newest checkpoint (size {latest})",
                        "cause": "not_cosigned",
                    }
                )
    if broken:
        items = broken + missing
        return Finding(FAIL, f"the ledger is inconsistent: {len(broken)} problem(s)", evidence, items)
    if missing:
        return Finding(
            WARN, f"{head.size:,} entries verify; {len(missing)} piece(s) of evidence missing", evidence, missing
        )
    done = f"{head.size:,} entries verify; checkpoint at {latest:,} cosigned by {len(witnesses)}"
    return Finding(PASS, done, evidence)


def _raw_schemas(ctx: AuditContext) -> list[dict[str, Any]]:
    with ctx.svc.store.read() as conn:
        live = datasets.c.dropped_at.is_(None)  # a dropped dataset holds and declares nothing any more
        rows = conn.execute(select(datasets.c.name, datasets.c.schema_json, datasets.c.retention).where(live)).all()
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
    known = set(ctx.svc.taxonomy.keys("data_categories"))
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
    tax = ctx.svc.taxonomy
    bases = set(tax.keys("legal_bases"))
    schemas = _raw_schemas(ctx)
    if not schemas:
        return Finding(NA, "no datasets")
    items, purposes = [], 0
    for d in schemas:
        s = d["schema"]
        special_fields = [f["name"] for f in s.get("fields", []) if f.get("category") and special(tax, f["category"])]
        gdpr = str(s.get("jurisdiction", "")).upper() in ("EU", "EEA", "UK") or str(
            s.get("jurisdiction", "")
        ).startswith("EU")
        for purpose, basis in (s.get("purposes") or {}).items():
            purposes += 1
            if not basis or basis not in bases:
                items.append({"item": f"{d['name']}: {purpose}", "problem": f"no known lawful basis ({basis!r})"})
            elif special_fields and gdpr and not str(basis).startswith("gdpr.art9"):
                items.append(
                    {
                        "item": f"{d['name']}: {purpose}",
                        "problem": f"basis {basis} is not an Art. 9(2) condition, but the dataset holds special "
                        f"categories ({', '.join(special_fields[:3])})",
                    }
                )
    evidence = {"datasets": len(schemas), "purposes": purposes}
    if items:
        return Finding(FAIL, f"{len(items)} of {purposes} purposes lack a valid basis", evidence, items)
    return Finding(PASS, f"{purposes} purposes, each with a valid lawful basis", evidence)


@check("retention")
def retention(ctx: AuditContext) -> Finding:
    schemas = _raw_schemas(ctx)
    if not schemas:
        return Finding(NA, "no datasets")
    items = []
    for d in schemas:
        try:
            parse_retention(d["retention"])
        except Exception:
            items.append({"item": d["name"], "problem": f"retention {d['retention']!r} is not a typed period"})
    with ctx.svc.store.read() as conn:
        past = conn.execute(
            select(records.c.dataset, func.count(), func.min(records.c.expires_us))
            .where(records.c.expires_us <= to_us(ctx.now))
            .group_by(records.c.dataset)
        ).all()
        total = conn.execute(select(func.count()).select_from(records)).scalar_one()
    for ds, n, oldest in past:
        days = (to_us(ctx.now) - int(oldest)) / 86_400e6
        items.append({"item": ds, "problem": f"{int(n):,} records past retention (the oldest by {days:,.0f} days)"})
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
    with ctx.svc.store.read() as conn:
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
        # decryptability, not only presence: every wrapping KEK version is held, sampled keys unwrap
        keys_evidence, key_problems = ctx.svc.keyring.check_decryptable(conn)
    items = []
    if orphans:
        items.append({"item": "records", "problem": f"{orphans} records have no data key (unreadable or unencrypted)"})
    items += [{"item": "key-encryption keys", "problem": p} for p in key_problems]
    if old:
        items.append(
            {"item": "data keys", "problem": f"{old} subjects' data keys are older than {ctx.key_rotation_days} days"}
        )
    evidence = {
        "records": int(total),
        "records_without_key": int(orphans),
        "subjects_with_old_keys": int(old),
        **keys_evidence,
    }
    if items:
        return Finding(FAIL, "encryption coverage, decryptability or key age problems", evidence, items)
    return Finding(
        PASS,
        f"all {int(total):,} records under live per-subject keys younger than the rotation period; every wrapping "
        f"key-encryption key is held and {keys_evidence['deks_sampled']} sampled data keys unwrap",
        evidence,
    )


@check("erasure")
def erasure(ctx: AuditContext) -> Finding:
    s = subjects.c
    with ctx.svc.store.read() as conn:
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


@check("external_erasure")
def external_erasure(ctx: AuditContext) -> Finding:
    """Erasure requests to the owner systems of external datasets are carried out: a request whose rows
    were found still present, or not yet verified gone, after its deadline fails; one pending within it
    warns; all verified gone pass; none is not applicable."""
    e = external_erasures.c
    with ctx.svc.store.read() as conn:
        rows = conn.execute(
            select(e.id, e.dataset, e.subject, e.state, e.due_at, e.checked_at, e.exported_at).order_by(e.due_at, e.id)
        ).all()
    if not rows:
        return Finding(NA, "no erasure requests to owner systems", {"requests": 0})
    counts = Counter(str(r.state) for r in rows)
    evidence = {"requests": len(rows), **{k: int(counts.get(k, 0)) for k in ("pending", "gone", "present")}}
    late, waiting = [], []
    for r in rows:
        if r.state == "gone":
            continue
        due = as_utc(r.due_at)
        assert due is not None
        what = f"request {r.id} ({r.dataset}, subject {r.subject})"
        if r.state == "present":
            state = "its rows were still in the source at the last check"
        elif r.checked_at is None:
            state = "not yet checked" + ("" if r.exported_at is not None else " and not yet sent to the owner system")
        else:
            state = "not yet verified gone"
        if due <= ctx.now:
            late.append({"item": what, "problem": f"{state}; due {utc_iso(due)}"})
        else:
            waiting.append({"item": what, "problem": f"{state}; due {utc_iso(due)}"})
    if late:
        return Finding(FAIL, f"{len(late)} erasure request(s) to owner systems overdue", evidence, late + waiting)
    if waiting:
        return Finding(
            WARN, f"{len(waiting)} erasure request(s) to owner systems pending within their deadline", evidence, waiting
        )
    return Finding(PASS, f"all {len(rows)} erasure requests to owner systems verified carried out", evidence)


@check("model_privacy")
def model_privacy(ctx: AuditContext) -> Finding:
    with ctx.svc.store.read() as conn:
        rows = conn.execute(select(models).order_by(models.c.id)).all()
    # the registry, cards and weights as the ledger's model.trained entries bound them (dp/models.py)
    integrity = ctx.models_checked()
    if not rows and not integrity:
        return Finding(NA, "no models")
    items = [
        {"item": f"model {model_id}", "problem": problem}
        for model_id, problems in sorted(integrity.items())
        for problem in problems
    ]
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
        "integrity_checked": len(integrity),
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
    with ctx.svc.store.read() as conn:  # the workspace owner is a principal too (seeded at init)
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
        return Finding(FAIL, f"{sum(unknown.values()):,} entries by unknown actors", evidence, items)
    return Finding(PASS, f"all {len(entries):,} entries by registered principals", evidence)


@check("consent_at_access")
def consent_at_access(ctx: AuditContext) -> Finding:
    """Every subject a governed read reached had a live basis then: consent granted and not withdrawn
    at the read's time where the basis needs consent, and no objection in force (any basis)."""
    reads = {e["_seq"]: e for e in ctx.entries() if e.get("type") == "vault.read"}
    if not reads:
        return Finding(NA, "no governed reads")
    schemas = {d["name"]: d["schema"] for d in _raw_schemas(ctx)}
    tax = ctx.svc.taxonomy
    with ctx.svc.store.read() as conn:
        since = min(reads)
        log = [
            (int(seq), sid)
            for seq, blob in conn.execute(
                select(access_log.c.seq, access_log.c.subject_ids).where(access_log.c.seq >= since)
            )
            for sid in unpack_ids(blob)
        ]
        erased = {
            int(x) for x in conn.execute(select(subjects.c.id).where(subjects.c.erased_at.is_not(None))).scalars()
        }
        cons: dict[tuple[int, str], list[tuple[datetime, datetime | None]]] = {}
        for sid, purpose, granted, withdrawn in conn.execute(
            select(consents.c.subject_id, consents.c.purpose, consents.c.granted_at, consents.c.withdrawn_at)
        ):
            cons.setdefault((int(sid), purpose), []).append((as_utc(granted), as_utc(withdrawn) if withdrawn else None))
        objs: dict[int, list[tuple[str, datetime, datetime | None]]] = {}
        for sid, purpose, at, lifted in conn.execute(
            select(objections.c.subject_id, objections.c.purpose, objections.c.at, objections.c.lifted_at)
        ):
            objs.setdefault(int(sid), []).append((purpose, as_utc(at), as_utc(lifted) if lifted else None))
        pseudo = dict(conn.execute(select(subjects.c.id, subjects.c.pseudonym)).all())
    bad: dict[int, list[str]] = {}
    checked = 0
    needs: dict[tuple[str, str], tuple[bool, str]] = {}
    skipped = 0
    for seq, sid in log:
        e = reads.get(int(seq))
        if e is None:
            continue
        if sid in erased:  # their consent history went with them: nothing left to check against
            skipped += 1
            continue
        checked += 1
        purpose, dataset = str(e.get("purpose")), str(e.get("dataset"))  # vault.read events name both
        key = (dataset, purpose)
        if key not in needs:
            basis = (schemas.get(dataset, {}).get("purposes") or {}).get(purpose)
            try:
                needs[key] = (bool(tax.legal_basis(str(basis)).attrs.get("requires_consent")), str(basis))
            except Exception:
                needs[key] = (True, str(basis))
        consent_needed, _ = needs[key]
        at = event_time(e)
        sid = int(sid)
        problem = None
        if consent_needed and not any(g <= at and (w is None or w > at) for g, w in cons.get((sid, purpose), [])):
            problem = "no live consent"
        elif any(
            p in (purpose, "*") and a <= at and (lifted is None or lifted > at) for p, a, lifted in objs.get(sid, [])
        ):
            problem = "an objection was in force"
        if problem:
            bad.setdefault(int(seq), []).append(f"{pseudo.get(sid, sid)}: {problem}")
    items = [
        {
            "item": f"read at ledger entry {seq} ({reads[seq].get('purpose')})",
            "problem": "; ".join(v[:3]) + (f" (+{len(v) - 3} more subjects)" if len(v) > 3 else ""),
            "subjects": len(v),
        }
        for seq, v in sorted(bad.items())
    ]
    evidence = {
        "reads": len(reads),
        "subject_accesses_checked": checked,
        "accesses_of_since_erased_subjects": skipped,
        "seq_range": [min(reads), max(reads)],
    }
    if items:
        return Finding(FAIL, f"{sum(len(v) for v in bad.values()):,} accesses without a live basis", evidence, items)
    return Finding(PASS, f"{checked:,} subject accesses in {len(reads):,} reads each had a live basis", evidence)


@check("agreements_live")
def agreements_live(ctx: AuditContext) -> Finding:
    """Every share happened under an agreement that existed, was not revoked and had not expired."""
    shares = [e for e in ctx.entries() if e.get("type") == "data.shared"]
    if not shares:
        return Finding(NA, "no shares")
    with ctx.svc.store.read() as conn:
        rows = {
            r.id: r
            for r in conn.execute(select(agreements.c.id, agreements.c.expires_at, agreements.c.revoked_at)).all()
        }
    items = []
    for e in shares:
        at = event_time(e)
        a = rows.get(e.get("agreement"))
        if a is None:
            items.append(
                {"item": f"share at ledger entry {e['_seq']}", "problem": f"unknown agreement {e.get('agreement')}"}
            )
        elif as_utc(a.expires_at) <= at:
            items.append(
                {
                    "item": f"share at ledger entry {e['_seq']}",
                    "problem": f"agreement {a.id} had expired ({utc_iso(as_utc(a.expires_at))})",
                }
            )
        elif a.revoked_at is not None and as_utc(a.revoked_at) <= at:
            items.append(
                {"item": f"share at ledger entry {e['_seq']}", "problem": f"agreement {a.id} had been revoked"}
            )
    evidence = {"shares": len(shares), "agreements": len(rows)}
    if items:
        return Finding(FAIL, f"{len(items)} of {len(shares)} shares outside a live agreement", evidence, items)
    return Finding(PASS, f"all {len(shares)} shares under live agreements", evidence)


@check("deid_k")
def deid_k(ctx: AuditContext) -> Finding:
    """Every recorded k-anonymisation achieved the k it was asked for."""
    runs = []
    for e in ctx.entries():
        if e.get("type") == "deid.table" and e.get("k"):
            runs.append((e["_seq"], int(e["k"]), e.get("achieved_k")))
        elif e.get("type") == "vault.read" and isinstance(e.get("deidentification"), dict):
            k = e["deidentification"].get("k_anonymity")
            if isinstance(k, dict) and k.get("k") and not k.get("suppressed_all_rows"):
                runs.append((e["_seq"], int(k["k"]), k.get("achieved_k")))
    if not runs:
        return Finding(NA, "no k-anonymised outputs")
    items = [
        {"item": f"output at ledger entry {seq}", "problem": f"achieved k = {ak}, asked for {k}"}
        for seq, k, ak in runs
        if ak is None or int(ak) < k
    ]
    evidence = {"outputs": len(runs)}
    if items:
        return Finding(FAIL, f"{len(items)} de-identified outputs below their k", evidence, items)
    return Finding(PASS, f"all {len(runs)} k-anonymised outputs met their k", evidence)


@check("request_deadlines")
def request_deadlines(ctx: AuditContext) -> Finding:
    """Subject requests answered within their deadlines (and acknowledged in time where the law asks)."""
    reqs = ctx.svc.requests.list()
    if not reqs:
        return Finding(NA, "no subject requests")
    items = []
    for r in reqs:
        if r["overdue"]:
            when = "closed after" if r["closed_at"] else "still open past"
            items.append(
                {
                    "item": f"request {r['id']} ({r['type']}, {r['jurisdiction']})",
                    "problem": f"{when} its deadline {r['due_at']}",
                }
            )
        if r["acknowledgement_late"]:
            items.append({"item": f"request {r['id']}", "problem": f"not acknowledged by {r['acknowledgement_due']}"})
    open_ = [r for r in reqs if r["closed_at"] is None]
    evidence = {
        "requests": len(reqs),
        "open": len(open_),
        "overdue": sum(1 for r in reqs if r["overdue"]),
        "nearest_deadline": min((r["due_at"] for r in open_), default=None),
    }
    if items:
        return Finding(FAIL, f"{len(items)} request deadline problem(s)", evidence, items)
    return Finding(PASS, f"{len(reqs)} requests, none late", evidence)


@check("ropa_complete")
def ropa_complete(ctx: AuditContext) -> Finding:
    recs = records_of_processing(ctx.svc.store, ctx.svc.taxonomy)
    if not recs:
        return Finding(NA, "no processing declared")
    items = incomplete(recs)
    evidence = {"records_of_processing": len(recs), "datasets": len({r["dataset"] for r in recs})}
    if items:
        return Finding(FAIL, f"{len(items)} of {len(recs)} records of processing incomplete", evidence, items)
    return Finding(PASS, f"{len(recs)} records of processing, each complete", evidence)


@check("incidents_notified")
def incidents_notified(ctx: AuditContext) -> Finding:
    found = ctx.svc.incidents.list()
    if not found:
        return Finding(NA, "no incidents")
    items = [
        {
            "item": f"incident {i['id']} ({i['kind']})",
            "problem": f"not notified by {i['notify_by']}"
            if not i["notified_at"]
            else f"notified {i['notified_at']}, after {i['notify_by']}",
        }
        for i in found
        if i["late"]
    ]
    evidence = {"incidents": len(found), "open": sum(1 for i in found if not i["closed_at"])}
    if items:
        return Finding(FAIL, f"{len(items)} incident(s) notified late or not at all", evidence, items)
    return Finding(PASS, f"{len(found)} incidents, none past its 72-hour notification deadline", evidence)


@check("dpia_current")
def dpia_current(ctx: AuditContext) -> Finding:
    needed = {name: triggers(ctx.svc, name) for name in ctx.svc.catalog.names()}
    needed = {k: v for k, v in needed.items() if v}
    if not needed:
        return Finding(NA, "no dataset triggers a DPIA")
    items = []
    for name, why in sorted(needed.items()):
        st = status(ctx.svc, name)
        if not st["current"]:
            items.append({"item": name, "problem": f"{st['why']} (required for {'; '.join(why)})"})
    evidence = {"datasets_requiring_dpia": len(needed)}
    if items:
        return Finding(FAIL, f"{len(items)} of {len(needed)} datasets lack a current DPIA", evidence, items)
    return Finding(PASS, f"a current, signed DPIA for each of {len(needed)} datasets that need one", evidence)


@check("transfers_mechanism")
def transfers_mechanism(ctx: AuditContext) -> Finding:
    """Agreements sending data to another jurisdiction record a transfer mechanism; agreements that do
    not say where their recipient is cannot be shown compliant."""
    with ctx.svc.store.read() as conn:
        rows = conn.execute(
            select(
                agreements.c.id,
                agreements.c.dataset,
                agreements.c.recipient_jurisdiction,
                agreements.c.transfer_mechanism,
                datasets.c.jurisdiction,
            ).select_from(agreements.join(datasets, datasets.c.name == agreements.c.dataset))
        ).all()
    if not rows:
        return Finding(NA, "no sharing agreements")
    items, transfers = [], 0
    for aid, _dataset, where, mechanism, home in rows:
        if where is None:
            items.append({"item": f"agreement {aid}", "problem": "the recipient's jurisdiction is not recorded"})
        elif where != home:
            transfers += 1
            if not mechanism:
                items.append({"item": f"agreement {aid}", "problem": f"transfer {home} -> {where} without a mechanism"})
    evidence = {"agreements": len(rows), "transfers": transfers}
    if items:
        return Finding(FAIL, f"{len(items)} agreement(s) without a recorded transfer basis", evidence, items)
    return Finding(PASS, f"{len(rows)} agreements; {transfers} transfers, each with a mechanism", evidence)


@check("minimisation")
def minimisation(ctx: AuditContext) -> Finding:
    """Fields each governed read returned stay within the categories its purpose may use (declared in
    the taxonomy's data uses)."""
    tax = ctx.svc.taxonomy
    allowed: dict[str, list[str] | None] = {}
    fields: dict[str, dict[str, str]] = {
        d["name"]: {f["name"]: f.get("category", "") for f in d["schema"].get("fields", [])} for d in _raw_schemas(ctx)
    }
    items, checked = [], 0
    for e in ctx.entries():
        if e.get("type") != "vault.read":
            continue
        purpose = str(e.get("purpose"))
        if purpose not in allowed:
            try:
                allowed[purpose] = tax.purpose(purpose).attrs.get("categories")
            except Exception:
                allowed[purpose] = None
        cats = allowed[purpose]
        if not cats:
            continue
        checked += 1
        for col in e.get("columns", []):
            cat = fields.get(str(e.get("dataset")), {}).get(col)
            if cat is None:
                continue
            if not any(tax.within(cat, a) for a in cats):
                items.append(
                    {
                        "item": f"read at ledger entry {e['_seq']} ({purpose})",
                        "problem": f"field {e.get('dataset')}.{col} ({cat}) is outside the purpose's categories",
                    }
                )
    if not checked:
        return Finding(NA, "no read under a purpose that declares its categories")
    evidence = {"reads_checked": checked, "purposes_with_categories": sorted(p for p, c in allowed.items() if c)}
    if items:
        return Finding(FAIL, f"{len(items)} field(s) read beyond their purpose", evidence, items)
    return Finding(PASS, f"{checked:,} reads stayed within their purposes' categories", evidence)


@check("reconciliation")
def reconciliation(ctx: AuditContext) -> Finding:
    """The store's state against what the ledger says it must be (compliance/reconcile.py): record
    counts per dataset and subject, record versions and expiry, key versions, budgets, models,
    checkpoints. Every divergence is named."""
    found, areas = reconcile(ctx)
    items = [{"item": area, "problem": problem} for area, problem in found]
    evidence = {"reconciled": areas, "divergences": len(items), **ctx.reconcile_evidence}
    if items:
        return Finding(FAIL, f"{len(items)} divergence(s) between the store and the ledger", evidence, items)
    return Finding(PASS, f"the store agrees with the ledger ({', '.join(areas) or 'nothing to reconcile'})", evidence)


# --- running an audit --------------------------------------------------------------------------------


def run_controls(ctx: AuditContext, catalogue: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each control's result, in catalogue order. A failure carries the control's remediation; an item
    whose check named its `cause` carries the catalogue's advice for that cause."""
    out = []
    for c in catalogue or load_catalogue():
        fn = CHECKS.get(c.get("check", ""))
        if fn is None:
            f = Finding(NOT_EVALUATED, "no automated check yet")
        else:
            f = fn(ctx)
        advice = c.get("advice") or {}
        items = [{**i, "advice": advice[i["cause"]]} if i.get("cause") in advice else i for i in f.items]
        out.append(
            {
                "id": c["id"],
                "title": c["title"],
                "articles": c.get("articles", {}),
                "severity": c.get("severity"),
                "status": f.status,
                "summary": f.summary,
                "evidence": f.evidence,
                "items": items,
                "remediation": c.get("remediation") if f.status == FAIL else None,
            }
        )
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, int]:
    """Controls per status; a warning does not fail an audit, a failure does."""
    counts = Counter(r["status"] for r in results)
    return {s: counts.get(s, 0) for s in STATUSES}


def generated_at(ctx: AuditContext) -> str:
    return utc_iso(ctx.now)


def assess(svc: ComplianceServices, now: datetime, controls: Collection[str]) -> list[dict[str, Any]]:
    """The named controls' results at `now` (a DPIA's risk assessment runs the controls it cites)."""
    ctx = AuditContext(svc, now)
    return run_controls(ctx, [c for c in load_catalogue() if c["id"] in controls])
