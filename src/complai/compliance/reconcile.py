"""Reconciliation of the store's state with the ledger (control RECON-1).

The ledger is the authority; tables are state derived from it that someone with access to the
database could edit at rest. Each reconciler derives what one part of the store must hold from the
ledger's events, compares it with what the store does hold, and returns one line per divergence
(empty when they agree). The control fails when any reconciler names a divergence.

Contract: a reconciler is `def reconcile_x(ctx: AuditContext) -> list[str]`, listed in RECONCILERS.
A divergence line names the item (dataset, subject pseudonym, record id, key version, ...) and what is
wrong; it never carries personal data or exact values from a differential-privacy path. Reconcilers
read the whole ledger (`AuditContext.events`), also in incremental audits: state is checked in full.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, exists, func, select

from complai.access.agreements import agreement_terms_digest
from complai.access.identity import token_secret_digest
from complai.clock import as_utc, from_us, to_us, utc_iso
from complai.compliance.context import AuditContext, event_time
from complai.crypto.digest import digest_text
from complai.dp.budget import BUDGET_KINDS, charged, divergence, replay
from complai.errors import IntegrityError
from complai.ledger.verify import check_checkpoints
from complai.store.tables import (
    access_log,
    agreements,
    consents,
    dataset_versions,
    datasets,
    dp_budgets,
    dp_spends,
    external_erasures,
    external_sources,
    external_subjects,
    objections,
    policy_rules,
    principals,
    records,
    role_grants,
    subject_keys,
    subjects,
    tokens,
)
from complai.vault.catalog import ExternalSource
from complai.vault.external import link_element, links_digest, source_differences, source_record
from complai.vault.records import RecordSet, add_consent, consent_element, open_record
from complai.vault.schema import DatasetSchema, retention_deadline
from complai.vault.service import set_digest, unpack_ids

Reconciler = Callable[[AuditContext], list[str]]

CHUNK = 5000
LIMIT = 50  # divergences of one kind listed by name; the rest are counted
AUTH_SAMPLE = 2000  # records an incremental audit authenticates (a full audit: all)


class _Lines:
    """Divergence lines of one kind: the first LIMIT by name, then a count of the rest."""

    def __init__(self, out: list[str], what: str) -> None:
        self.out, self.what, self.n = out, what, 0

    def add(self, line: str) -> None:
        self.n += 1
        if self.n <= LIMIT:
            self.out.append(line)

    def close(self) -> None:
        if self.n > LIMIT:
            self.out.append(f"... and {self.n - LIMIT} more {self.what}")


def _event_us(ev: dict[str, Any]) -> int:
    """A ledger event's time in microseconds since the epoch, as records and consents store times."""
    return to_us(event_time(ev))


def _parse_set(text: Any) -> RecordSet | None:
    try:
        return RecordSet.parse(text)
    except ValueError:
        return None


def _schema_versions(ctx: AuditContext) -> dict[str, dict[int, dict[str, Any]]]:
    """dataset -> schema version -> the event that made it (dataset.registered for version 1, then each
    dataset.altered), in ledger order."""
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for ev in ctx.events("dataset.registered", "dataset.altered"):
        ds = str(ev.get("dataset"))
        version = 1 if ev.get("type") == "dataset.registered" else int(ev.get("version") or 0)
        out[ds].setdefault(version, ev)
    return out


def reconcile_datasets(ctx: AuditContext) -> list[str]:
    """Each stored dataset as the ledger left it: its schema (by digest), retention, jurisdiction and
    purposes as its latest dataset.registered or dataset.altered event recorded them; every stored schema
    version with the digest the ledger recorded for it (and a text that still has that digest); dropped
    exactly when a dataset.dropped event says so; no dataset the ledger never registered."""
    out: list[str] = []
    history = _schema_versions(ctx)
    dropped = {str(ev.get("dataset")): ev for ev in ctx.events("dataset.dropped")}
    with ctx.svc.store.read() as conn:
        rows = conn.execute(
            select(
                datasets.c.name,
                datasets.c.schema_json,
                datasets.c.retention,
                datasets.c.jurisdiction,
                datasets.c.purposes_json,
                datasets.c.schema_digest,
                datasets.c.version,
                datasets.c.dropped_at,
            )
        ).all()
        stored_versions: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)
        v = dataset_versions.c
        for ds, version, text, sdig in conn.execute(select(v.dataset, v.version, v.schema_json, v.schema_digest)):
            stored_versions[str(ds)][int(version)] = (str(text), str(sdig))
    for name, schema_json, retention, jurisdiction, purposes_json, schema_digest, version, dropped_at in rows:
        versions = history.get(str(name))
        if not versions:
            out.append(f"dataset {name}: stored, but the ledger never registered it")
            continue
        latest = max(versions)
        ev = versions[latest]
        where = f"{'registered' if latest == 1 else 'altered'} at ledger entry {ev['_seq']}"
        if int(version) != latest:
            out.append(f"dataset {name}: schema version {version} stored, the ledger's latest is {latest}")
        for n, (text, sdig) in sorted(stored_versions.get(str(name), {}).items()):
            recorded = versions.get(n)
            if recorded is None:
                out.append(f"dataset {name}: stores schema version {n}, which the ledger never recorded")
            elif sdig != recorded.get("schema_digest") or digest_text(text) != sdig:
                out.append(f"dataset {name}: its stored schema version {n} is not the one the ledger recorded")
        for n in sorted(set(versions) - set(stored_versions.get(str(name), {}))):
            out.append(f"dataset {name}: schema version {n} (ledger entry {versions[n]['_seq']}) is missing")
        if (dropped_at is not None) != (str(name) in dropped):
            out.append(
                f"dataset {name}: marked dropped, but the ledger records no drop of it"
                if dropped_at is not None
                else f"dataset {name}: dropped at ledger entry {dropped[str(name)]['_seq']}, but live in the store"
            )
        try:
            schema = DatasetSchema.model_validate_json(schema_json)
            stored = schema.digest()
        except Exception:
            out.append(f"dataset {name}: its stored schema is unreadable")
            continue
        if stored != ev.get("schema_digest") or schema_digest != ev.get("schema_digest"):
            out.append(f"dataset {name}: its stored schema is not the one {where}")
        if retention != ev.get("retention") or schema.retention != ev.get("retention"):
            out.append(f"dataset {name}: retention {retention!r} stored, {ev.get('retention')!r} {where}")
        if jurisdiction != ev.get("jurisdiction"):
            out.append(f"dataset {name}: jurisdiction {jurisdiction!r} stored, {ev.get('jurisdiction')!r} {where}")
        try:
            purposes = json.loads(purposes_json)
        except ValueError:
            purposes = None
        if dict(schema.purposes) != ev.get("purposes") or purposes != ev.get("purposes"):
            out.append(f"dataset {name}: its stored purposes are not the ones {where}")
    return out


