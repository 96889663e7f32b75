"""Composition root: `Workspace.init(path)` creates a workspace, `Workspace.open(path)` wires one up.

Nothing else constructs services. A workspace is a directory with complai.toml, keys/ (mode 0700,
key files 0600) and, unless a database URL points elsewhere, complai.db (SQLite, WAL).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, insert, inspect, select
from sqlalchemy.exc import DatabaseError, OperationalError

from complai.access.agreements import Agreements
from complai.access.authz import Authz
from complai.access.identity import OWNER, Credential, Identity, IssuedToken, Principal, is_principal_name
from complai.access.policy import Policy
from complai.app.backup import RestoreResult, restore_backup
from complai.app.login import LoginLimits, password_login
from complai.app.services import Services, Status, status
from complai.app.session import Session
from complai.app.tlog import TransparencyLog
from complai.clock import Clock, SystemClock, utc_iso
from complai.compliance.incidents import Incidents
from complai.compliance.requests import Requests
from complai.config import (
    CONFIG_FILE,
    DEFAULT_DB_FILE,
    Settings,
    load_settings,
    refuse_stored_password,
    spark_settings,
)
from complai.crypto.keyfiles import read_secret, write_secret
from complai.crypto.keyring import FileKeyProvider, KeyProvider, Keyring
from complai.crypto.pseudonym import Pseudonymizer
from complai.crypto.signing import Signer
from complai.deid.operators import Keys as DeidKeys
from complai.dp.budget import Budgets
from complai.dp.models import Models
from complai.errors import (
    AlreadyExists,
    AuthenticationFailed,
    ComplaiError,
    IntegrityError,
    InvalidInput,
    NotFound,
    WorkspaceError,
)
from complai.events import PseudonymKeyRecorded, SchemaMigrated, WorkspaceCreated
from complai.ledger.log import Ledger
from complai.spark import SparkRuntime
from complai.store import Store
from complai.store.tables import ledger_entries, meta
from complai.taxonomy import Taxonomy, load_taxonomy
from complai.vault.catalog import Catalog
from complai.vault.keys import KeyService
from complai.vault.notices import Notices, RecordsExpired, SubjectsErased
from complai.vault.service import Vault

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LEDGER_KEY = "ledger.key"
PSEUDONYM_KEY = "pseudonym.key"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: who proved themselves (`principal`, by `credential` when a token was
    given) and whom their operations act as (`acting`: themselves, or the principal they delegate to)."""

    principal: Principal
    credential: Credential | None
    acting: str

    @property
    def delegating(self) -> bool:
        return self.acting != self.principal.name

    @property
    def token_expires(self) -> datetime | None:
        """When the token the caller proved itself with expires (None: no token, or one that never does)."""
        return self.credential.expires_at if self.credential is not None else None


