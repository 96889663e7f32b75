"""Session operations of the data-subject portal: a person submits a request (or withdraws a consent),
proves they hold the address they gave with a one-time code, and follows the request with its
reference and follow-up code; an officer fulfils a portal request without seeing the identifier.

The portal acts as a service principal (`portal` by convention) that needs `admin` for the purpose
`subject_request` and nothing else. Nothing before verification depends on whether the person holds
data here: the same row, the same event (`portal.submitted`, by pseudonym) and the same message for
anyone. Verification opens the request in the register (`request.opened`) and records how the identity
was verified (`request.updated`); a consent withdrawal is carried out at once (`consent.withdrawn`).
Wrong codes are recorded as `auth.refused` until the submission locks; limits per address and per
subject are counted in `portal_attempts` (app/portal.py, PortalLimits)."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy import text as sql

from complai.app.core import ALL
from complai.app.ops.compliance import ComplianceOps
from complai.app.ops.rights import RightsOps
from complai.app.portal import (
    PORTAL_KINDS,
    Channel,
    PortalLimits,
    PortalMessage,
    check_identifier,
    digest,
    new_code,
    new_follow_code,
    new_reference,
    normalise,
    recipient_key,
    row_key,
    seal,
    unseal,
)
from complai.clock import as_utc, utc_iso
from complai.compliance.recorded import Recorded
from complai.compliance.requests import deadlines
from complai.errors import AuthenticationFailed, InvalidInput, NotFound, RateLimited
from complai.events import AuthenticationRefused, PortalSubmitted
from complai.store.tables import portal_attempts, portal_requests, subject_requests

_KIND_WORDS = {
    "access": "a copy of the personal data held about you",
    "portability": "your personal data in a portable format",
    "rectification": "a correction of your personal data",
    "erasure": "the erasure of your personal data",
    "restriction": "a restriction of the processing of your personal data",
    "objection": "an objection to the processing of your personal data",
    "withdrawal": "the withdrawal of a consent you gave",
}
_WRONG = "the reference or the code is wrong, or the code has expired; check them, or submit again"
_UNKNOWN = "no request has this reference and follow-up code"
# serialise counting portal submissions, and refused codes, on PostgreSQL (SQLite writers are serialised already)
_SUBMIT_LOCK = 72786512
_REFUSAL_LOCK = 72786513


@dataclass(frozen=True)
class PortalReceipt:
    """A submission awaiting its one-time code: the reference the person keeps, and when the code expires."""

    reference: str
    expires_at: str
    ledger_seq: int


@dataclass(frozen=True)
class PortalVerified:
    """A verified submission: the follow-up code (shown once), and the request as the person sees it."""

    reference: str
    follow_code: str
    view: dict[str, Any]


class PortalOps(RightsOps, ComplianceOps):
    """Listed first among the session's groups: it carries out requests through the rights and
    register operations."""

    # --- the person's side ---------------------------------------------------------------------------

    def portal_ready(self) -> None:
        """Refuse (recorded) unless this principal may act for the portal."""
        self._check("admin")

    def portal_check_jurisdiction(self, jurisdiction: str) -> None:
        """InvalidInput unless `jurisdiction` has a subject-request regime (the portal's default one)."""
        self._check("admin")
        deadlines(self._svc.taxonomy, jurisdiction, self._svc.clock.now())

    def portal_purposes(self) -> list[tuple[str, str]]:
        """The purposes the datasets declare (those a consent can be withdrawn from), as (key, name)."""
        self._check("admin")
        catalog, taxonomy = self._svc.catalog, self._svc.taxonomy
        keys = {p for name in catalog.names() for p in catalog.get(name).schema.purposes}
        return sorted(((k, taxonomy.purpose(k).name) for k in keys), key=lambda kn: kn[1])

    def portal_submit(
        self,
        kind: str,
        identifier: str,
        *,
        address: str,
        channel: Channel,
        limits: PortalLimits,
        purpose: str | None = None,
        details: str | None = None,
    ) -> PortalReceipt:
        """Record a submission and send its one-time code to `identifier` through `channel`, the same for
        anyone; RateLimited past the limits per address or subject. `purpose`: a withdrawal's (required)
        or an objection's (optional: every purpose); `details`: what a rectification should correct."""
        self._check("admin")
        if kind not in PORTAL_KINDS:
            raise InvalidInput(f"choose what you ask for ({', '.join(PORTAL_KINDS)})")
        ident = check_identifier(identifier)
        purpose = (purpose or "").strip() or None
        if kind == "withdrawal" and purpose is None:
            raise InvalidInput("choose the purpose whose consent you withdraw")
        if purpose is not None and kind not in ("withdrawal", "objection"):
            purpose = None
        if purpose is not None:
            self._svc.taxonomy.purpose(purpose)
        text = (details or "").strip() if kind == "rectification" else ""
        if len(text) > 2000:
            raise InvalidInput("describe the correction in up to 2000 characters")
        svc, now = self._svc, self._svc.clock.now()
        subject = svc.pseudonyms.subject(ident)
        by_address = digest(svc.pseudonyms, "address", address or "unknown")
        by_recipient = digest(svc.pseudonyms, "recipient", recipient_key(ident))
        self._purge(limits)
        reference, code = new_reference(), new_code()
        rid = "ptl-" + secrets.token_hex(8)
        salt = secrets.token_bytes(32)
        key = row_key(svc.pseudonyms, salt)
        expires = now + timedelta(seconds=limits.code_ttl_s)
        ref = normalise(reference, 16)
        assert ref is not None
        sealed = {"identifier": ident, "details": text}
        since = now - timedelta(seconds=limits.window_s)
        with svc.store.write() as conn:
            # counted in the transaction that records this submission, so submissions sent in parallel
            # each see the ones before them (SQLite serialises writers; PostgreSQL takes a lock)
            if conn.dialect.name == "postgresql":
                conn.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": _SUBMIT_LOCK})
            from_address = _count(conn, "submit", by_address, since)
            for_subject = _count(conn, "submit", by_recipient, since)
            if from_address >= limits.submissions_per_address or for_subject >= limits.submissions_per_subject:
                raise RateLimited("too many requests from here or for this identifier; try again later")
            conn.execute(
                insert(portal_attempts), [{"what": "submit", "key": k, "at": now} for k in (by_address, by_recipient)]
            )
            conn.execute(
                insert(portal_requests).values(
                    id=rid,
                    reference_hash=digest(svc.pseudonyms, "reference", ref),
                    kind=kind,
                    purpose=purpose,
                    subject=subject,
                    key_salt=salt,
                    identifier_enc=seal(key, rid, "identifier", json.dumps(sealed).encode()),
                    code_hash=digest(svc.pseudonyms, "code", rid, code),
                    code_expires_at=expires,
                    code_attempts=0,
                    state="pending",
                    created_at=now,
                )
            )
            seq = svc.ledger.emit(
                conn,
                PortalSubmitted,
                time=now,
                actor=self.principal,
                purpose=self.purpose,
                submission=rid,
                request_kind=kind,
                subject=subject,
                channel=channel.name,
            )
            # last, inside the transaction: a message that cannot be sent leaves nothing behind
            channel.send(_code_message(ident, kind, reference, code, now, expires))
        self.last_seq = seq
        return PortalReceipt(reference, utc_iso(expires), seq)

    def portal_verify(
        self, reference: str, code: str, *, address: str, limits: PortalLimits, jurisdiction: str = "EU"
    ) -> PortalVerified:
        """Check a submission's one-time code; if right, open the request in the register with the
        identity verified by email (or withdraw the consent) and issue the follow-up code.
        `jurisdiction`: the register's when the person holds no data here. A wrong code is recorded and
        counted; AuthenticationFailed (one message for every failure) or RateLimited."""
        self._check("admin")
        svc, now = self._svc, self._svc.clock.now()
        by_address = digest(svc.pseudonyms, "address", address or "unknown")
        ref, typed = normalise(reference, 16), normalise(code, 8)
        claimed = None
        with svc.store.write() as conn:
            _refuse_if_limited(conn, by_address, limits, now)
            row = None
            if ref is not None:
                row = conn.execute(
                    select(portal_requests)
                    .where(portal_requests.c.reference_hash == digest(svc.pseudonyms, "reference", ref))
                    .with_for_update()
                ).first()
            live = row is not None and row.state == "pending" and as_utc(row.code_expires_at) > now
            expected = digest(svc.pseudonyms, "code", row.id, typed) if row is not None and typed is not None else ""
            if row is not None and live and expected and hmac.compare_digest(row.code_hash or "", expected):
                # claimed: a second submission of the same code finds it no longer pending
                conn.execute(update(portal_requests).where(portal_requests.c.id == row.id).values(state="verifying"))
                claimed = row
            else:
                conn.execute(insert(portal_attempts).values(what="refused", key=by_address, at=now))
                if row is not None and live:
                    tries = row.code_attempts + 1
                    state = "locked" if tries >= limits.code_attempts else "pending"
                    conn.execute(
                        update(portal_requests)
                        .where(portal_requests.c.id == row.id)
                        .values(code_attempts=tries, state=state)
                    )
                    self.last_seq = svc.ledger.emit(
                        conn,
                        AuthenticationRefused,
                        time=now,
                        actor=self.principal,
                        purpose=self.purpose,
                        token_id=None,
                        reason="portal code refused" + (" (submission locked)" if state == "locked" else ""),
                    )
        if claimed is None:
            raise AuthenticationFailed(_WRONG)
        try:
            done = self._carry_out(claimed, jurisdiction, now)
        except BaseException:
            with svc.store.write() as conn:
                conn.execute(
                    update(portal_requests)
                    .where(portal_requests.c.id == claimed.id, portal_requests.c.state == "verifying")
                    .values(state="pending")
                )
            raise
        return PortalVerified(reference.strip().upper(), done.follow_code, done.view)

    def _carry_out(self, row: Any, jurisdiction: str, now: datetime) -> PortalVerified:
        svc = self._svc
        sealed = json.loads(unseal(row_key(svc.pseudonyms, row.key_salt), row.id, "identifier", row.identifier_enc))
        ident = sealed["identifier"]
        values: dict[str, Any] = {"verified_at": now, "code_hash": None}
        if row.kind == "withdrawal":
            try:
                self.withdraw_consent(ident, row.purpose)
                values["outcome"] = "consent withdrawn"
            except NotFound:
                values["outcome"] = "no live consent for this purpose was on record"
            values.update(state="done", closed_at=now)
        else:
            try:
                opened = self.request_open(row.kind, ident)
            except InvalidInput:  # the person holds no data here: the portal's jurisdiction applies
                opened = self.request_open(row.kind, ident, jurisdiction=jurisdiction)
            self.request_verify(opened.value["id"], "email")
            values.update(state="verified", request_id=opened.value["id"])
        follow = new_follow_code()
        code = normalise(follow, 16)
        assert code is not None
        values["follow_hash"] = digest(svc.pseudonyms, "follow", row.id, code)
        with svc.store.write() as conn:
            conn.execute(update(portal_requests).where(portal_requests.c.id == row.id).values(**values))
            fresh = conn.execute(select(portal_requests).where(portal_requests.c.id == row.id)).one()
        return PortalVerified("", follow, self._view(fresh))

    def portal_status(self, reference: str, follow_code: str, *, address: str, limits: PortalLimits) -> dict[str, Any]:
        """The request as its requester sees it: what was asked, its status and deadline, and whether an
        export waits. AuthenticationFailed (counted per address) for a wrong reference or code."""
        self._check("admin")
        return self._view(self._followed(reference, follow_code, address, limits))

    def portal_export(self, reference: str, follow_code: str, *, address: str, limits: PortalLimits) -> bytes:
        """The export of a fulfilled access or portability request (JSON), for its requester."""
        self._check("admin")
        row = self._followed(reference, follow_code, address, limits)
        if row.export_enc is None:
            raise NotFound("no export is waiting for this request")
        data: bytes = unseal(row_key(self._svc.pseudonyms, row.key_salt), row.id, "export", row.export_enc)
        return data

    def _followed(self, reference: str, follow_code: str, address: str, limits: PortalLimits) -> Any:
        svc, now = self._svc, self._svc.clock.now()
        by_address = digest(svc.pseudonyms, "address", address or "unknown")
        ref, code = normalise(reference, 16), normalise(follow_code, 16)
        with svc.store.write() as conn:
            _refuse_if_limited(conn, by_address, limits, now)
            row = None
            if ref is not None and code is not None:
                row = conn.execute(
                    select(portal_requests).where(
                        portal_requests.c.reference_hash == digest(svc.pseudonyms, "reference", ref)
                    )
                ).first()
            expected = digest(svc.pseudonyms, "follow", row.id, code or "") if row is not None else ""
            refused = row is None or row.follow_hash is None or not hmac.compare_digest(row.follow_hash, expected)
            if refused:
                conn.execute(insert(portal_attempts).values(what="refused", key=by_address, at=now))
        if refused:
            raise AuthenticationFailed(_UNKNOWN)
        return row

    def _view(self, row: Any) -> dict[str, Any]:
        view: dict[str, Any] = {
            "kind": row.kind,
            "purpose": row.purpose,
            "submitted_at": utc_iso(as_utc(row.created_at)),
            "verified_at": utc_iso(as_utc(row.verified_at)) if row.verified_at else None,
            "outcome": row.outcome,
            "export": row.export_enc is not None,
            "status": "done" if row.state == "done" else row.state,
            "due_at": None,
            "closed_at": utc_iso(as_utc(row.closed_at)) if row.closed_at else None,
            "extended": False,
            "days_left": None,
        }
        if row.request_id:
            req = self._svc.requests.get(row.request_id)
            view.update(
                status=req["status"],
                due_at=req["due_at"],
                closed_at=req["closed_at"],
                extended=req["extended"],
                days_left=req["days_left"],
                jurisdiction=req["jurisdiction"],
            )
        return view

    # --- the officer's side --------------------------------------------------------------------------

    def portal_request(self, rid: str) -> dict[str, Any]:
        """What a person asked through the portal for register request `rid`: the type, the purpose and
        a rectification's description (never the identifier)."""
        self._check("admin")
        row = _by_request(self, rid)
        sealed = json.loads(
            unseal(row_key(self._svc.pseudonyms, row.key_salt), row.id, "identifier", row.identifier_enc)
        )
        return {"request": rid, "kind": row.kind, "purpose": row.purpose, "details": sealed.get("details") or None}

    def portal_fulfil(self, rid: str, *, changes: Sequence[tuple[str, str, Any]] = ()) -> Recorded[dict[str, Any]]:
        """Fulfil a portal request (request_fulfil, with the identifier the portal verified, which the
        officer never sees); an access or portability export is kept sealed for the requester."""
        self._check("admin")
        row = _by_request(self, rid)
        key = row_key(self._svc.pseudonyms, row.key_salt)
        ident = json.loads(unseal(key, row.id, "identifier", row.identifier_enc))["identifier"]
        purpose = row.purpose if row.kind == "objection" else None
        result, output = self.request_fulfil(rid, ident, purpose=purpose, changes=changes)
        values: dict[str, Any] = {}
        if output is not None:
            values["export_enc"] = seal(key, row.id, "export", json.dumps(output, indent=2, default=str).encode())
        if result.value["status"] == "fulfilled":  # the identifier is no longer needed: destroyed
            values.update(closed_at=self._svc.clock.now(), identifier_enc=None)
        if values:
            with self._svc.store.write() as conn:
                conn.execute(update(portal_requests).where(portal_requests.c.id == row.id).values(**values))
        return result

    def portal_summary(self, rid: str) -> dict[str, Any] | None:
        """None unless register request `rid` came through the portal; else how it did: the type, the
        purpose, that the identity was verified by email there, whether the portal still holds the
        verified identifier (it is destroyed once the request is fulfilled), and a rectification's
        description for a caller who may act on requests (admin for `subject_request`; None otherwise,
        and once the identifier is gone). Never the identifier. For those who oversee the register
        (audit or admin)."""
        self._check_oversight()
        with self._svc.store.read() as conn:
            row = conn.execute(select(portal_requests).where(portal_requests.c.request_id == rid)).first()
        if row is None:
            return None
        details = None
        if row.identifier_enc is not None and self._may(ALL, ("admin",), ["subject_request"]):
            key = row_key(self._svc.pseudonyms, row.key_salt)
            details = json.loads(unseal(key, row.id, "identifier", row.identifier_enc)).get("details") or None
        return {
            "kind": row.kind,
            "purpose": row.purpose,
            "verified_by": "email",
            "identifier_held": row.identifier_enc is not None,
            "details": details,
        }

    def portal_request_ids(self) -> frozenset[str]:
        """The register requests that came through the portal (while the portal keeps their record), for
        marking them in a list. For those who oversee the register (audit or admin)."""
        self._check_oversight()
        with self._svc.store.read() as conn:
            ids = conn.execute(
                select(portal_requests.c.request_id).where(portal_requests.c.request_id.is_not(None))
            ).scalars()
            return frozenset(str(i) for i in ids)

    # --- retention -----------------------------------------------------------------------------------

    def _purge(self, limits: PortalLimits) -> None:
        """Delete what the portal no longer needs: attempts older than the window, submissions never
        verified (a day after their code expired), and requests closed `retention_days` ago (with their
        sealed identifier and export)."""
        svc, now = self._svc, self._svc.clock.now()
        stale = now - timedelta(days=limits.retention_days)
        with svc.store.write() as conn:
            conn.execute(delete(portal_attempts).where(portal_attempts.c.at < now - timedelta(seconds=limits.window_s)))
            conn.execute(
                delete(portal_requests).where(
                    portal_requests.c.state.in_(("pending", "locked", "verifying")),
                    portal_requests.c.code_expires_at < now - timedelta(days=1),
                )
            )
            conn.execute(delete(portal_requests).where(portal_requests.c.closed_at < stale))
            closed = select(subject_requests.c.id).where(subject_requests.c.closed_at < stale)
            conn.execute(delete(portal_requests).where(portal_requests.c.request_id.in_(closed)))


def _refuse_if_limited(conn: Connection, by_address: str, limits: PortalLimits, now: datetime) -> None:
    """RateLimited once `by_address` has made its limit of wrong codes and unknown follow-ups within the
    window. Counted in the write transaction that records this attempt's refusal: attempts sent in
    parallel each see the ones before them (SQLite serialises writers; PostgreSQL takes a lock held to
    the commit), so no more than the limit are ever checked."""
    if conn.dialect.name == "postgresql":
        conn.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": _REFUSAL_LOCK})
    if _count(conn, "refused", by_address, now - timedelta(seconds=limits.window_s)) >= limits.refusals_per_address:
        raise RateLimited("too many wrong codes from here; try again later")


def _count(conn: Connection, what: str, key: str, since: datetime) -> int:
    n: int = conn.execute(
        select(func.count())
        .select_from(portal_attempts)
        .where(portal_attempts.c.what == what, portal_attempts.c.key == key, portal_attempts.c.at >= since)
    ).scalar_one()
    return n


def _by_request(session: PortalOps, rid: str) -> Any:
    with session._svc.store.read() as conn:
        row = conn.execute(select(portal_requests).where(portal_requests.c.request_id == rid)).first()
    if row is None:
        raise NotFound(f"request {rid!r} was not made through the portal")
    if row.identifier_enc is None:
        raise InvalidInput(f"request {rid!r} is closed: the portal no longer holds the identifier it verified")
    return row


def _code_message(to: str, kind: str, reference: str, code: str, now: datetime, expires: datetime) -> PortalMessage:
    body = (
        "Someone, perhaps you, used this address at our privacy portal to ask for\n"
        f"{_KIND_WORDS[kind]}.\n\n"
        f"Your one-time code: {code}\n"
        f"Your reference:     {reference}\n\n"
        f"Enter the code on the portal before {utc_iso(expires)} (UTC). It works once.\n"
        "If you did not ask, ignore this message: nothing happens without the code.\n"
    )
    return PortalMessage(to=to, subject="Your verification code", body=body, at=now)
