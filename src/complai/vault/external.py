"""External datasets: datasets whose rows stay in the organisation's lake (Parquet, a catalogue table) and
are read through Spark, governed from the vault. The vault holds their subjects (identity sealed under a
per-subject key, consents, objections, erasure), each linked to the lake's rows by a keyed link:
HMAC-SHA256 of the lake's subject id under a key derived per dataset (Pseudonymizer.link_key). Which
links a purpose may reach now is the vault reads' own definition of eligibility
(Reads.subject_condition); the Spark side (vault/lake.py) keeps only the rows with those links.

An erased subject's rows are the owner system's to delete: the erasure opens a request (sealed to the
owner's X25519 key), the owner gets the requests as sealed files, and a scan of the lake checks that the
rows are gone (ERASE-2 fails when they are still there after the deadline)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import PrivateAttr
from sqlalchemy import Connection, delete, insert, select, update

from complai.clock import Clock, as_utc
from complai.crypto.digest import digest, digest_text
from complai.crypto.keyring import Keyring
from complai.crypto.pseudonym import Pseudonymizer
from complai.crypto.sealing import key_id, load_public, seal_to
from complai.errors import IntegrityError, InvalidInput, NotFound, PolicyDenied
from complai.events import AccessDenied, ErasureRequestsExported, ExternalErasureChecked, SubjectsEnrolled
from complai.files import check_output, write_private
from complai.ledger.log import Ledger
from complai.store import Store, bulk_insert
from complai.store.tables import consents, external_erasures, external_subjects, subjects
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog, DatasetInfo, ExternalSource
from complai.vault.lake import check_physical
from complai.vault.records import RecordSet, add_consent
from complai.vault.schema import DatasetSchema, load_schema
from complai.vault.subjects import Subject, Subjects, chunks, create_subjects

__all__ = [
    "EnrolResult",
    "ErasureRequest",
    "External",
    "ExternalSource",
    "link_element",
    "link_of",
    "source_differences",
    "source_record",
]

REQUEST_FORMAT = "complai-erasure-request/1"
_CONSENT_FIELDS = ("purpose", "basis", "granted_at", "withdrawn_at", "notice_version", "source")


def link_of(key: bytes, external_id: str) -> bytes:
    """An id's link under a dataset's link key: what Spark computes with F.hmac (vault/lake.py)."""
    return hmac.new(key, external_id.encode("utf-8"), hashlib.sha256).digest()


def links_digest(links: Iterable[bytes]) -> str:
    """Digest of a set of links (sorted): how events bind the links they stored or checked."""
    return digest(b"".join(sorted(set(links))))


def link_element(dataset: str, pseudonym: str, link: bytes) -> bytes:
    """A stored link as an element of the multiset hash enrolment events record (`links_set`)."""
    return b"complai/external-link/v1|%s|%s|%s" % (dataset.encode(), pseudonym.encode(), link.hex().encode())


def source_record(source: ExternalSource, physical: Mapping[str, str] | str) -> dict[str, str]:
    """What a registration event records of an external source (DatasetRegistered.source): kind, location,
    owner, the key id of the owner's key, erasure days, time column (absent when none) and the digest
    of the physical types (as stored: sorted JSON)."""
    text = physical if isinstance(physical, str) else json.dumps(dict(physical), sort_keys=True)
    out = {
        **source.public(),
        "owner_key_id": key_id(load_public(source.owner_key)),
        "erasure_days": str(source.erasure_days),
        "physical_digest": digest_text(text),
    }
    if source.time_column is not None:
        out["time_column"] = source.time_column
    return out


def source_differences(recorded: Mapping[str, Any], stored: Mapping[str, str]) -> list[str]:
    """The names of the source's parts (a `source_record`) that differ from what the ledger recorded. A
    registration recorded before the owner key was recorded binds kind, location and owner only."""
    if "owner_key_id" not in recorded:
        return [k for k in ("kind", "location", "owner") if recorded.get(k) != stored.get(k)]
    return sorted(k for k in set(recorded) | set(stored) if recorded.get(k) != stored.get(k))


class _Registering(ExternalSource):
    """A source being registered: its registration event records `source_record` of it."""

    _record: dict[str, str] = PrivateAttr(default_factory=dict)

    def public(self) -> dict[str, str]:
        return dict(self._record)


@dataclass(frozen=True)
class EnrolResult:
    dataset: str
    subjects: int
    """subjects linked to the dataset by this enrolment"""
    new_subjects: int
    """of them, subjects the vault did not know before"""
    already_enrolled: int
    skipped_erased: int
    """ids of erased subjects: never linked again"""
    consents: int
    seq: int


@dataclass(frozen=True)
class ErasureRequest:
    """An erasure request to an owner system, as an audit shows it: no id, no link."""

    id: str
    dataset: str
    subject: str
    requested_at: datetime
    due_at: datetime
    state: str
    exported: bool
    checked_at: datetime | None


class External:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        catalog: Catalog,
        subjects: Subjects,
        keyring: Keyring,
        pseudonyms: Pseudonymizer,
        taxonomy: Taxonomy,
        clock: Clock,
        prepare_consents: Callable[[DatasetSchema, pd.DataFrame | Path | str], list[Any]],
        subject_condition: Callable[..., Any],
    ) -> None:
        self.store, self.ledger, self.catalog, self.subjects = store, ledger, catalog, subjects
        self.keyring, self.pseudonyms, self.taxonomy, self.clock = keyring, pseudonyms, taxonomy, clock
        self._prepare_consents = prepare_consents
        self._subject_condition = subject_condition

    # --- registration --------------------------------------------------------------------------

    def register(
        self, schema: DatasetSchema, source: ExternalSource, physical: Mapping[str, str], actor: str
    ) -> DatasetSchema:
        """Register an external dataset: its schema checked against the source's physical types (every
        mismatch refused before anything is written), then the catalogue entry, the source row and one
        DatasetRegistered event (with the source) in one transaction."""
        schema = load_schema(schema.model_dump(mode="json"), self.taxonomy)
        if source.time_column is not None:
            names = {f.name: f.type for f in schema.fields}
            if names.get(source.time_column) not in ("date", "datetime"):
                raise InvalidInput(f"time column {source.time_column!r}: not a date or datetime field of the schema")
        check_physical(schema, physical)
        recording = _Registering.model_validate(source.model_dump())
        recording._record = source_record(source, physical)
        return self.catalog.register(schema, actor, source=recording, physical=physical)

    def info(self, dataset: str) -> tuple[DatasetInfo, ExternalSource]:
        """The dataset and its source, checked against what the ledger recorded at registration
        (IntegrityError when the stored source was edited: a governed frame or a scan would read another
        location, a request would be sealed to another key); InvalidInput when the vault holds its rows."""
        with self.store.read() as conn:
            info = self.catalog.current(conn, dataset)
            if info.source is None:
                raise InvalidInput(f"dataset {dataset} is not external (its records are in the vault)")
            self.check_source(conn, dataset, info.source)
        return info, info.source

    def check_source(self, conn: Connection, dataset: str, source: ExternalSource) -> None:
        """IntegrityError unless the stored source (its kind, location, owner, owner key, erasure days
        and time column) is the one the dataset's registration event recorded."""
        recorded = self._registered_source(conn, dataset)
        if recorded is None:
            raise IntegrityError(f"external dataset {dataset}: the ledger records no registration of its source")
        stored = source_record(source, "")
        del stored["physical_digest"]  # the physical types are RECON-1's to compare
        differ = source_differences({k: v for k, v in recorded.items() if k != "physical_digest"}, stored)
        if differ:
            raise IntegrityError(
                f"external dataset {dataset}: its stored source ({', '.join(differ)}) is not the one the ledger "
                "recorded at registration; nothing was read, sealed or written"
            )

    def _registered_source(self, conn: Connection, dataset: str) -> dict[str, Any] | None:
        """The source the dataset's registration event recorded (served by the ledger's kind index)."""
        for _, _, data in self.ledger.scan(conn, ["dataset.registered"]):
            ev = json.loads(data)
            if ev.get("dataset") == dataset:
                src = ev.get("source")
                return dict(src) if isinstance(src, dict) else None
        return None

    def source(self, conn: Connection, dataset: str) -> ExternalSource | None:
        return self.catalog.current(conn, dataset).source

    # --- enrolment -----------------------------------------------------------------------------

    def enrol(
        self,
        dataset: str,
        ids: Iterable[str],
        actor: str,
        consents_data: pd.DataFrame | Path | str | None = None,
        *,
        any_subject: bool = True,
        purpose: str = "administration",
    ) -> EnrolResult:
        """Enrol the lake's subject ids in an external dataset: subjects created as ingest creates them
        (sealed identity, data key), so export, the portal, backups and erasure treat them as any
        subject; their links stored; consents taken as ingest takes them (without `any_subject`, only for
        subjects this enrolment creates: PolicyDenied, recorded, otherwise). One SubjectsEnrolled event.
        Ids of erased subjects are skipped; ids with surrounding whitespace are refused (a lake id and
        an enrolled id must be the same bytes)."""
        info, _ = self.info(dataset)
        wanted = self._ids(ids)
        rows = self._prepare_consents(info.schema, consents_data) if consents_data is not None else []
        named = {self.pseudonyms.subject(c["subject"]) for c in rows}
        try:
            return self._enrol(info, wanted, actor, rows, named, any_subject)
        except PolicyDenied as exc:
            self.ledger.emit(
                None, AccessDenied, actor=actor, purpose=purpose, action="admin", dataset=dataset, reason=exc.message
            )
            raise

    @staticmethod
    def _ids(ids: Iterable[str]) -> list[str]:
        out: set[str] = set()
        bad = 0
        for i in ids:
            if not isinstance(i, str) or not i or i != i.strip():
                bad += 1
            else:
                out.add(i)
        if bad:
            raise InvalidInput(
                f"{bad} subject id(s) are empty, not text, or have surrounding whitespace; nothing was enrolled"
            )
        if not out:
            raise InvalidInput("no subject ids to enrol")
        return sorted(out)

    def _enrol(
        self,
        info: DatasetInfo,
        ids: list[str],
        actor: str,
        consent_rows: list[Any],
        named: set[str],
        any_subject: bool,
    ) -> EnrolResult:
        dataset = info.schema.name
        key = self.link_key(dataset)
        now = self.clock.now()
        x = external_subjects.c
        with self.store.write() as conn:
            self.catalog.check_version(conn, dataset, info.version)  # held: not dropped or altered meanwhile
            if named and not any_subject:
                known_before = self.subjects.by_pseudonym(conn, named)
                if known_before:
                    self._refuse(actor, dataset, len(known_before))
            created_all: set[str] = set()
            linked: list[bytes] = []
            linked_set = RecordSet()
            already = erased = 0
            for part in chunks(ids):
                known, created = create_subjects(conn, self.subjects, self.keyring, part, now)
                created_all.update(created)
                by_id = {e: known[self.pseudonyms.subject(e)] for e in part}
                live = {e: s for e, s in by_id.items() if not s.erased}
                erased += len(part) - len(live)
                live_ids = [s.id for s in live.values()]
                q = select(x.subject_id).where(x.dataset == dataset, x.subject_id.in_(live_ids))
                have = set(conn.execute(q).scalars())
                new = [(e, s) for e, s in live.items() if s.id not in have]
                already += len(live) - len(new)
                links = [(dataset, s.id, link_of(key, e), now) for e, s in new]
                bulk_insert(conn, external_subjects, links, columns=("dataset", "subject_id", "link", "enrolled_at"))
                linked += [link for _, _, link, _ in links]
                for (_, s), (_, _, link, _) in zip(new, links, strict=True):
                    linked_set.add_element(link_element(dataset, s.pseudonym, link))
            created_p = {self.pseudonyms.subject(e) for e in created_all}
            if named and not any_subject and not named <= created_p:
                self._refuse(actor, dataset, len(named - created_p))
            n_consents, given, withdrawn = self._store_consents(conn, consent_rows)
            seq = self.ledger.emit(
                conn,
                SubjectsEnrolled,
                time=now,
                actor=actor,
                purpose="administration",
                dataset=dataset,
                subjects=len(linked),
                new_subjects=len(created_all),
                consents=n_consents,
                links_digest=links_digest(linked),
                links_set=linked_set.digest(),
                **self._consent_digests(given, withdrawn),
            )
        return EnrolResult(dataset, len(linked), len(created_all), already, erased, n_consents, seq)

    @staticmethod
    def _consent_digests(given: RecordSet, withdrawn: RecordSet) -> dict[str, str]:
        """The consent multiset hashes, when the event carries them."""
        fields = SubjectsEnrolled.model_fields
        if "consents_digest" in fields and "withdrawals_digest" in fields:
            return {"consents_digest": given.digest(), "withdrawals_digest": withdrawn.digest()}
        return {}

    @staticmethod
    def _refuse(actor: str, dataset: str, n: int) -> None:
        raise PolicyDenied(
            f"{actor} may not record consents for {n} subject(s) this enrolment in {dataset} does not create: "
            "consents given with an enrolment name only its new subjects, unless the principal may record "
            "consents (admin, as consent grant needs)"
        )

    def _store_consents(self, conn: Connection, rows: list[Any]) -> tuple[int, RecordSet, RecordSet]:
        given, withdrawn = RecordSet(), RecordSet()
        if not rows:
            return 0, given, withdrawn
        pseud = {e: self.pseudonyms.subject(e) for e in {c["subject"] for c in rows}}
        known = self.subjects.by_pseudonym(conn, pseud.values())
        absent = [e for e in pseud if pseud[e] not in known]
        if absent:
            raise InvalidInput(f"consents name {len(absent)} subject(s) that are neither enrolled nor known")
        out = []
        for c in rows:
            subj = known[pseud[c["subject"]]]
            if subj.erased:
                continue
            out.append((subj.id, *(c[f] for f in _CONSENT_FIELDS)))
            add_consent(given, withdrawn, pseud[c["subject"]], c)
        bulk_insert(conn, consents, out, columns=("subject_id", *_CONSENT_FIELDS))
        return len(out), given, withdrawn

    # --- eligibility ---------------------------------------------------------------------------

    def link_key(self, dataset: str) -> bytes:
        return self.pseudonyms.link_key(dataset)

    def eligible_links(self, dataset: str, purpose: str, at: datetime) -> list[bytes]:
        """The links of the subjects `purpose` may reach at `at`: the vault reads' definition (not erased
        or restricted, consent live when the basis requires it, no live objection), sorted. A link that
        an erasure request names is never one (an erased subject's link put on another subject at rest
        brings no row back)."""
        info, _ = self.info(dataset)
        schema = info.schema
        schema.basis(purpose)
        x, e = external_subjects.c, external_erasures.c
        q = (
            select(x.link)
            .select_from(external_subjects.join(subjects, subjects.c.id == x.subject_id))
            .where(x.dataset == dataset, self._subject_condition(schema, purpose, at, x.subject_id))
        )
        with self.store.read() as conn:
            # read beside, not as a NOT EXISTS per link: the requests' link column has no index
            erased = {bytes(link) for link in conn.execute(select(e.link).where(e.dataset == dataset)).scalars()}
            return sorted(b for b in (bytes(link) for link in conn.execute(q).scalars()) if b not in erased)

    def subjects_of(self, dataset: str, links: Iterable[bytes]) -> dict[str, int]:
        """Pseudonym -> subject id of the subjects enrolled in `dataset` with these links (a read's
        access log names them)."""
        x = external_subjects.c
        out: dict[str, int] = {}
        with self.store.read() as conn:
            for part in chunks(sorted(set(links))):
                q = (
                    select(subjects.c.pseudonym, x.subject_id)
                    .select_from(external_subjects.join(subjects, subjects.c.id == x.subject_id))
                    .where(x.dataset == dataset, x.link.in_(list(part)))
                )
                out.update({str(p): int(i) for p, i in conn.execute(q)})
        return out

    # --- erasure -------------------------------------------------------------------------------

    def on_erased(self, conn: Connection, subj: Subject, external_id: str | None, at: datetime, seq: int) -> list[str]:
        """In an erasure's transaction: unlink the subject from every external dataset and open, per
        dataset, a request to its owner system (sealed to the owner's key when the id is known: a
        re-application after a restore has none and keeps the requests the backup brought). Returns
        the request ids."""
        x = external_subjects.c
        rows = conn.execute(select(x.dataset, x.link).where(x.subject_id == subj.id).order_by(x.dataset)).all()
        if not rows:
            return []
        conn.execute(delete(external_subjects).where(x.subject_id == subj.id))
        ids: list[str] = []
        for dataset, link in rows:
            try:
                source = self.catalog.current(conn, str(dataset)).source
            except NotFound:  # a dropped dataset (its links go with it)
                continue
            if source is None or external_id is None:
                continue
            self.check_source(conn, str(dataset), source)  # sealed to the key the ledger recorded, or nothing
            rid = secrets.token_hex(16)
            sealed = _seal_request(source, str(dataset), external_id, rid)
            conn.execute(
                insert(external_erasures).values(
                    id=rid,
                    dataset=str(dataset),
                    link=bytes(link),
                    subject=subj.pseudonym,
                    erase_seq=seq,
                    requested_at=at,
                    due_at=at + timedelta(days=source.erasure_days),
                    request_sealed=sealed,
                    state="pending",
                )
            )
            ids.append(rid)
        return ids

    def pending(self, dataset: str | None = None) -> list[ErasureRequest]:
        """Erasure requests to owner systems (all states), oldest first."""
        e = external_erasures.c
        q = select(e.id, e.dataset, e.subject, e.requested_at, e.due_at, e.state, e.exported_at, e.checked_at)
        if dataset is not None:
            q = q.where(e.dataset == dataset)
        with self.store.read() as conn:
            return [
                ErasureRequest(
                    str(r.id),
                    str(r.dataset),
                    str(r.subject),
                    _utc(r.requested_at),
                    _utc(r.due_at),
                    str(r.state),
                    r.exported_at is not None,
                    as_utc(r.checked_at),
                )
                for r in conn.execute(q.order_by(e.requested_at, e.id))
            ]

    def export_requests(self, dataset: str, out: Path, actor: str, *, force: bool = False) -> int:
        """Write the dataset's open requests (pending or still present) to `out`, a JSON Lines file of
        the sealed requests (0600, never overwritten unless `force`), base64 each; only the owner's
        private key opens them. One ErasureRequestsExported event."""
        self.info(dataset)  # NotFound, not external, or its source edited: before anything
        e = external_erasures.c
        now = self.clock.now()
        check_output(Path(out), force=force)
        with self.store.write() as conn:
            current = self.catalog.current(conn, dataset).source
            assert current is not None
            self.check_source(conn, dataset, current)  # written for the key the ledger recorded, or nothing
            rows = conn.execute(
                select(e.id, e.request_sealed)
                .where(e.dataset == dataset, e.state.in_(["pending", "present"]), e.request_sealed.is_not(None))
                .order_by(e.requested_at, e.id)
            ).all()
            lines = "".join(
                json.dumps({"id": str(r.id), "sealed": base64.b64encode(bytes(r.request_sealed)).decode()}) + "\n"
                for r in rows
            )
            if rows:
                conn.execute(update(external_erasures).where(e.id.in_([r.id for r in rows])).values(exported_at=now))
            self.ledger.emit(
                conn,
                ErasureRequestsExported,
                time=now,
                actor=actor,
                purpose="subject_request",
                dataset=dataset,
                requests=len(rows),
                recipient_key_id=key_id(load_public(current.owner_key)),
            )
            write_private(Path(out), lines, force=force)
        return len(rows)

    def open_links(self, dataset: str) -> list[bytes]:
        """The links of the dataset's requests not yet verified gone."""
        e = external_erasures.c
        with self.store.read() as conn:
            return sorted(
                {
                    bytes(x)
                    for x in conn.execute(
                        select(e.link).where(e.dataset == dataset, e.state.in_(["pending", "present"]))
                    ).scalars()
                }
            )

    def record_check(self, found: Mapping[str, Mapping[bytes, int]], actor: str) -> tuple[int, dict[str, Any]]:
        """Record scans of external datasets (`found`: dataset -> rows still there per link scanned, 0
        for a link with none): a request with no row left is gone (its sealed request deleted), one with
        rows present; a request whose link was not scanned (opened since) is left as it is. One
        ExternalErasureChecked event; returns (its seq, the results per dataset)."""
        e = external_erasures.c
        now = self.clock.now()
        results: dict[str, dict[str, int]] = {}
        checked: list[bytes] = []
        with self.store.write() as conn:
            rows = conn.execute(
                select(e.id, e.dataset, e.link)
                .where(e.dataset.in_(list(found)), e.state.in_(["pending", "present"]))
                .order_by(e.id)
            ).all()
            gone_ids, present_ids = [], []
            for r in rows:
                ds, link = str(r.dataset), bytes(r.link)
                if link not in found[ds]:
                    continue
                counts = results.setdefault(ds, {"requests": 0, "gone": 0, "present": 0})
                counts["requests"] += 1
                checked.append(r.id.encode() + b"\x00" + link)
                if found[ds][link] > 0:
                    counts["present"] += 1
                    present_ids.append(r.id)
                else:
                    counts["gone"] += 1
                    gone_ids.append(r.id)
            for ds in found:
                results.setdefault(ds, {"requests": 0, "gone": 0, "present": 0})
            seq = self.ledger.emit(
                conn,
                ExternalErasureChecked,
                time=now,
                actor=actor,
                purpose="audit",
                results=results,
                requests_digest=links_digest(checked),
            )
            for part in chunks(gone_ids):
                conn.execute(
                    update(external_erasures)
                    .where(e.id.in_(list(part)))
                    .values(state="gone", request_sealed=None, checked_at=now, check_seq=seq)
                )
            for part in chunks(present_ids):
                conn.execute(
                    update(external_erasures)
                    .where(e.id.in_(list(part)))
                    .values(state="present", checked_at=now, check_seq=seq)
                )
        return seq, results


def _utc(when: datetime) -> datetime:
    aware = as_utc(when)
    assert aware is not None
    return aware


def _seal_request(source: ExternalSource, dataset: str, external_id: str, request_id: str) -> bytes:
    """{dataset, id, request} sealed to the owner system's key (crypto/sealing: X25519 + AES-GCM)."""
    buf = io.BytesIO()
    writer = seal_to(buf, load_public(source.owner_key), {"content": REQUEST_FORMAT})
    writer.write(json.dumps({"dataset": dataset, "subject_id": external_id, "request": request_id}).encode())
    writer.close()
    return buf.getvalue()