class Workspace:
    """An open workspace: settings, store, keys, ledger and the services built on them."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        signer: Signer,
        pseudonyms: Pseudonymizer,
        key_provider: KeyProvider,
        pseudonym_key: bytes,
    ):
        self.settings = settings
        self.path = settings.path
        self.store = store
        self.clock = clock
        self.pseudonyms = pseudonyms
        self.taxonomy: Taxonomy = load_taxonomy()
        self.ledger = Ledger(store, signer, settings.ledger_origin, clock)
        self.catalog = Catalog(store, self.ledger, self.taxonomy, clock)
        self.keyring = Keyring(key_provider, clock)
        notices = Notices()
        self.vault = Vault(store, self.ledger, self.catalog, self.keyring, pseudonyms, self.taxonomy, clock, notices)
        self.keys = KeyService(store, self.ledger, self.keyring, clock)
        self.deid_keys = DeidKeys.from_workspace_key(pseudonym_key)
        self.budgets = Budgets(store, self.ledger, clock)
        self.models = Models(store, self.ledger, self.budgets, clock, self.path / "models")
        notices.subscribe(SubjectsErased, self.models.flag_erased)
        notices.subscribe(RecordsExpired, self.models.flag_expired)
        self.requests = Requests(store, self.ledger, self.vault, self.catalog, self.taxonomy, clock)
        self.incidents = Incidents(store, self.ledger, clock)
        self.authz = Authz(store, self.ledger, clock)
        self.identity = Identity(store, self.ledger, clock, self.authz)
        self.policy = Policy(store, self.ledger, self.identity, self.taxonomy, clock, self.authz)
        self.agreements = Agreements(
            store, self.ledger, self.catalog, self.vault, self.authz, self.taxonomy, clock, pseudonym_key
        )
        self.spark = SparkRuntime(spark_settings(settings))  # starts nothing until a session is asked for
        self.services = Services(
            settings=settings,
            store=store,
            clock=clock,
            taxonomy=self.taxonomy,
            ledger=self.ledger,
            catalog=self.catalog,
            keyring=self.keyring,
            pseudonyms=pseudonyms,
            vault=self.vault,
            keys=self.keys,
            deid_keys=self.deid_keys,
            budgets=self.budgets,
            models=self.models,
            requests=self.requests,
            incidents=self.incidents,
            identity=self.identity,
            authz=self.authz,
            policy=self.policy,
            agreements=self.agreements,
            spark=self.spark,
        )

    def session(self, credential: str | Caller, purpose: str) -> Session:
        """A purpose-bound session: `credential` is an API token (cpl_...), a caller `authenticate`
        returned or, for trusted in-process callers, a principal name. Every operation through it is
        checked against the policy.

        Anything that is not a well-formed principal name is treated as a token, so a mangled token
        (padded, `Bearer ...`, re-cased) is refused without being repeated in the message. The CLI
        never passes a name from its command line here unverified (cli/common.py). A caller acting as
        itself is not looked up again (a service authenticates each request once); a delegating one's
        delegate is."""
        self.taxonomy.purpose(purpose)
        if isinstance(credential, Caller):
            if not credential.delegating:
                return Session(self.services, credential.principal, purpose)
            credential = credential.acting
        if credential.startswith("cpl_") or not is_principal_name(credential):
            principal = self.identity.authenticate(credential)
        else:
            try:
                principal = self.identity.get(credential)
            except NotFound:
                raise AuthenticationFailed(f"unknown principal {credential!r}") from None
            if principal.disabled:
                raise AuthenticationFailed(f"principal {credential!r} is disabled")
        return Session(self.services, principal, purpose)

    def authenticate(
        self, token: str | None = None, *, act_as: str | None = None, record_refusal: bool = True
    ) -> Caller:
        """Who is calling, for the command line: the principal of `token` (a real API token; a principal
        name is refused), else the owner. With `act_as` NAME the caller must hold the owner role (a
        refusal is recorded) and NAME must be an enabled principal. AuthenticationFailed for a bad
        token or no usable owner (a refused token is recorded unless `record_refusal` is false), PolicyDenied
        for a forbidden delegation, InvalidInput for a bad NAME."""
        credential: Credential | None = None
        if token is not None:
            credential = self.identity.authenticate_credential(token, record_refusal=record_refusal)
            principal = credential.principal
        else:
            try:
                principal = self.identity.get(OWNER)
            except NotFound:
                raise AuthenticationFailed("this workspace has no owner principal: give --token") from None
            if principal.disabled:
                raise AuthenticationFailed("the owner principal is disabled: give --token")
        acting = principal.name
        if act_as is not None and act_as != principal.name:
            self.authz.check_act_as(principal)
            try:
                target = self.identity.get(act_as)
            except NotFound:
                raise InvalidInput(f"--as: no principal named {act_as!r}") from None
            if target.disabled:
                raise InvalidInput(f"--as: principal {act_as!r} is disabled")
            acting = target.name
        return Caller(principal, credential, acting)

    def transparency_log(self) -> TransparencyLog:
        """The ledger's public face (c2sp.org/tlog-tiles): its latest checkpoint and hash tiles, which
        hold no personal data and need no principal; entry bundles only for an authorised caller."""
        return TransparencyLog(self.ledger)

    def login(
        self, name: str, password: str, *, address: str, lifetime: str = "PT1H", limits: LoginLimits | None = None
    ) -> IssuedToken:
        """A person's password login (console, API password flow): a token of `lifetime` for `name`.
        Refused attempts are recorded and rate-limited per principal and address (app/login.py)."""
        return password_login(
            self.services, name, password, address=address, lifetime=lifetime, limits=limits or LoginLimits()
        )

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def init(cls, path: Path | str, database_url: str | None = None, clock: Clock | None = None) -> Workspace:
        """Create a new workspace; refuses (and changes nothing) if one exists there already."""
        path = Path(path)
        clock = clock or SystemClock()
        if (path / CONFIG_FILE).exists():
            raise AlreadyExists(f"a complai workspace already exists at {path}")
        if path.exists() and not path.is_dir():
            raise InvalidInput(f"{path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            raise InvalidInput(f"{path} is not empty; choose an empty or new directory")
        if database_url:
            refuse_stored_password(database_url)
        store = Store(database_url) if database_url else None
        if store is not None:
            _refuse_used_database(store)
        created_dir = not path.exists()
        wid = str(uuid.uuid4())
        now = clock.now()
        settings = Settings(
            path=path,
            workspace_id=wid,
            created=utc_iso(now),
            database_url=database_url,
            ledger_origin=f"complai.local/{wid}",
        )
        try:
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)  # the workspace holds keys and (SQLite) the encrypted records
            keys = settings.keys_dir
            keys.mkdir(mode=0o700)
            os.chmod(keys, 0o700)
            signer = Signer.generate(settings.ledger_origin)
            signer.save(keys / LEDGER_KEY)
            pseudonym_key = os.urandom(32)
            write_secret(keys / PSEUDONYM_KEY, pseudonym_key)
            FileKeyProvider.create(keys, clock)
            if store is None:
                url = settings.resolved_database_url()
                if url == settings.default_database_url():
                    # created 0600 before SQLite opens it: its -wal and -shm files take the same mode
                    os.close(os.open(path / DEFAULT_DB_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                store = Store(url)
            with store.write() as conn:
                _, rev = store.migrate(conn)
                conn.execute(
                    insert(meta),
                    [
                        {"key": "workspace_id", "value": wid},
                        {"key": "created", "value": settings.created},
                    ],
                )
                ledger = Ledger(store, signer, settings.ledger_origin, clock)
                ledger.append(
                    conn,
                    WorkspaceCreated(
                        time=now,
                        actor=OWNER,
                        purpose="administration",
                        workspace_id=wid,
                        schema_revision=rev,
                        ledger_key_id=signer.verifier.id.hex(),
                        pseudonym_key_fingerprint=pseudonym_key_fingerprint(pseudonym_key),
                    ),
                )
            settings.write()  # last: a directory without complai.toml is not a workspace
        except BaseException:
            if store is not None:
                store.dispose()
            _remove_partial(path, created_dir)
            raise
        store.dispose()
        return cls.open(path, clock=clock)

    @classmethod
    def open(cls, path: Path | str, clock: Clock | None = None) -> Workspace:
        """Open an existing workspace, upgrading an older schema (and recording that in the ledger)."""
        settings = load_settings(Path(path))
        clock = clock or SystemClock()
        _private_sqlite_files(settings)
        store = Store(settings.resolved_database_url())
        try:
            store.check_reachable()
            signer = Signer.load(settings.keys_dir / LEDGER_KEY, settings.ledger_origin)
            pkey = read_secret(settings.keys_dir / PSEUDONYM_KEY, size=32)
            provider = FileKeyProvider(settings.keys_dir, clock)
            ws = cls(settings, store, clock, signer, Pseudonymizer(pkey), provider, pkey)
            ws._upgrade_and_check(pseudonym_key_fingerprint(pkey))
        except ComplaiError:
            store.dispose()
            raise
        except (OperationalError, DatabaseError) as exc:
            store.dispose()
            raise WorkspaceError(f"corrupt workspace at {path}: database error ({_first_line(exc)})") from None
        return ws

    def _upgrade_and_check(self, pseudonym_fingerprint: str) -> None:
        with self.store.write() as conn:
            before = self.store.current_revision(conn)
            if before is None:
                raise WorkspaceError(f"corrupt workspace at {self.path}: its database holds no complai schema")
            before, after = self.store.migrate(conn)
            wid = conn.execute(select(meta.c.value).where(meta.c.key == "workspace_id")).scalar()
            if wid != self.settings.workspace_id:
                raise WorkspaceError(f"corrupt workspace at {self.path}: database belongs to another workspace")
            self._check_pseudonym_key(conn, pseudonym_fingerprint)
            if before != after:
                self.ledger.append(
                    conn,
                    SchemaMigrated(
                        time=self.clock.now(),
                        actor=OWNER,
                        purpose="administration",
                        from_revision=before,
                        to_revision=after,
                    ),
                )
            if conn.execute(select(meta.c.value).where(meta.c.key == "records_reseal")).scalar() is not None:
                self.vault.reseal_legacy(conn)  # records sealed before versions and times were bound
                conn.execute(delete(meta).where(meta.c.key == "records_reseal"))

    def _check_pseudonym_key(self, conn: Connection, fingerprint: str) -> None:
        """keys/pseudonym.key must be the key whose fingerprint the ledger recorded (at init, or when a
        workspace created before that first opened with this check): a replaced key would make every
        subject look unknown. A workspace without a recorded fingerprint records it now."""
        e = ledger_entries.c
        recorded = None
        first = conn.execute(select(e.data).where(e.seq == 0)).scalar()
        if first is not None:
            recorded = json.loads(bytes(first)).get("pseudonym_key_fingerprint")
        if recorded is None:
            row = conn.execute(
                select(e.data).where(e.kind == PseudonymKeyRecorded.kind).order_by(e.seq).limit(1)
            ).scalar()
            if row is not None:
                recorded = json.loads(bytes(row)).get("pseudonym_key_fingerprint")
        if recorded is None:
            self.ledger.append(
                conn,
                PseudonymKeyRecorded(
                    time=self.clock.now(), actor=OWNER, purpose="security", pseudonym_key_fingerprint=fingerprint
                ),
            )
        elif not hmac.compare_digest(str(recorded), fingerprint):
            raise IntegrityError(
                f"{self.settings.keys_dir / PSEUDONYM_KEY} is not the workspace's pseudonym key (its fingerprint "
                "differs from the one the ledger recorded): the file was replaced; restore it from a backup"
            )

    @classmethod
    def restore_backup(
        cls,
        path: Path | str,
        target: Path | str,
        key: bytes,
        actor: str = OWNER,
        *,
        ledger_from: Path | Sequence[Path] | None = None,
        database_url: str | None = None,
        clock: Clock | None = None,
        accept_stale: bool = False,
    ) -> RestoreResult:
        """Restore an encrypted backup into a new workspace directory, as `actor` (its owner); erasures
        recorded after the backup in every newer ledger are re-applied (app/backup.py says how)."""
        return restore_backup(
            Path(path),
            Path(target),
            key,
            actor,
            open_services=cls._services_at,
            ledger_from=ledger_from,
            database_url=database_url,
            clock=clock,
            accept_stale=accept_stale,
        )

    @classmethod
    @contextmanager
    def _services_at(cls, path: Path, clock: Clock | None) -> Iterator[Services]:
        """The services of the workspace at `path`, open for the length of a block (backup orchestration)."""
        with cls.open(path, clock=clock) as ws:
            yield ws.services

    def keep_opened_records(self, max_records: int, idle_s: float = 300.0) -> None:
        """Keep up to `max_records` opened records in this process between governed reads, so that a DP
        count or a page costs a look at the ledger rather than a decryption of the dataset (`complai
        serve` does; vault/readcache.py says what empties it). 0 keeps none, the default."""
        self.vault.keep_opened(max_records, idle_s)

    def look_for_changes(self) -> None:
        """Empty the kept records if the ledger holds a change since the last look (see above)."""
        self.vault.look_for_changes()

    def warm_up(self) -> None:
        """Load what the first DP answer would otherwise load while its callers wait (sqlglot, OpenDP:
        over a second), and parse one statement: a long-running process calls this before serving."""
        from complai.dp import queries  # noqa: F401 - heavy: OpenDP, loaded here on purpose
        from complai.dp.sql import parse  # heavy: sqlglot

        parse("SELECT COUNT(*) FROM warm_up")

    def forget_opened_records(self) -> None:
        """Drop every kept record now, keeping on afterwards."""
        cache = self.vault.read_cache
        if cache is not None:
            cache.clear()

    def use_spark(self, spark: SparkSession) -> None:
        """Read external datasets with `spark`, a session the caller owns (a notebook's, a cluster job's),
        instead of starting one from `[spark]`; closing the workspace leaves it running."""
        self.spark.use(spark)

    def close(self) -> None:
        self.vault.keep_opened(0)
        self.spark.stop()  # only a session the workspace started
        self.store.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- information ---------------------------------------------------------------------------

    def status(self) -> Status:
        return status(self.services)


def pseudonym_key_fingerprint(key: bytes) -> str:
    """An HMAC of a fixed label under the pseudonym key: identifies the key, reveals nothing of it."""
    return "hmac-sha256:" + hmac.new(key, b"complai/pseudonym-key-fingerprint/v1", hashlib.sha256).hexdigest()


def _refuse_used_database(store: Store) -> None:
    try:
        with store.read() as conn:
            tables = inspect(conn).get_table_names()
            if "meta" in tables:
                wid = conn.execute(select(meta.c.value).where(meta.c.key == "workspace_id")).scalar()
                raise AlreadyExists(f"the database already holds complai workspace {wid}")
            if "alembic_version" in tables:
                raise AlreadyExists("the database already holds a complai schema")
    except (OperationalError, DatabaseError) as exc:
        store.dispose()
        raise WorkspaceError(f"cannot open database: {_first_line(exc)}") from None


def _private_sqlite_files(settings: Settings) -> None:
    """The workspace's SQLite files hold password hashes and wrapped keys: mode 0600 (older
    workspaces were created with the umask's mode)."""
    if settings.resolved_database_url() != settings.default_database_url():
        return
    db = settings.path / DEFAULT_DB_FILE
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        try:
            if f.stat().st_mode & 0o077:
                os.chmod(f, 0o600)
        except OSError:
            pass


def _remove_partial(path: Path, created_dir: bool) -> None:
    if created_dir:
        shutil.rmtree(path, ignore_errors=True)
        return
    shutil.rmtree(path / "keys", ignore_errors=True)
    for name in (DEFAULT_DB_FILE, DEFAULT_DB_FILE + "-wal", DEFAULT_DB_FILE + "-shm", CONFIG_FILE):
        (path / name).unlink(missing_ok=True)


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", exc)
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