def reconcile_records(ctx: AuditContext) -> list[str]:
    """Records per dataset and subject: what ingests stored, less what erasures, retention sweeps and
    superseding or replacing ingests deleted (counts and record-set hashes from their events), against
    the records table; every live subject holds records (subjects left without any are shredded), but
    for as many as the latest replacing ingest left without; a record a rectification rewrote is still
    there unless its subject was erased or its dataset swept or replaced since."""
    out: list[str] = []
    events = ctx.events("vault.ingested", "subject.erased", "retention.swept", "dataset.dropped")
    count: Counter[str] = Counter()
    sets: dict[str, RecordSet] = defaultdict(RecordSet)
    unhashed: set[str] = set()  # datasets with an event from before record-set hashes were recorded
    unattributed = 0  # records deleted by erasures recorded before they named datasets
    swept_at: dict[str, int] = {}
    left_empty: int | None = None  # live subjects without records after the latest ingest that removed some
    for ev in events:
        t = ev.get("type")
        if t == "vault.ingested":
            ds = str(ev.get("dataset"))
            count[ds] += int(ev.get("rows") or 0)
            rs = _parse_set(ev.get("records_digest"))
            if rs is None:
                unhashed.add(ds)
            else:
                sets[ds] = sets[ds] + rs
            removed = int(ev.get("removed_records") or 0)
            if removed:  # records an upsert superseded or a replace deleted
                count[ds] -= removed
                swept_at[ds] = ev["_seq"]
                gone = _parse_set(ev.get("removed_digest"))
                if gone is None:
                    unhashed.add(ds)
                else:
                    sets[ds] = sets[ds] - gone
            if ev.get("subjects_without_records") is not None:
                left_empty = int(ev["subjects_without_records"])
        elif t == "subject.erased":
            by_ds = ev.get("records_by_dataset")
            if by_ds is None:
                unattributed += int(ev.get("records") or 0)
                continue
            digests = ev.get("records_digests") or {}
            for ds, n in by_ds.items():
                count[ds] -= int(n)
                rs = _parse_set(digests.get(ds))
                if rs is None:
                    unhashed.add(ds)
                else:
                    sets[ds] = sets[ds] - rs
        elif t == "dataset.dropped":
            ds = str(ev.get("dataset"))
            count[ds] -= int(ev.get("records") or 0)
            swept_at[ds] = ev["_seq"]
            rs = _parse_set(ev.get("records_digest"))
            if rs is None:
                unhashed.add(ds)
            else:
                sets[ds] = sets[ds] - rs
        elif t == "retention.swept":
            digests = ev.get("records_digests")
            for ds, n in (ev.get("by_dataset") or {}).items():
                count[ds] -= int(n)
                swept_at[ds] = ev["_seq"]
                rs = _parse_set((digests or {}).get(ds))
                if rs is None:
                    unhashed.add(ds)
                else:
                    sets[ds] = sets[ds] - rs
    stored: Counter[str] = Counter()
    stored_sets: dict[str, RecordSet] = defaultdict(RecordSet)
    present: set[str] = set()
    r, s = records.c, subjects.c
    with ctx.svc.store.read() as conn:
        q = select(r.dataset, s.pseudonym, r.rid).join_from(records, subjects, s.id == r.subject_id)
        for ds, pseudonym, rid in conn.execute(q):
            ds, rid = str(ds), bytes(rid)
            stored[ds] += 1
            stored_sets[ds].add(ds, str(pseudonym), rid)
            present.add(rid.hex())
        empty = list(
            conn.execute(
                select(s.pseudonym)
                .where(
                    s.erased_at.is_(None),
                    ~exists().where(r.subject_id == s.id),
                    ~exists().where(external_subjects.c.subject_id == s.id),  # held in an external dataset
                )
                .order_by(s.pseudonym)
            ).scalars()
        )
        erased = set(conn.execute(select(s.pseudonym).where(s.erased_at.is_not(None))).scalars())
    if unattributed:
        want, have = sum(count.values()) - unattributed, sum(stored.values())
        if want != have:
            out.append(f"all datasets: {have} records stored, the ledger accounts for {want}")
    else:
        for ds in sorted(set(count) | set(stored)):
            if stored[ds] != count[ds]:
                out.append(f"dataset {ds}: {stored[ds]} records stored, the ledger accounts for {count[ds]}")
            elif ds not in unhashed and stored_sets[ds] != sets[ds]:
                out.append(f"dataset {ds}: the stored records are not the ones the ledger accounts for")
    lines = _Lines(out, "live subjects without records")
    if left_empty is not None and len(empty) <= left_empty:
        empty = []  # left by upserts and replacements, which keep subjects (none can be added since)
    elif left_empty is not None:
        out.append(
            f"subjects: {len(empty)} live subjects hold no records, the ledger's latest replacing ingest left "
            f"{left_empty}"
        )
    for p in empty:
        lines.add(f"subject {p}: holds no records but was neither erased nor shredded by a retention sweep")
    lines.close()
    lines = _Lines(out, "rectified records missing")
    for rid, (ds, pseudonym, seq) in sorted(_rectified(ctx).items()):
        if rid not in present and pseudonym not in erased and swept_at.get(ds, -1) < seq:
            lines.add(f"record {rid} of {pseudonym} in {ds} (rectified at ledger entry {seq}) is missing")
    lines.close()
    return out


