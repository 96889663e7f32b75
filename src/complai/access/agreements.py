"""Data-sharing agreements: machine-checked policy objects whose every use is enforced and recorded.

An agreement names the recipient (and its X25519 public key), the dataset, the purpose, the fields it
may receive, the de-identification required, an expiry and a maximum number of uses. `export` refuses
an expired, revoked or exhausted agreement (the use is counted atomically with the ledger event),
reads only subjects whose lawful basis for the purpose is live, keeps only the allowed fields after
de-identification, and seals a package to the recipient containing the data, a manifest and the
ledger inclusion proof of the share event under a signed checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import Row, insert, select, update

from complai.access.authz import Authz
from complai.access.packages import PACKAGE_FORMAT, open_package
from complai.clock import Clock, as_utc, parse_utc, utc_iso
from complai.crypto.digest import digest
from complai.crypto.sealing import key_id, seal_to
from complai.errors import IntegrityError, InvalidInput, NotFound, PolicyDenied
from complai.events import AgreementChanged, DataShared
from complai.files import atomic_output, check_output
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import agreements
from complai.taxonomy import Taxonomy
from complai.vault.catalog import Catalog
from complai.vault.schema import retention_deadline
from complai.vault.service import Vault, set_digest

# the recipient's side lives in access/packages.py; named here too, where callers look for it
__all__ = [
    "PACKAGE_FORMAT",
    "TRANSFER_MECHANISMS",
    "Agreement",
    "Agreements",
    "ShareResult",
    "agreement_terms_digest",
    "open_package",
]

# GDPR Art. 45-49 and PIPL Art. 38 routes for data leaving its jurisdiction
TRANSFER_MECHANISMS = (
    "adequacy",
    "scc",
    "bcr",
    "explicit-consent",
    "derogation",
    "pipl-standard-contract",
    "pipl-certification",
    "cac-assessment",
)


def agreement_terms_digest(
    recipient_key_hex: str, deid_json: str, recipient_jurisdiction: str | None, transfer_mechanism: str | None
) -> str:
    """What the ledger records of an agreement's stored terms it does not list (its `terms_digest`)."""
    try:
        deid: Any = json.loads(deid_json)
    except ValueError:
        deid = str(deid_json)  # unreadable at rest: differs from what was recorded
    terms = [str(recipient_key_hex), deid, recipient_jurisdiction, transfer_mechanism]
    return digest(json.dumps(terms, sort_keys=True).encode())


@dataclass(frozen=True)
class Agreement:
    id: str
    recipient: str
    recipient_key_id: str
    dataset: str
    purpose: str
    fields: list[str]
    deid: dict[str, bool]
    expires_at: str
    max_uses: int
    uses: int
    revoked: bool
    recipient_jurisdiction: str | None = None
    transfer_mechanism: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ShareResult(TypedDict):
    """One use of an agreement, sealed to its recipient."""

    file: str
    rows: int
    use: int
    max_uses: int
    ledger_seq: int


