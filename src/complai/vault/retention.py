"""Retention: delete records past their dataset's retention and crypto-shred subjects left with none;
and the upgrade step that re-seals records sealed before their versions and times were bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from complai.clock import Clock, to_us
from complai.crypto.keyring import Keyring
from complai.errors import IntegrityError
from complai.events import RetentionSwept
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import consents, external_subjects, objections, records, subjects
from complai.vault.catalog import Catalog
from complai.vault.notices import Notices, RecordsExpired
from complai.vault.records import RecordSet, legacy_record_ad, record_ad
from complai.vault.subjects import CHUNK, chunks, set_digest
from complai.vault.tallies import consent_sets, deleted_sets


class Retention:
    def __init__(
        self, store: Store, ledger: Ledger, catalog: Catalog, keyring: Keyring, notices: Notices, clock: Clock
    ) -> None:
        self.store, self.ledger, self.catalog, self.keyring = store, ledger, catalog, keyring
        self.notices, self.clock = notices, clock

    def sweep(self, actor: str) -> dict[str, Any]:
        """Delete records past their dataset's retention; crypto-shred subjects left with nothing."""
        now = self.clock.now()
        r, s = records.c, subjects.c
        with self.store.write() as conn:
            by_ds = {
                str(d): int(n)
                for d, n in conn.execute(
                    select(r.dataset, func.count()).where(r.expires_us <= to_us(now)).group_by(r.dataset)
                )
            }
            affected = [
                int(x)
                for x in conn.execute(select(r.subject_id).where(r.expires_us <= to_us(now)).distinct()).scalars()
            ]
            for ds in by_ds:
                expired_here = tuple(
                    int(x)
                    for x in conn.execute(
                        select(r.subject_id).where(r.expires_us <= to_us(now), r.dataset == ds).distinct()
                    ).scalars()
                )
                self.notices.publish(RecordsExpired(conn, now, ds, expired_here))
            deleted = deleted_sets(conn, select(r.dataset, s.pseudonym, r.rid).where(r.expires_us <= to_us(now)))
            n = conn.execute(delete(records).where(r.expires_us <= to_us(now))).rowcount
            gone = shred_emptied(conn, self.keyring, affected, now)
            empty, pseudos, given, withdrawn = gone.subject_ids, gone.pseudonyms, gone.given, gone.withdrawn
            seq = self.ledger.emit(
                conn,
                RetentionSwept,
                time=now,
                actor=actor,
                purpose="legal_obligation",
                records=n,
                by_dataset=by_ds,
                subjects_shredded=len(empty),
                subject_pseudonyms_digest=set_digest(pseudos),
                records_digests={ds: rs.digest() for ds, (_, rs) in deleted.items()},
                consents_digest=given.digest(),
                withdrawals_digest=withdrawn.digest(),
            )
        if n:
            self.store.purge_freed()
        return {"records_deleted": n, "by_dataset": by_ds, "subjects_shredded": len(empty), "seq": seq}

    def reseal_legacy(self, conn: Connection) -> int:
        """Re-seal records sealed before versions and times were bound into their associated data (a
        workspace created before that, or restored from an older backup): each is opened under its old
        associated data, so a record edited at rest before the upgrade fails here, and sealed again
        under the same data key with version 0. Runs in the caller's (upgrade) transaction."""
        r = records.c
        schemas: dict[str, str] = {}
        done = 0
        while True:
            rows = conn.execute(
                select(r.rid, r.dataset, r.subject_id, r.dek_version, r.data, r.created_us, r.expires_us)
                .where(r.version.is_(None))
                .order_by(r.rid)
                .limit(CHUNK)
            ).all()
            if not rows:
                return done
            keys = self.keyring.load(conn, {int(row.subject_id) for row in rows})
            resealed = []
            for row in rows:
                ds, rid = str(row.dataset), bytes(row.rid)
                if ds not in schemas:
                    schemas[ds] = self.catalog.current(conn, ds).schema.digest()  # in the upgrade transaction
                key = keys.get(int(row.subject_id), {}).get(int(row.dek_version))
                if key is None:
                    raise IntegrityError(f"record {rid.hex()} in {ds}: its data key is missing")
                try:
                    plain = key.open(bytes(row.data), legacy_record_ad(ds, rid, schemas[ds]))
                except IntegrityError:
                    raise IntegrityError(f"record {rid.hex()} in {ds} fails authentication") from None
                ad = record_ad(ds, rid, schemas[ds], 0, int(row.created_us), int(row.expires_us))
                resealed.append({"b_rid": rid, "b_data": key.seal(plain, ad)})
            conn.execute(
                update(records).where(r.rid == bindparam("b_rid")).values(version=0, data=bindparam("b_data")),
                resealed,
            )
            done += len(rows)


@dataclass(frozen=True)
class Shredded:
    """Subjects erased because no record of theirs is left: what the ledger event accounts for."""

    subject_ids: list[int]
    pseudonyms: list[str]
    given: RecordSet
    withdrawn: RecordSet
    consents: int
    keys_destroyed: int


def shred_emptied(
    conn: Connection, keyring: Keyring, candidates: Sequence[int], now: datetime, **also: object
) -> Shredded:
    """Erase, as a subject erasure does, those of `candidates` left with no record in any dataset (after
    a retention sweep or a dataset drop deleted theirs): consents and objections deleted, the external
    id dropped, the data key destroyed (crypto-shredding). `also` sets further subject columns."""
    r, s = records.c, subjects.c
    empty: list[int] = []
    for part in chunks(candidates):
        has = set(conn.execute(select(r.subject_id).where(r.subject_id.in_(part)).distinct()).scalars())
        # a subject enrolled in an external dataset is held there (its rows are in the lake)
        x = external_subjects.c
        has |= set(conn.execute(select(x.subject_id).where(x.subject_id.in_(part)).distinct()).scalars())
        empty += [sid for sid in part if sid not in has]
    pseudos: list[str] = []
    given, withdrawn = RecordSet(), RecordSet()
    n_con = 0
    for part in chunks(empty):
        pseudos += [str(p) for p in conn.execute(select(s.pseudonym).where(s.id.in_(part))).scalars()]
        g, w = consent_sets(conn, part)
        given, withdrawn = given + g, withdrawn + w
        n_con += conn.execute(delete(consents).where(consents.c.subject_id.in_(part))).rowcount
        conn.execute(delete(objections).where(objections.c.subject_id.in_(part)))
        conn.execute(update(subjects).where(s.id.in_(part)).values(erased_at=now, external_enc=None, **also))
    return Shredded(empty, pseudos, given, withdrawn, n_con, keyring.destroy(conn, empty))