def reconcile_subjects(ctx: AuditContext) -> list[str]:
    """Subjects as the ledger made them: as many as ingests created; erased exactly those an erasure
    names, plus as many as retention sweeps shredded; none an erasure names is live again."""
    out: list[str] = []
    created, shredded = 0, 0
    erased_at: dict[str, int] = {}
    for ev in ctx.events("vault.ingested", "external.enrolled", "subject.erased", "retention.swept", "dataset.dropped"):
        t = ev.get("type")
        if t in ("vault.ingested", "external.enrolled"):
            created += int(ev.get("new_subjects") or 0)
        elif t == "subject.erased":
            erased_at.setdefault(str(ev.get("subject")), ev["_seq"])
        elif t in ("retention.swept", "dataset.dropped"):
            shredded += int(ev.get("subjects_shredded") or 0)
    s = subjects.c
    with ctx.svc.store.read() as conn:
        stored = {str(p): e is not None for p, e in conn.execute(select(s.pseudonym, s.erased_at))}
    if len(stored) != created:
        out.append(f"subjects: {len(stored)} stored, the ledger's ingests created {created}")
    revived = _Lines(out, "erased subjects live again")
    for p, seq in sorted(erased_at.items(), key=lambda x: x[1]):
        if stored.get(p) is False:
            revived.add(f"subject {p}: erased at ledger entry {seq}, but live in the store")
    revived.close()
    unexplained = sorted(p for p, erased in stored.items() if erased and p not in erased_at)
    if len(unexplained) != shredded:
        if shredded == 0:
            lines = _Lines(out, "subjects marked erased without an erasure")
            for p in unexplained:
                lines.add(f"subject {p}: marked erased, but the ledger records no erasure or shredding of it")
            lines.close()
        else:
            out.append(
                f"subjects: {len(unexplained)} marked erased without an erasure event, the ledger's retention "
                f"sweeps shredded {shredded}"
            )
    return out


def reconcile_access_log(ctx: AuditContext) -> list[str]:
    """The access log CONSENT-1 checks, against the reads it records: one row per governed read, naming
    exactly the subjects whose set digest the read's ledger entry holds (reads recorded before the access
    log existed, revision 0007, have no row)."""
    out: list[str] = []
    legacy = max(
        (
            ev["_seq"]
            for ev in ctx.events("store.migrated")
            if ev.get("from_revision") is not None and str(ev.get("from_revision")) < "0007"
        ),
        default=-1,
    )
    reads = {ev["_seq"]: ev for ev in ctx.events("vault.read") if ev["_seq"] > legacy}
    with ctx.svc.store.read() as conn:
        rows = {int(seq): bytes(blob) for seq, blob in conn.execute(select(access_log.c.seq, access_log.c.subject_ids))}
        pseudonym = {int(i): str(p) for i, p in conn.execute(select(subjects.c.id, subjects.c.pseudonym))}
    lines = _Lines(out, "reads whose access-log rows disagree with the ledger")
    for seq, ev in sorted(reads.items()):
        blob = rows.get(seq)
        if blob is None:
            lines.add(f"read at ledger entry {seq}: its access-log row is missing")
            continue
        ids = unpack_ids(blob)
        if set_digest(pseudonym.get(i, f"unknown subject {i}") for i in ids) != ev.get("subjects_digest"):
            lines.add(
                f"read at ledger entry {seq}: the access log names {len(ids)} subjects, not the "
                f"{ev.get('subjects')} the read reached"
                if len(ids) != ev.get("subjects")
                else f"read at ledger entry {seq}: the access log names other subjects than the read reached"
            )
    for seq in sorted(set(rows) - set(reads)):
        if seq > legacy:
            lines.add(f"access-log row at ledger entry {seq}: no governed read was recorded there")
    lines.close()
    return out


def reconcile_consents(ctx: AuditContext) -> list[str]:
    """The consents CONSENT-1 checks, against the ledger: those ingests and grants stored, less those
    erasures and retention sweeps deleted, and the withdrawals made (multiset hashes their events
    record; a grant's consent is its event). Workspaces with events from before these hashes were
    recorded are not reconciled here."""
    given, withdrawn = RecordSet(), RecordSet()
    kinds = (
        "vault.ingested",
        "external.enrolled",
        "consent.granted",
        "consent.withdrawn",
        "subject.erased",
        "retention.swept",
    )
    for ev in ctx.events(*kinds, "dataset.dropped"):
        t = ev.get("type")
        if t == "consent.granted":
            at = _event_us(ev)
            given.add_element(
                consent_element(
                    str(ev.get("subject")),
                    str(ev.get("for_purpose")),
                    str(ev.get("basis")),
                    at,
                    str(ev.get("notice_version")),
                    str(ev.get("source")),
                )
            )
            continue
        g, w = _parse_set(ev.get("consents_digest")), _parse_set(ev.get("withdrawals_digest"))
        if t == "consent.withdrawn":
            if w is None:
                return []  # from before withdrawals were hashed
            withdrawn = withdrawn + w
            continue
        if g is None or w is None:
            if (t == "retention.swept" and ev.get("subjects_shredded")) or (
                t != "retention.swept" and ev.get("consents")
            ):
                return []  # consents stored or deleted before they were hashed
            continue
        if t in ("vault.ingested", "external.enrolled"):
            given, withdrawn = given + g, withdrawn + w
        else:
            given, withdrawn = given - g, withdrawn - w
    stored_given, stored_withdrawn = RecordSet(), RecordSet()
    c = consents.c
    n = 0
    with ctx.svc.store.read() as conn:
        q = select(subjects.c.pseudonym, c.purpose, c.basis, c.granted_at, c.withdrawn_at, c.notice_version, c.source)
        for row in conn.execute(q.join_from(consents, subjects, subjects.c.id == c.subject_id)).mappings():
            n += 1
            add_consent(stored_given, stored_withdrawn, str(row["pseudonym"]), row)
    out = []
    if stored_given != given:
        out.append(f"consents: the {n} stored consents are not the ones the ledger's ingests and grants recorded")
    if stored_withdrawn != withdrawn:
        out.append("consents: the stored withdrawals are not the ones the ledger recorded")
    return out


