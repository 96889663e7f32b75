"""Consent and objections: grant and withdraw a subject's consent to a purpose, record an objection or
opt-out; one ledger entry each, in the transaction of the change."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from complai.clock import Clock, to_us
from complai.errors import InvalidInput, NotFound
from complai.events import ConsentGranted, ConsentWithdrawn, ObjectionRecorded
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import consents, external_subjects, objections, records
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog
from complai.vault.records import RecordSet, withdrawal_element
from complai.vault.subjects import Subject, Subjects

# what the store keeps of a consent's notice version and source (store/tables.py's columns)
NOTICE_VERSION_MAX, SOURCE_MAX = 64, 128


def consent_text(value: str, name: str, limit: int, where: str = "consent") -> str:
    """A consent's notice version or source as the store can keep it: at most `limit` characters of
    Unicode text with no control character (PostgreSQL refuses a NUL; SQLite would keep it). The value is
    not repeated in the message."""
    if len(value) > limit:
        raise InvalidInput(f"{where}: {name} is longer than {limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise InvalidInput(f"{where}: {name} holds a control character or is not Unicode text")
    return value


class Consents:
    def __init__(
        self, store: Store, ledger: Ledger, catalog: Catalog, subjects: Subjects, taxonomy: Taxonomy, clock: Clock
    ) -> None:
        self.store, self.ledger, self.catalog = store, ledger, catalog
        self.subjects, self.taxonomy, self.clock = subjects, taxonomy, clock

    def grant(
        self,
        external_id: str,
        purpose: str,
        actor: str,
        basis: str = "gdpr.consent",
        notice_version: str = "unspecified",
        source: str = "cli",
    ) -> int:
        self.taxonomy.purpose(purpose)
        self.taxonomy.legal_basis(basis)
        consent_text(notice_version, "notice_version", NOTICE_VERSION_MAX)
        consent_text(source, "source", SOURCE_MAX)
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subjects.get(conn, external_id)
            self._check_declared(conn, subj, purpose)
            conn.execute(
                insert(consents).values(
                    subject_id=subj.id,
                    purpose=purpose,
                    basis=basis,
                    granted_at=now,
                    notice_version=notice_version,
                    source=source,
                )
            )
            return self.ledger.emit(
                conn,
                ConsentGranted,
                time=now,
                actor=actor,
                purpose="administration",
                subject=subj.pseudonym,
                for_purpose=purpose,
                basis=basis,
                notice_version=notice_version,
                source=source,
            )

    def _check_declared(self, conn: Connection, subj: Subject, purpose: str) -> None:
        """A consent must be for a purpose one of the subject's datasets (with its records, or enrolled in
        it) declares (else it governs nothing and misleads whoever reads the consent register)."""
        held = select(records.c.dataset).where(records.c.subject_id == subj.id)
        enrolled = select(external_subjects.c.dataset).where(external_subjects.c.subject_id == subj.id)
        names = sorted({str(d) for d in conn.execute(held.union(enrolled)).scalars()})
        declared = {name: list(self.catalog.get(name).schema.purposes) for name in names}
        if any(purpose in purposes for purposes in declared.values()):
            return
        if not declared:
            raise InvalidInput(f"purpose {purpose!r}: the subject has no records in any dataset")
        listed = "; ".join(f"{name}: {', '.join(p)}" for name, p in declared.items())
        raise InvalidInput(f"purpose {purpose!r} is not declared by the subject's dataset(s) ({listed})")

    def withdraw(self, external_id: str, purpose: str, actor: str) -> int:
        self.taxonomy.purpose(purpose)
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subjects.get(conn, external_id)
            c = consents.c
            withdrawn = RecordSet()
            for (granted,) in conn.execute(
                select(c.granted_at).where(c.subject_id == subj.id, c.purpose == purpose, c.withdrawn_at.is_(None))
            ):
                withdrawn.add_element(withdrawal_element(subj.pseudonym, purpose, to_us(granted), to_us(now)))
            n = conn.execute(
                update(consents)
                .where(c.subject_id == subj.id, c.purpose == purpose, c.withdrawn_at.is_(None))
                .values(withdrawn_at=now)
            ).rowcount
            if n == 0:
                raise NotFound(f"the subject has no live consent for {purpose}")
            return self.ledger.emit(
                conn,
                ConsentWithdrawn,
                time=now,
                actor=actor,
                purpose="administration",
                subject=subj.pseudonym,
                for_purpose=purpose,
                consents=n,
                withdrawals_digest=withdrawn.digest(),
            )

    def object(self, external_id: str, purpose: str, actor: str, kind: str = "objection") -> int:
        """Record an objection (GDPR Art. 21) or opt-out (CCPA) to a purpose, or to all ('*')."""
        if purpose != "*":
            self.taxonomy.purpose(purpose)
        if kind not in ("objection", "opt_out"):
            raise InvalidInput("kind must be 'objection' or 'opt_out'")
        now = self.clock.now()
        with self.store.write() as conn:
            subj = self.subjects.get(conn, external_id)
            conn.execute(insert(objections).values(subject_id=subj.id, purpose=purpose, kind=kind, at=now))
            return self.ledger.emit(
                conn,
                ObjectionRecorded,
                time=now,
                actor=actor,
                purpose="subject_request",
                subject=subj.pseudonym,
                for_purpose=purpose,
                objection=kind,
            )