class Agreements:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        catalog: Catalog,
        vault: Vault,
        authz: Authz,
        taxonomy: Taxonomy,
        clock: Clock,
        pseudonym_key: bytes,
    ) -> None:
        self.store, self.ledger, self.catalog, self.vault = store, ledger, catalog, vault
        self.authz, self.taxonomy, self.clock = authz, taxonomy, clock
        self._pkey = pseudonym_key

    def _row(self, row: Row[Any]) -> Agreement:
        return Agreement(
            id=row.id,
            recipient=row.recipient,
            recipient_key_id=key_id(bytes.fromhex(row.recipient_key)),
            dataset=row.dataset,
            purpose=row.purpose,
            fields=json.loads(row.fields_json),
            deid=json.loads(row.deid_json),
            expires_at=utc_iso(as_utc(row.expires_at)),
            max_uses=int(row.max_uses),
            uses=int(row.uses),
            revoked=row.revoked_at is not None,
            recipient_jurisdiction=row.recipient_jurisdiction,
            transfer_mechanism=row.transfer_mechanism,
        )

    def create(
        self,
        actor: str,
        recipient: str,
        recipient_key: bytes,
        dataset: str,
        purpose: str,
        fields: list[str],
        expires: str = "P30D",
        max_uses: int = 1,
        drop_direct_identifiers: bool = True,
        pseudonymize_subjects: bool = True,
        recipient_jurisdiction: str | None = None,
        transfer_mechanism: str | None = None,
    ) -> Agreement:
        """A new agreement (its creator needs `share` on the dataset for the purpose)."""
        return self.create_recorded(
            actor,
            recipient,
            recipient_key,
            dataset,
            purpose,
            fields,
            expires=expires,
            max_uses=max_uses,
            drop_direct_identifiers=drop_direct_identifiers,
            pseudonymize_subjects=pseudonymize_subjects,
            recipient_jurisdiction=recipient_jurisdiction,
            transfer_mechanism=transfer_mechanism,
        )[0]

    def create_recorded(
        self,
        actor: str,
        recipient: str,
        recipient_key: bytes,
        dataset: str,
        purpose: str,
        fields: list[str],
        expires: str = "P30D",
        max_uses: int = 1,
        drop_direct_identifiers: bool = True,
        pseudonymize_subjects: bool = True,
        recipient_jurisdiction: str | None = None,
        transfer_mechanism: str | None = None,
    ) -> tuple[Agreement, int]:
        """As `create`; returns the agreement and the ledger seq of its `agreement.changed` event."""
        if not recipient.strip():
            raise InvalidInput("an agreement needs a recipient")
        if len(recipient_key) != 32:
            raise InvalidInput("the recipient key must be an X25519 public key")
        if max_uses < 1:
            raise InvalidInput("max uses must be at least 1")
        # authorised before the dataset is looked up, so a refusal does not say whether it exists
        self.authz.check(actor, dataset, "share", purpose)
        schema = self.catalog.get(dataset).schema
        schema.basis(purpose)
        names = [f.name for f in schema.fields]
        if not fields:
            raise InvalidInput("an agreement must name the fields it shares")
        unknown = [f for f in fields if f not in names]
        if unknown:
            raise InvalidInput(f"unknown field(s) {unknown} in dataset {dataset}")
        direct = [f for f in fields if schema.field(f).identifier == "direct" and f != schema.subject_column]
        if drop_direct_identifiers and direct:
            raise InvalidInput(f"fields {direct} are direct identifiers and the agreement removes them; leave them out")
        if recipient_jurisdiction is None:
            # personal data may leave only for a known place: whether it is a transfer, and under what, follows
            raise InvalidInput(
                "an agreement must name its recipient's jurisdiction (--recipient-jurisdiction EU, UK, US-CA, CN, ...)"
            )
        if transfer_mechanism is not None and transfer_mechanism not in TRANSFER_MECHANISMS:
            raise InvalidInput(
                f"unknown transfer mechanism {transfer_mechanism!r} (mechanisms: {', '.join(TRANSFER_MECHANISMS)})"
            )
        self.taxonomy.jurisdiction(recipient_jurisdiction)
        if recipient_jurisdiction != schema.jurisdiction and transfer_mechanism is None:
            raise InvalidInput(
                f"sharing {dataset} ({schema.jurisdiction}) with a recipient in {recipient_jurisdiction} is a "
                "transfer: record its mechanism (--transfer-mechanism)"
            )
        now = self.clock.now()
        expires_at = retention_deadline(now, expires)
        aid = secrets.token_hex(8)
        deid = {"drop_direct_identifiers": drop_direct_identifiers, "pseudonymize_subjects": pseudonymize_subjects}
        with self.store.write() as conn:
            conn.execute(
                insert(agreements).values(
                    id=aid,
                    recipient=recipient,
                    recipient_key=recipient_key.hex(),
                    dataset=dataset,
                    purpose=purpose,
                    fields_json=json.dumps(fields),
                    deid_json=json.dumps(deid, sort_keys=True),
                    expires_at=expires_at,
                    max_uses=max_uses,
                    uses=0,
                    created_by=actor,
                    created_at=now,
                    recipient_jurisdiction=recipient_jurisdiction,
                    transfer_mechanism=transfer_mechanism,
                )
            )
            event = self._event(actor, aid, recipient, dataset, purpose, fields, expires_at, max_uses, "created")
            terms = agreement_terms_digest(
                recipient_key.hex(), json.dumps(deid, sort_keys=True), recipient_jurisdiction, transfer_mechanism
            )
            seq = self.ledger.append(conn, event.model_copy(update={"terms_digest": terms}))
        return self.get(aid), seq

    def _event(
        self,
        actor: str,
        aid: str,
        recipient: str,
        dataset: str,
        purpose: str,
        fields: list[str],
        expires_at: datetime | str,
        max_uses: int,
        change: str,
    ) -> AgreementChanged:
        return AgreementChanged(
            time=self.clock.now(),
            actor=actor,
            purpose=purpose,
            agreement=aid,
            recipient=recipient,
            dataset=dataset,
            for_purpose=purpose,
            fields=fields,
            expires=expires_at if isinstance(expires_at, str) else utc_iso(as_utc(expires_at)),
            max_uses=max_uses,
            change=change,
        )

    def get(self, aid: str) -> Agreement:
        with self.store.read() as conn:
            row = conn.execute(select(agreements).where(agreements.c.id == aid)).first()
        if row is None:
            raise NotFound(f"no agreement {aid}")
        return self._row(row)

    def list(self) -> list[Agreement]:
        with self.store.read() as conn:
            return [self._row(r) for r in conn.execute(select(agreements).order_by(agreements.c.created_at))]

    def revoke(self, actor: str, aid: str) -> int:
        """Revoke an agreement (for those who may share its dataset for its purpose); returns the seq."""
        a = self.get(aid)
        self.authz.check(actor, a.dataset, "share", a.purpose)
        if a.revoked:
            raise InvalidInput(f"agreement {aid} is already revoked")
        with self.store.write() as conn:
            conn.execute(update(agreements).where(agreements.c.id == aid).values(revoked_at=self.clock.now()))
            return self.ledger.append(
                conn,
                self._event(
                    actor, aid, a.recipient, a.dataset, a.purpose, a.fields, a.expires_at, a.max_uses, "revoked"
                ),
            )

    def _check_against_ledger(self, aid: str) -> None:
        """Refuse to use an agreement whose row differs from what the ledger recorded of it (recipient and
        its key, dataset, purpose, fields, de-identification, expiry, use limit, uses, revocation): an
        edit at rest could otherwise seal the next package to another key or lift a limit."""
        created: dict[str, Any] | None = None
        revoked, uses = False, 0
        with self.store.snapshot() as conn:  # the row and the ledger as of one moment, whatever runs alongside
            row = conn.execute(select(agreements).where(agreements.c.id == aid)).one()
            for _, _, data in self.ledger.scan(conn, (AgreementChanged.kind, DataShared.kind)):
                ev = json.loads(data)
                if ev.get("agreement") != aid:
                    continue
                if ev.get("type") == "data.shared":
                    uses = max(uses, int(ev.get("use", 0)))
                elif ev.get("change") == "created":
                    created = ev
                elif ev.get("change") == "revoked":
                    revoked = True
        problem = None
        if created is None:
            problem = "the ledger never recorded its creation"
        elif (
            row.recipient != created.get("recipient")
            or row.dataset != created.get("dataset")
            or row.purpose != created.get("for_purpose")
            or json.loads(row.fields_json) != created.get("fields")
            or int(row.max_uses) != int(created.get("max_uses", -1))
            or utc_iso(as_utc(row.expires_at)) != created.get("expires")
        ):
            problem = "its terms differ from the ones the ledger recorded"
        elif created.get("terms_digest") is not None and created["terms_digest"] != agreement_terms_digest(
            row.recipient_key, row.deid_json, row.recipient_jurisdiction, row.transfer_mechanism
        ):
            problem = "its recipient key or de-identification differs from the ones the ledger recorded"
        elif int(row.uses) != uses or (row.revoked_at is not None) != revoked:
            problem = "its uses or revocation differ from the ledger's"
        if problem:
            raise IntegrityError(f"agreement {aid} was changed at rest ({problem}); nothing was shared")

    def export(self, actor: str, aid: str, out: Path, forbidden: Iterable[Path] = ()) -> ShareResult:
        """Seal one use of the agreement to its recipient as a package file (a new file, mode 0600)."""
        out = Path(out)
        forbidden = list(forbidden)
        if os.path.lexists(out) and not os.path.islink(out) and not os.path.isdir(out):
            raise InvalidInput(f"{out} already exists")
        check_output(out, forbidden=forbidden)
        a = self.get(aid)
        now = self.clock.now()
        if a.revoked:
            raise PolicyDenied(f"agreement {aid} was revoked")
        if parse_utc(a.expires_at) <= now:
            raise PolicyDenied(f"agreement {aid} expired at {a.expires_at}")
        if a.uses >= a.max_uses:
            raise PolicyDenied(f"agreement {aid} has been used {a.uses} of {a.max_uses} times")
        self.authz.check(actor, a.dataset, "share", a.purpose)
        self._check_against_ledger(aid)
        schema = self.catalog.get(a.dataset).schema
        cols = list(a.fields)
        if schema.subject_column not in cols:
            cols_fetch = [*cols, schema.subject_column]
        else:
            cols_fetch = cols
        frame, pseudos, _, _ = self.vault.fetch(a.dataset, a.purpose, cols_fetch)
        if a.deid.get("pseudonymize_subjects", True) and schema.subject_column in cols:
            salt = hmac.digest(self._pkey, b"share|" + aid.encode(), hashlib.sha256)
            frame[schema.subject_column] = [
                "sh_" + hmac.digest(salt, str(x).encode(), hashlib.sha256).hex()[:24]
                for x in frame[schema.subject_column]
            ]
        frame = frame[cols]
        data = frame.to_csv(index=False).encode()
        with self.store.write() as conn:
            # the use number comes from the row as locked here (FOR UPDATE on PostgreSQL; SQLite's write
            # transaction holds the database lock), not from the read above, which concurrent exports share
            c = agreements.c
            locked = conn.execute(
                select(c.uses, c.max_uses, c.revoked_at).where(c.id == aid).with_for_update()
            ).one_or_none()
            if locked is None or locked.revoked_at is not None or int(locked.uses) >= int(locked.max_uses):
                raise PolicyDenied(f"agreement {aid} can no longer be used")
            use = int(locked.uses) + 1
            conn.execute(update(agreements).where(c.id == aid).values(uses=use))
            seq = self.ledger.append(
                conn,
                DataShared(
                    time=now,
                    actor=actor,
                    purpose=a.purpose,
                    agreement=aid,
                    recipient=a.recipient,
                    dataset=a.dataset,
                    fields=cols,
                    rows=len(frame),
                    subjects=len(pseudos),
                    subjects_digest=set_digest(pseudos),
                    data_digest=digest(data),
                    use=use,
                ),
            )
        note = self.ledger.checkpoint(actor)
        entry = self.ledger.entry(seq)
        proof = self.ledger.inclusion_proof(seq, note.checkpoint.size)
        manifest = {
            "format": PACKAGE_FORMAT,
            "agreement": {**a.as_dict(), "uses": use},
            "rows": len(frame),
            "fields": cols,
            "data_file": "data.csv",
            "data_sha256": hashlib.sha256(data).hexdigest(),
            "ledger": {
                "seq": seq,
                "event": entry.data.decode(),
                "tree_size": note.checkpoint.size,
                "proof": [p.hex() for p in proof],
                "checkpoint": note.text(),
                "log_key": self.ledger.verifier.encode(),
            },
        }
        recipient_key = _recipient_key(self.store, aid)
        with atomic_output(out, forbidden=forbidden) as fh:
            writer = seal_to(fh, recipient_key, {"agreement": aid})
            with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
                for name, blob in (("data.csv", data), ("manifest.json", json.dumps(manifest, indent=1).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
            writer.close()
        return {"file": str(out), "rows": len(frame), "use": use, "max_uses": a.max_uses, "ledger_seq": seq}


def _recipient_key(store: Store, aid: str) -> bytes:
    with store.read() as conn:
        return bytes.fromhex(
            conn.execute(select(agreements.c.recipient_key).where(agreements.c.id == aid)).scalar_one()
        )
