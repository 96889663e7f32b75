"""Engine, transactions and migrations.

SQLite (default): WAL, foreign keys on, synchronous=FULL (an acknowledged commit survives power loss),
and write transactions opened with BEGIN IMMEDIATE so concurrent writers queue on the database lock
instead of failing on upgrade from a read lock. PostgreSQL: psycopg 3; writers that must be
serialised (the ledger) lock a row with SELECT ... FOR UPDATE.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, DisconnectionError, OperationalError

from complai.errors import InvalidInput, WorkspaceError

MIGRATIONS = Path(__file__).parent / "migrations"
_WRITE = "complai_write"
_SCRIPTS_LOCK = threading.Lock()
_scripts: ScriptDirectory | None = None


def _migration_scripts() -> ScriptDirectory:
    """complai's migrations, read once per process: Alembic parses every revision file each time it builds
    a ScriptDirectory, which cost more than the rest of opening a workspace."""
    global _scripts
    with _SCRIPTS_LOCK:
        if _scripts is None:
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            scripts = ScriptDirectory.from_config(cfg)
            scripts.get_current_head()  # builds the revision map here, under the lock
            _scripts = scripts
        return _scripts


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and route them to psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput("database URL is not valid (expected sqlite:///PATH or postgresql://...)") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise InvalidInput(f"unsupported database {backend!r} (supported: sqlite, postgresql)")
    return parsed.render_as_string(hide_password=False)


def placeholder(conn: Connection) -> str:
    """The driver's positional parameter marker, for driver-level executemany."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def bulk_insert(
    conn: Connection, table: Table, rows: Sequence[Sequence[Any]], columns: Sequence[str] | None = None
) -> None:
    """Insert tuples (in the order of `columns`, default all of the table's) through the driver's executemany.

    The hot paths (ledger appends, encrypted records, new subjects and keys) insert plain ints, bytes,
    strings and UTC datetimes; SQLAlchemy's per-value bind processing costs as much as the insert. On
    SQLite, datetimes are written in SQLAlchemy's own text format so that Core reads them back.
    """
    if not rows:
        return
    names = list(columns) if columns else [c.name for c in table.columns]
    ph = placeholder(conn)
    if conn.dialect.name == "sqlite":
        dt = [i for i, n in enumerate(names) if isinstance(table.c[n].type, DateTime)]
        if dt:
            text: dict[Any, str] = {}  # a batch usually shares one timestamp: format each value once

            def fmt(v: Any) -> Any:
                if v is None:
                    return None
                if v not in text:
                    text[v] = v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                return text[v]

            converted = []
            for r in rows:
                row = list(r)
                for i in dt:
                    row[i] = fmt(row[i])
                converted.append(tuple(row))
            rows = converted
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([ph] * len(names))})"
    conn.exec_driver_sql(sql, list(rows))


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# A pooled connection idle this long is pinged before it is handed out (a server restarted or a
# connection dropped while the pool was quiet is replaced, not failed on); one in steady use is not:
# pinging at every checkout cost a round trip per transaction, several per request of a busy service.
PING_AFTER_IDLE_S = 5.0