def reconcile_external(ctx: AuditContext) -> list[str]:
    """External datasets as their events left them: each stored source (kind, location, owner, owner
    key, erasure days, time column, physical types) the one its registration recorded; per dataset, as
    many enrolled subjects as its enrolments linked less those erasures unlinked (one request each), and
    the very links: the multiset of (dataset, pseudonym, link) stored equal to what its enrolments
    stored (`links_set`) less what its erasure requests unlinked, so a link moved to another subject,
    replaced or added at rest is named; no stored link is the link of an erasure request (an erased
    subject is never linked again); every erasure request row is one its erasure's event names, for the
    subject it names, and one that event names is not missing; a request checked names the check's
    ledger entry."""
    out: list[str] = []
    linked: Counter[str] = Counter()
    sets: dict[str, RecordSet] = defaultdict(RecordSet)
    unbound: set[str] = set()  # datasets with an enrolment recorded before links_set was
    enrolments: dict[str, list[tuple[int, int, str]]] = defaultdict(list)  # (time, subjects, links_digest)
    named: dict[str, tuple[int, str]] = {}
    checks: set[int] = set()
    dropped: set[str] = set()
    registered: dict[str, dict[str, Any] | None] = {}
    for ev in ctx.events(
        "dataset.registered", "external.enrolled", "subject.erased", "external.erasure_checked", "dataset.dropped"
    ):
        t = ev.get("type")
        if t == "dataset.registered":
            src = ev.get("source")
            registered.setdefault(str(ev.get("dataset")), dict(src) if isinstance(src, dict) else None)
        elif t == "dataset.dropped":
            dropped.add(str(ev.get("dataset")))
        elif t == "external.enrolled":
            ds = str(ev.get("dataset"))
            linked[ds] += int(ev.get("subjects") or 0)
            enrolments[ds].append((_event_us(ev), int(ev.get("subjects") or 0), str(ev.get("links_digest"))))
            enrolled = _parse_set(ev.get("links_set"))
            if enrolled is None:
                unbound.add(ds)
            else:
                sets[ds] += enrolled
        elif t == "subject.erased":
            for rid in ev.get("external_requests") or []:
                named[str(rid)] = (int(ev["_seq"]), str(ev.get("subject")))
        else:
            checks.add(int(ev["_seq"]))
    x, e, src_c = external_subjects.c, external_erasures.c, external_sources.c
    with ctx.svc.store.read() as conn:
        sources = conn.execute(
            select(
                src_c.dataset,
                src_c.kind,
                src_c.location,
                src_c.owner,
                src_c.owner_key,
                src_c.erasure_days,
                src_c.time_column,
                src_c.physical_json,
            )
        ).all()
        out += _external_sources(sources, registered, dropped)
        if not linked and not named:
            return out
        stored: Counter[str] = Counter()
        stored_sets: dict[str, RecordSet] = defaultdict(RecordSet)
        stored_links: set[tuple[str, bytes]] = set()
        by_time: dict[str, dict[int, set[bytes]]] = defaultdict(lambda: defaultdict(set))
        q = select(x.dataset, subjects.c.pseudonym, x.link, x.enrolled_at).select_from(
            external_subjects.join(subjects, subjects.c.id == x.subject_id)
        )
        for ds, pseudonym, link, enrolled_at in conn.execute(q):
            stored[str(ds)] += 1
            stored_sets[str(ds)].add_element(link_element(str(ds), str(pseudonym), bytes(link)))
            stored_links.add((str(ds), bytes(link)))
            if str(ds) in unbound:
                by_time[str(ds)][to_us(_utc(enrolled_at))].add(bytes(link))
        orphans = conn.execute(
            select(x.dataset, func.count()).where(~exists().where(subjects.c.id == x.subject_id)).group_by(x.dataset)
        ).all()
        for ds, n in orphans:
            stored[str(ds)] += int(n)
        rows = conn.execute(select(e.id, e.dataset, e.subject, e.link, e.erase_seq, e.state, e.check_seq)).all()
    unlinked: Counter[str] = Counter(str(r.dataset) for r in rows)
    unlinked_sets: dict[str, RecordSet] = defaultdict(RecordSet)
    erased_links: Counter[str] = Counter()
    for r in rows:
        unlinked_sets[str(r.dataset)].add_element(link_element(str(r.dataset), str(r.subject), bytes(r.link)))
        if (str(r.dataset), bytes(r.link)) in stored_links:
            erased_links[str(r.dataset)] += 1
    for ds in sorted(set(linked) | set(stored)):
        want = 0 if ds in dropped else linked[ds] - unlinked[ds]  # a drop unlinks them all
        if stored[ds] != want:
            out.append(
                f"external dataset {ds}: {stored[ds]} subjects enrolled, the ledger's enrolments less erasures "
                f"leave {want}"
            )
        elif ds in unbound and ds not in dropped:
            requested = {bytes(r.link) for r in rows if str(r.dataset) == ds}
            if not _links_by_enrolment(enrolments[ds], by_time[ds], requested):
                out.append(
                    f"external dataset {ds}: its stored links are not the ones its enrolments stored less its "
                    "erasure requests"
                )
        elif ds not in dropped and stored_sets[ds] != sets[ds] - unlinked_sets[ds]:
            out.append(
                f"external dataset {ds}: its stored links (or the subjects they name) are not the ones its "
                "enrolments less its erasure requests leave"
            )
        if erased_links[ds]:
            out.append(
                f"external dataset {ds}: {erased_links[ds]} stored link(s) are the link of an erasure request "
                "(an erased subject's rows would be read again)"
            )
    lines = _Lines(out, "erasure requests to owner systems that disagree with the ledger")
    for r in rows:
        rid = str(r.id)
        got = named.get(rid)
        if got is None:
            lines.add(f"request {rid} ({r.dataset}): no erasure in the ledger names it")
        elif got != (int(r.erase_seq), str(r.subject)):
            lines.add(f"request {rid} ({r.dataset}): its erasure or subject is not the one the ledger names")
        if r.state in ("gone", "present") and (r.check_seq is None or int(r.check_seq) not in checks):
            lines.add(f"request {rid} ({r.dataset}): marked {r.state} without a recorded check")
    for rid in sorted(set(named) - {str(r.id) for r in rows}):
        lines.add(f"request {rid}: named by the erasure at ledger entry {named[rid][0]}, but not stored")
    lines.close()
    return out