def _ping_when_idle(store: Store) -> None:
    engine = store.engine

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["complai_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("complai_idle_since")
        if since is None or time.monotonic() - since < store.ping_after_idle_s:
            return  # new, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool replaces it with a new connection (and retries the checkout)
            raise DisconnectionError("a pooled connection was lost while idle") from exc


class _SharedRead:
    """The read transaction of a `Store.shared_reads` block, opened at its first read."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: Connection | None = None
        self.marks: dict[Callable[[], Any], Any] = {}

    def connection(self) -> Connection:
        if self.conn is None:
            # taken before the transaction's snapshot (its first statement): see Store.before_snapshot
            self.marks = {mark: mark() for mark in self.store.snapshot_marks}
            conn = self.store.engine.connect()
            try:
                if self.store.dialect == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                conn.begin()
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    def end(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.rollback()
            finally:
                conn.close()


class Store:
    """A database with complai's schema; hands out read and write transactions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        # hide_parameters: database errors must never carry bound values (personal data, keys) into
        # messages or logs
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        self.engine: Engine = create_engine(self.url, **kwargs)
        self.ping_after_idle_s = PING_AFTER_IDLE_S
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        else:
            _ping_when_idle(self)
        self._shared = threading.local()  # this thread's shared read snapshot (shared_reads), if any
        self.snapshot_marks: list[Callable[[], Any]] = []  # see before_snapshot

    # --- transactions ------------------------------------------------------------------------

    @contextmanager
    def shared_reads(self) -> Iterator[None]:
        """Every `read()` this thread opens inside the block is served by one read transaction, opened
        at the first of them and rolled back when the block ends: an operation's reads (its
        authorisation, the dataset's schema, a budget's pre-check, the records) see one snapshot and cost
        one BEGIN and one ROLLBACK instead of one pair each. Writes are unaffected (`write()` is always
        its own transaction), and a read inside the block does not see them: an operation shares its
        reads only up to its first write. A block inside another shares the outer one's snapshot; a read
        that raises ends the shared transaction (the next read opens a new one)."""
        if getattr(self._shared, "slot", None) is not None:
            yield
            return
        slot = _SharedRead(self)
        self._shared.slot = slot
        try:
            yield
        finally:
            self._shared.slot = None
            slot.end()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that may write; commits on success, rolls back on any exception."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def before_snapshot(self, mark: Callable[[], Any]) -> Any:
        """`mark()` as it was before the snapshot the next `read()` of this thread sees was taken: called
        now, unless that read is a `shared_reads` transaction already open, whose mark (`mark` registered in
        `snapshot_marks`) was taken when it opened. (The read cache looks at the ledger from such a mark: a
        snapshot taken after it sees every entry it names.)"""
        slot: _SharedRead | None = getattr(self._shared, "slot", None)
        if slot is not None and slot.conn is not None and mark in slot.marks:
            return slot.marks[mark]
        return mark()

    def renew_shared_reads(self) -> None:
        """Inside `shared_reads`: end its transaction, so that the next read sees what was committed
        since (a read that found its snapshot outdated, retrying)."""
        slot: _SharedRead | None = getattr(self._shared, "slot", None)
        if slot is not None:
            slot.end()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot transaction (rolled back at the end): every statement in it sees the
        same committed state. On PostgreSQL that takes REPEATABLE READ (READ COMMITTED would let a check
        that reads two tables, such as a budget against the ledger's spends, see a concurrent commit in
        one and not the other); SQLite's read transactions are snapshots already (WAL). Inside
        `shared_reads` it is that block's transaction."""
        slot: _SharedRead | None = getattr(self._shared, "slot", None)
        if slot is not None:
            conn = slot.connection()
            try:
                yield conn
            except BaseException:
                slot.end()  # its transaction may be aborted (PostgreSQL): the next read opens a new one
                raise
            return
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            trans = conn.begin()
            try:
                yield conn
            finally:
                trans.rollback()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction whose every statement sees one consistent state (backups, exports)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            trans = conn.begin()
            try:
                yield conn
            finally:
                trans.rollback()

    def purge_freed(self) -> None:
        """After personal data was deleted: fold the write-ahead log into the database and truncate it, so
        the pre-deletion page images the log still holds are gone too (SQLite; PostgreSQL has no equivalent,
        see docs/security.md). Best effort: a reader that holds an old snapshot defers it to a later call."""
        if self.dialect != "sqlite":
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def dispose(self) -> None:
        self.engine.dispose()

    # --- schema ------------------------------------------------------------------------------

    def _alembic(self, conn: Connection) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        return cfg

    @staticmethod
    def head_revision() -> str:
        head = _migration_scripts().get_current_head()
        assert head is not None
        return head

    def current_revision(self, conn: Connection | None = None) -> str | None:
        if conn is None:
            with self.read() as c:
                return MigrationContext.configure(c).get_current_revision()
        return MigrationContext.configure(conn).get_current_revision()

    def migrate(self, conn: Connection, target: str = "head") -> tuple[str | None, str]:
        """Upgrade the schema inside the caller's write transaction; returns (before, after)."""
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(72786510)"))
        before = self.current_revision(conn)
        scripts = _migration_scripts()
        known = {s.revision for s in scripts.walk_revisions()}
        if before is not None and before not in known:
            raise WorkspaceError(
                f"database schema revision {before} is unknown to this complai (written by a newer version?)"
            )
        wanted = self.head_revision() if target == "head" else target
        if before != wanted:
            # alembic.command.upgrade, on the scripts already read
            def upgrade(rev: Any, _context: Any) -> Any:
                return scripts._upgrade_revs(target, rev)

            with EnvironmentContext(self._alembic(conn), scripts, fn=upgrade, destination_rev=target):
                scripts.run_env()
        after = self.current_revision(conn)
        assert after is not None
        return before, after

    def check_reachable(self) -> None:
        try:
            with self.read() as conn:
                conn.execute(text("SELECT 1"))
        except (OperationalError, DatabaseError) as exc:
            raise WorkspaceError(
                f"cannot open database {redact_url(self.url)}: {str(exc.orig).splitlines()[0]}"
            ) from None


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        # freed cells are overwritten with zeros: erased subjects' keys and ciphertexts must not linger in
        # free pages. Some builds enable this by default; complai never relies on the build.
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