def _links_by_enrolment(
    enrolments: list[tuple[int, int, str]], stored: dict[int, set[bytes]], requested: set[bytes]
) -> bool:
    """For enrolments recorded before their events held a multiset hash: whether the links stored, grouped
    by the time they were enrolled, have each enrolment's links digest. An enrolment whose links are all
    still stored is compared exactly; one that lost links to erasures is compared exactly when it is
    the only one (its links then are those stored less nothing plus every erasure request's link);
    otherwise (several enrolments at one instant, or several that lost links) its count alone was
    compared. False when a stored link was enrolled at a time no enrolment recorded."""
    groups: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for when, n, recorded in enrolments:
        groups[when].append((n, recorded))
    if set(stored) - set(groups):
        return False
    short = []
    for when, evs in groups.items():
        have = stored.get(when, set())
        if len(evs) > 1:
            if len(have) > sum(n for n, _ in evs):
                return False
            short.append(when)
        elif len(have) == evs[0][0]:
            if links_digest(have) != evs[0][1]:
                return False
        else:
            short.append(when)
    if len(short) == 1 and len(groups[short[0]]) == 1:
        n, want = groups[short[0]][0]
        links = stored.get(short[0], set()) | requested
        return len(links) == n and links_digest(links) == want
    return True


def _utc(when: Any) -> Any:
    aware = as_utc(when)
    assert aware is not None
    return aware


def _external_sources(rows: Any, registered: dict[str, dict[str, Any] | None], dropped: set[str]) -> list[str]:
    """Each stored external source against the source its dataset's registration event recorded."""
    out: list[str] = []
    have = set()
    for r in rows:
        ds = str(r.dataset)
        have.add(ds)
        if ds not in registered:
            continue  # reconcile_datasets names a dataset the ledger never registered
        recorded = registered[ds]
        if recorded is None:
            out.append(f"external dataset {ds}: a source is stored, but its registration recorded none")
            continue
        try:
            source = ExternalSource.model_validate(
                {
                    "kind": r.kind,
                    "location": r.location,
                    "owner": r.owner,
                    "owner_key": r.owner_key,
                    "erasure_days": int(r.erasure_days),
                    "time_column": r.time_column,
                }
            )
        except (ValueError, TypeError):
            out.append(f"external dataset {ds}: its stored source is unreadable")
            continue
        differ = source_differences(recorded, source_record(source, str(r.physical_json)))
        if differ:
            out.append(
                f"external dataset {ds}: its stored source ({', '.join(differ)}) is not the one its registration "
                "recorded"
            )
    for ds, recorded in sorted(registered.items()):
        if recorded is not None and ds not in have and ds not in dropped:
            out.append(f"external dataset {ds}: its registration recorded a source, none is stored")
    return out


def reconcile_objections(ctx: AuditContext) -> list[str]:
    """Objections and restrictions, which governed reads and CONSENT-1 obey, as their events left them:
    each live subject holds exactly the objections its subject.objected entries recorded (none is ever
    lifted), and is restricted exactly when its latest subject.restricted entry says so."""
    out: list[str] = []
    s, o = subjects.c, objections.c
    with ctx.svc.store.read() as conn:
        live = {
            str(p): restricted is not None
            for p, restricted in conn.execute(select(s.pseudonym, s.restricted_at).where(s.erased_at.is_(None)))
        }
        stored: Counter[tuple[str, str, str, int]] = Counter()
        lifted: list[str] = []
        for p, purpose, kind, at, lifted_at in conn.execute(
            select(s.pseudonym, o.purpose, o.kind, o.at, o.lifted_at).join_from(
                objections, subjects, s.id == o.subject_id
            )
        ):
            stored[(str(p), str(purpose), str(kind), to_us(as_utc(at)))] += 1
            if lifted_at is not None:
                lifted.append(str(p))
    recorded: Counter[tuple[str, str, str, int]] = Counter()
    restricted: dict[str, tuple[bool, int]] = {}
    for ev in ctx.events("subject.objected", "subject.restricted"):
        p = str(ev.get("subject"))
        if ev.get("type") == "subject.restricted":
            restricted[p] = (bool(ev.get("restricted")), ev["_seq"])
        elif p in live:
            at = _event_us(ev)
            recorded[(p, str(ev.get("for_purpose")), str(ev.get("objection")), at)] += 1
    lines = _Lines(out, "objections that disagree with the ledger")
    for p, purpose, kind, _ in sorted((recorded - stored).elements()):
        lines.add(f"subject {p}: its {kind} to {purpose} (recorded in the ledger) is missing from the store")
    for p, purpose, kind, _ in sorted((stored - recorded).elements()):
        lines.add(f"subject {p}: holds an {kind} to {purpose} that the ledger never recorded")
    for p in sorted(set(lifted)):
        lines.add(f"subject {p}: an objection is marked lifted, but nothing lifts objections")
    lines.close()
    lines = _Lines(out, "restrictions that disagree with the ledger")
    for p, is_restricted in sorted(live.items()):
        want, seq = restricted.get(p, (False, None))
        if is_restricted != want:
            state = "restricted" if is_restricted else "not restricted"
            if seq is None:
                lines.add(f"subject {p}: {state} in the store, but the ledger records no restriction of it")
            else:
                did = "restricted it" if want else "lifted its restriction"
                lines.add(f"subject {p}: {state} in the store, but ledger entry {seq} {did}")
    lines.close()
    return out


def _rectified(ctx: AuditContext) -> dict[str, tuple[str, str, int]]:
    """record id -> (dataset, subject pseudonym, the latest rectification's ledger entry)."""
    out = {}
    for ev in ctx.events("subject.rectified"):
        for rid in ev.get("record_versions") or {}:
            out[rid] = (str(ev.get("dataset")), str(ev.get("subject")), ev["_seq"])
    return out


def reconcile_record_binding(ctx: AuditContext) -> list[str]:
    """Each record as the ledger wrote it: created at the time of an ingest of its dataset, expiring when
    the dataset's registered retention says, at the version the latest rectification listing it gave it
    (0 if none); and its ciphertext opens under its data key with the version, creation time and expiry
    stored with it (bound into its associated data). A full audit authenticates every record; an
    incremental one (which must stay fast) a random sample of AUTH_SAMPLE, besides the other checks on
    every record."""
    out: list[str] = []
    expected: dict[str, tuple[int, int]] = {}
    for ev in ctx.events("subject.rectified"):
        for rid, version in (ev.get("record_versions") or {}).items():
            expected[rid] = (int(version), ev["_seq"])
    # dataset -> ingest time -> the schema versions in force at ingests at that time
    ingested: dict[str, dict[int, set[int]]] = defaultdict(dict)
    history = _schema_versions(ctx)
    digests = {ds: {n: ev.get("schema_digest") for n, ev in vs.items()} for ds, vs in history.items()}
    retention = {ds: {n: str(ev.get("retention")) for n, ev in vs.items()} for ds, vs in history.items()}
    in_force: dict[str, int] = {}
    for ev in ctx.events("dataset.registered", "dataset.altered", "vault.ingested"):
        ds = str(ev.get("dataset"))
        if ev.get("type") == "dataset.registered":
            in_force.setdefault(ds, 1)
        elif ev.get("type") == "dataset.altered":
            in_force[ds] = int(ev.get("version") or 0)
        else:
            try:
                ingested[ds].setdefault(_event_us(ev), set()).add(in_force.get(ds, 1))
            except (KeyError, ValueError):
                continue
    failed = _Lines(out, "records that fail authentication")
    rolled = _Lines(out, "records whose version disagrees with the ledger")
    timed = _Lines(out, "records whose times disagree with the ledger")
    r, s = records.c, subjects.c
    with ctx.svc.store.read() as conn:
        total = int(conn.execute(select(func.count()).select_from(records)).scalar_one())
    share = 1.0 if not ctx.since or total <= AUTH_SAMPLE else AUTH_SAMPLE / total
    pick = random.SystemRandom()  # unpredictable to whoever edited the store
    deadlines: dict[tuple[str, int], set[int] | None] = {}
    authenticated = 0
    last: bytes | None = None
    while True:
        with ctx.svc.store.read() as conn:
            q = (
                select(
                    r.rid,
                    r.dataset,
                    r.subject_id,
                    r.dek_version,
                    r.data,
                    r.version,
                    r.created_us,
                    r.expires_us,
                    r.schema_version,
                    s.pseudonym,
                )
                .join_from(records, subjects, s.id == r.subject_id)
                .order_by(r.rid)
                .limit(CHUNK)
            )
            if last is not None:
                q = q.where(r.rid > last)
            rows = conn.execute(q).all()
            if not rows:
                break
            chosen = [row for row in rows if share >= 1.0 or pick.random() < share]
            keys, broken = _load_keys(ctx, conn, {int(row.subject_id) for row in chosen})
        last = bytes(rows[-1].rid)
        for row in rows:
            ds, rid = str(row.dataset), bytes(row.rid).hex()
            name = f"record {rid} of {row.pseudonym} in {ds}"
            if not digests.get(ds):
                failed.add(f"{name}: its dataset was never registered in the ledger")
                continue
            if not digests[ds].get(int(row.schema_version)):
                failed.add(f"{name}: its schema version {row.schema_version} was never recorded in the ledger")
                continue
            if row.version is None:
                failed.add(f"{name}: has no version (it was never re-sealed)")
                continue
            created, expires = int(row.created_us), int(row.expires_us)
            if created not in ingested[ds]:
                timed.add(f"{name}: created at a time no ingest of {ds} was recorded")
            elif (ds, created) not in deadlines:
                try:
                    deadlines[(ds, created)] = {
                        to_us(retention_deadline(from_us(created), retention[ds][n])) for n in ingested[ds][created]
                    }
                except Exception:
                    deadlines[(ds, created)] = None
            allowed = deadlines.get((ds, created))
            if created in ingested[ds] and allowed is not None and expires not in allowed:
                timed.add(f"{name}: expires {utc_iso(from_us(expires))}, the registered retention says otherwise")
            want, seq = expected.get(rid, (0, None))
            if int(row.version) != want:
                if seq is None:
                    rolled.add(f"{name}: version {int(row.version)}, but the ledger records no rectification of it")
                else:
                    rolled.add(
                        f"{name}: version {int(row.version)}, but the rectification at ledger entry {seq} made it "
                        f"{want} (rolled back)"
                    )
        for row in chosen:
            ds, rid = str(row.dataset), bytes(row.rid).hex()
            name = f"record {rid} of {row.pseudonym} in {ds}"
            sdig = digests.get(ds, {}).get(int(row.schema_version))
            if not sdig or row.version is None:
                continue  # named above
            authenticated += 1
            key = keys.get(int(row.subject_id), {}).get(int(row.dek_version))
            if int(row.subject_id) in broken:
                failed.add(f"{name}: its subject's data keys do not unwrap under the KEK versions recorded for them")
            elif key is None:
                failed.add(f"{name}: its data key (version {int(row.dek_version)}) is missing")
            else:
                try:
                    open_record(key, ds, str(sdig), row, values=False)
                except IntegrityError:
                    failed.add(f"{name}: fails authentication (ciphertext, version, creation time or expiry changed)")
    failed.close()
    rolled.close()
    timed.close()
    ctx.reconcile_evidence.update({"records": total, "records_authenticated": authenticated})
    return out


def _load_keys(ctx: AuditContext, conn: Connection, ids: set[int]) -> tuple[dict[int, dict[int, Any]], set[int]]:
    """The subjects' data keys; subjects whose keys do not unwrap are returned apart, not raised."""
    try:
        return ctx.svc.keyring.load(conn, ids), set()
    except IntegrityError:
        keys, broken = {}, set()
        for sid in ids:
            try:
                keys.update(ctx.svc.keyring.load(conn, [sid]))
            except IntegrityError:
                broken.add(sid)
        return keys, broken


def reconcile_key_versions(ctx: AuditContext) -> list[str]:
    """KEK versions: those the ledger says exist (the first, and each rotation's new version, less the
    ones rotations retired) against the key file, and against the versions data keys are wrapped under."""
    out: list[str] = []
    live, retired_at, created_at = {1}, {}, {1: 0}
    for ev in ctx.events("keys.rotated"):
        new = int(ev.get("to_version") or 0)
        if new and new not in retired_at:
            live.add(new)
            created_at.setdefault(new, ev["_seq"])
        for v in ev.get("retired") or []:
            live.discard(int(v))
            retired_at[int(v)] = ev["_seq"]
    provider = ctx.svc.keyring.provider
    if hasattr(provider, "refresh"):  # another process may have rotated since this workspace opened
        provider.refresh()
    in_file = set(provider.versions())
    current = provider.current_version()
    for v in sorted(live - in_file):
        out.append(f"KEK version {v}: live according to the ledger (entry {created_at[v]}) but not in keys/kek.json")
    k = subject_keys.c
    with ctx.svc.store.read() as conn:
        used = Counter(
            {
                int(v): int(n)
                for v, n in conn.execute(
                    select(k.kek_version, func.count(func.distinct(k.subject_id))).group_by(k.kek_version)
                )
            }
        )
    for v, n in sorted(used.items()):
        if v in retired_at:
            out.append(
                f"KEK version {v}: wraps data keys of {n} subjects, but the ledger retired it at entry {retired_at[v]}"
            )
        elif v not in live and not (v == current and v > max(live)):  # a rotation in progress is not recorded yet
            out.append(f"KEK version {v}: wraps data keys of {n} subjects, but the ledger never recorded its creation")
    return out


def reconcile_budgets(ctx: AuditContext) -> list[str]:
    """Privacy budgets: each dp_budgets row (totals and what was spent) as the ledger's dp.budget_set
    and spend events (dp.query, dp.spent) derive it, no row the ledger never set and no set budget
    without its row; dp_spends holds one row per spend event, with its costs."""
    out: list[str] = []
    events = ctx.events(*BUDGET_KINDS)
    try:
        derived = replay({}, ((ev["_seq"], str(ev.get("type")), ev) for ev in events))
    except (IntegrityError, KeyError, TypeError, ValueError) as exc:
        return [f"privacy budgets: the ledger's budget events cannot be replayed ({exc})"]
    with ctx.svc.store.read() as conn:
        rows = conn.execute(select(dp_budgets).order_by(dp_budgets.c.dataset, dp_budgets.c.principal)).all()
        spends = conn.execute(
            select(
                dp_spends.c.dataset,
                dp_spends.c.principal,
                func.count(),
                func.sum(dp_spends.c.rho),
                func.sum(dp_spends.c.eps),
                func.sum(dp_spends.c.delta),
            ).group_by(dp_spends.c.dataset, dp_spends.c.principal)
        ).all()
    seen = set()
    for row in rows:
        key = (str(row.dataset), str(row.principal))
        seen.add(key)
        problem = divergence(row, derived.get(key))
        if problem is not None:
            out.append(problem)
    for dataset, principal in sorted(set(derived) - seen):
        out.append(f"privacy budget {dataset}/{principal}: set in the ledger but missing from the store")
    want: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for ev in events:
        spent = charged(str(ev.get("type")), ev)
        if spent is not None:
            dataset, actor, (rho, eps, a_eps, a_delta) = spent
            w = want[(dataset, actor)]
            w[0] += 1
            w[1] += rho
            w[2] += eps + a_eps
            w[3] += a_delta
    have = {(str(d), str(p)): [int(n), float(r or 0), float(e or 0), float(dl or 0)] for d, p, n, r, e, dl in spends}
    for key in sorted(set(want) | set(have)):
        w, h = want.get(key, [0, 0.0, 0.0, 0.0]), have.get(key, [0, 0.0, 0.0, 0.0])
        if w[0] != h[0]:
            out.append(f"privacy spends of {key[1]} on {key[0]}: {h[0]} stored, the ledger records {w[0]}")
        elif not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15) for a, b in zip(w[1:], h[1:], strict=True)):
            out.append(f"privacy spends of {key[1]} on {key[0]}: the stored costs differ from the ledger's")
    return out


def reconcile_models(ctx: AuditContext) -> list[str]:
    """Stored models: registry row, card, card.json, card.md and weights as each model.trained entry
    bound them (digests, privacy parameters); no model without its entry and no entry without its model."""
    return [f"model {model_id}: {p}" for model_id, problems in sorted(ctx.models_checked().items()) for p in problems]


def reconcile_checkpoints(ctx: AuditContext) -> list[str]:
    """Signed checkpoints: one stored for each ledger.checkpoint entry (same size, root and log
    signature) and an entry for each stored one (ledger/verify.py)."""
    return check_checkpoints(ctx.svc.ledger)


def _when(value: Any) -> str | None:
    """A stored timestamp as the ledger writes it (UTC ISO 8601), None for none."""
    return None if value is None else utc_iso(as_utc(value))


def reconcile_access(ctx: AuditContext) -> list[str]:
    """Access-control state as the ledger derives it: principals (added, disabled), role grants, policy
    rules, tokens (principal, expiry, revocation) and sharing agreements (dataset, purpose, fields,
    expiry, use limit, uses, revocation). Each of these, edited at rest, would grant a privilege or lift
    a limit; none is trusted without its events. The owner and its role come with the workspace."""
    out: list[str] = []
    events = ctx.events(
        "principal.added",
        "principal.disabled",
        "role.changed",
        "policy.changed",
        "token.created",
        "token.revoked",
        "agreement.changed",
        "data.shared",
    )
    added: set[str] = {"owner"}
    disabled: set[str] = set()
    roles: set[tuple[str, str]] = {("owner", "owner")}
    rules: dict[int, tuple[str, ...]] = {}
    toks: dict[str, dict[str, Any]] = {}
    agrs: dict[str, dict[str, Any]] = {}
    uses: Counter[str] = Counter()
    for ev in events:
        kind = ev.get("type")
        if kind == "principal.added":
            added.add(str(ev.get("principal")))
        elif kind == "principal.disabled":
            name = str(ev.get("principal"))
            disabled.add(name)
            for tok in toks.values():
                if tok["principal"] == name:
                    tok["revoked"] = True
        elif kind == "role.changed":
            grant = (str(ev.get("principal")), str(ev.get("role")))
            if ev.get("granted"):
                roles.add(grant)
            else:
                roles.discard(grant)
        elif kind == "policy.changed":
            rule_id = int(ev.get("rule_id", -1))
            if ev.get("added"):
                rules[rule_id] = tuple(str(ev.get(k)) for k in ("subject", "domain", "action", "for_purpose", "effect"))
            else:
                rules.pop(rule_id, None)
        elif kind == "token.created":
            toks[str(ev.get("token_id"))] = {
                "principal": str(ev.get("principal")),
                "expires": ev.get("expires"),
                "secret": ev.get("secret_digest"),
                "revoked": False,
            }
        elif kind == "token.revoked" and str(ev.get("token_id")) in toks:
            toks[str(ev.get("token_id"))]["revoked"] = True
        elif kind == "agreement.changed":
            aid = str(ev.get("agreement"))
            if ev.get("change") == "created":
                agrs[aid] = {**ev, "revoked": False}
            elif aid in agrs and ev.get("change") == "revoked":
                agrs[aid]["revoked"] = True
        elif kind == "data.shared":
            uses[str(ev.get("agreement"))] = max(uses[str(ev.get("agreement"))], int(ev.get("use", 0)))
    with ctx.svc.store.read() as conn:
        p_rows = conn.execute(select(principals.c.name, principals.c.disabled_at)).all()
        g_rows = {(str(p), str(r)) for p, r in conn.execute(select(role_grants.c.principal, role_grants.c.role))}
        r_rows = conn.execute(select(policy_rules)).all()
        t_rows = conn.execute(
            select(tokens.c.id, tokens.c.principal, tokens.c.secret_hash, tokens.c.expires_at, tokens.c.revoked_at)
        ).all()
        a_rows = conn.execute(select(agreements)).all()
    lines = _Lines(out, "access-control divergences")
    stored = set()
    for name, disabled_at in p_rows:
        stored.add(str(name))
        if name not in added:
            lines.add(f"principal {name}: in the store, but the ledger never added it")
        elif (disabled_at is not None) != (name in disabled):
            state = "disabled" if disabled_at is not None else "enabled"
            said = "disabled it" if name in disabled else "never disabled it"
            lines.add(f"principal {name}: {state} in the store, but the ledger {said}")
    for name in sorted(added - stored):
        lines.add(f"principal {name}: added in the ledger, but missing from the store")
    for principal, role in sorted(g_rows - roles):
        lines.add(f"role {role} of {principal}: granted in the store, but not by the ledger")
    for principal, role in sorted(roles - g_rows):
        lines.add(f"role {role} of {principal}: granted by the ledger, but missing from the store")
    seen_rules = set()
    for r in r_rows:
        rule_id = int(r.id)
        seen_rules.add(rule_id)
        have = (str(r.subject), str(r.domain), str(r.action), str(r.purpose), str(r.effect))
        if rule_id not in rules:
            lines.add(f"policy rule {rule_id}: in the store, but the ledger never added it (or removed it)")
        elif have != rules[rule_id]:
            lines.add(
                f"policy rule {rule_id}: stored as ({', '.join(have)}), the ledger added ({', '.join(rules[rule_id])})"
            )
    for rule_id in sorted(set(rules) - seen_rules):
        lines.add(f"policy rule {rule_id}: added in the ledger, but missing from the store")
    for t in t_rows:
        tid = str(t.id)
        want = toks.get(tid)
        if want is None:
            lines.add(f"token {tid}: in the store, but the ledger never created it")
            continue
        if str(t.principal) != want["principal"]:
            lines.add(
                f"token {tid}: belongs to {t.principal} in the store, the ledger created it for {want['principal']}"
            )
        if _when(t.expires_at) != want["expires"]:
            stored_expiry, set_expiry = _when(t.expires_at) or "never", want["expires"] or "never"
            lines.add(f"token {tid}: expiry {stored_expiry} stored, the ledger set {set_expiry}")
        if want["secret"] is not None and token_secret_digest(t.secret_hash) != want["secret"]:
            lines.add(f"token {tid}: its stored secret hash is not the one the ledger recorded")
        if want["revoked"] and t.revoked_at is None:
            lines.add(f"token {tid}: revoked by the ledger, but live in the store")
        elif not want["revoked"] and t.revoked_at is not None:
            lines.add(f"token {tid}: revoked in the store, but not by the ledger")
    for a in a_rows:
        aid = str(a.id)
        want = agrs.get(aid)
        if want is None:
            lines.add(f"agreement {aid}: in the store, but the ledger never created it")
            continue
        try:
            fields = json.loads(a.fields_json)
        except ValueError:
            fields = None
        if (str(a.recipient), str(a.dataset), str(a.purpose), fields) != (
            want.get("recipient"),
            want.get("dataset"),
            want.get("for_purpose"),
            want.get("fields"),
        ):
            lines.add(f"agreement {aid}: recipient, dataset, purpose or fields differ from the ledger's")
        terms = want.get("terms_digest")
        if terms is not None and terms != agreement_terms_digest(
            a.recipient_key, a.deid_json, a.recipient_jurisdiction, a.transfer_mechanism
        ):
            lines.add(f"agreement {aid}: recipient key, de-identification or transfer terms differ from the ledger's")
        if int(a.max_uses) != int(want.get("max_uses", -1)):
            lines.add(f"agreement {aid}: at most {a.max_uses} uses stored, the ledger set {want.get('max_uses')}")
        if int(a.uses) != uses[aid]:
            lines.add(f"agreement {aid}: used {a.uses} times in the store, the ledger records {uses[aid]} use(s)")
        if _when(a.expires_at) != want.get("expires"):
            lines.add(
                f"agreement {aid}: expires {_when(a.expires_at)} in the store, the ledger set {want.get('expires')}"
            )
        if want["revoked"] and a.revoked_at is None:
            lines.add(f"agreement {aid}: revoked by the ledger, but live in the store")
        elif not want["revoked"] and a.revoked_at is not None:
            lines.add(f"agreement {aid}: revoked in the store, but not by the ledger")
    lines.close()
    return out


RECONCILERS: list[Reconciler] = [
    reconcile_datasets,
    reconcile_records,
    reconcile_subjects,
    reconcile_access_log,
    reconcile_consents,
    reconcile_objections,
    reconcile_external,
    reconcile_record_binding,
    reconcile_key_versions,
    reconcile_budgets,
    reconcile_models,
    reconcile_checkpoints,
    reconcile_access,
]


def reconcile(ctx: AuditContext) -> tuple[list[tuple[str, str]], list[str]]:
    """Run every reconciler; returns ([(reconciler area, divergence)], [areas checked])."""
    found: list[tuple[str, str]] = []
    areas = []
    for fn in RECONCILERS:
        area = fn.__name__.removeprefix("reconcile_")
        areas.append(area)
        found += [(area, d) for d in fn(ctx)]
    return found, areas
