"""Workspace settings: `complai.toml` in the workspace directory, overridden by COMPLAI_* variables.

COMPLAI_WORKSPACE           workspace directory (CLI default)
COMPLAI_DATABASE_URL        database URL (overrides the file's; keeps credentials out of it)
COMPLAI_PIPL_REQUEST_DAYS   days to answer a subject request under PIPL (default: the taxonomy's 15)
COMPLAI_DEBUG               show tracebacks on errors (any non-empty value; the CLI's --debug)
COMPLAI_LOG                 log format on stderr: `text` (default) or `json` (one JSON object a line)
COMPLAI_LOG_LEVEL           log level: WARNING (default), INFO, DEBUG (the CLI's -v, -vv)
COMPLAI_SMTP_PASSWORD       the password of the portal's SMTP relay user (never written anywhere)
COMPLAI_SPARK_MASTER        the Spark master external datasets are read with (overrides [spark] master)

A database password is never written to `complai.toml`: a URL that holds one is refused there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from complai.errors import InvalidInput, WorkspaceError

CONFIG_FILE = "complai.toml"
DEFAULT_DB_FILE = "complai.db"
CONFIG_FORMAT = 1
_KNOWN_SECTIONS = {"workspace", "store", "keys", "ledger", "spark"}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def refuse_stored_password(url: str) -> None:
    """Refuse a database URL that holds a password (in its user part or as ?password=): it would be
    stored in clear in the workspace. The message never repeats the URL."""
    # heavy: SQLAlchemy (0.5 s); every command reads settings, only writing them parses a URL
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError  # heavy: as make_url

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidInput("database URL is not valid (expected sqlite:///PATH or postgresql://...)") from None
    if parsed.password is not None or "password" in parsed.query:
        raise InvalidInput(
            "the database URL holds a password, which complai never writes to complai.toml; give the URL "
            "without it and supply the password through COMPLAI_DATABASE_URL, PGPASSWORD, or a libpq "
            "passfile (~/.pgpass) or service file (PGSERVICE)"
        )


def default_workspace() -> Path:
    return Path(os.environ.get("COMPLAI_WORKSPACE", "complai-workspace"))


def debug_default() -> bool:
    """COMPLAI_DEBUG: show tracebacks on errors, as --debug does."""
    return bool(os.environ.get("COMPLAI_DEBUG"))


@dataclass(frozen=True)
class LogSettings:
    """How complai logs: `format` text or json, `level` a standard level name."""

    format: str = "text"
    level: str = "WARNING"


def log_settings(verbosity: int = 0) -> LogSettings:
    """COMPLAI_LOG (text or json) and COMPLAI_LOG_LEVEL; `verbosity` (the CLI's -v count) overrides the
    level: 1 is INFO, 2 or more DEBUG. InvalidInput for a value that is neither."""
    fmt = os.environ.get("COMPLAI_LOG", "").strip().lower() or "text"
    if fmt not in LOG_FORMATS:
        raise InvalidInput(f"COMPLAI_LOG must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    level = os.environ.get("COMPLAI_LOG_LEVEL", "").strip().upper() or "WARNING"
    if level not in LOG_LEVELS:
        raise InvalidInput(f"COMPLAI_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    if verbosity >= 2:
        level = "DEBUG"
    elif verbosity == 1 and level != "DEBUG":
        level = "INFO"
    return LogSettings(fmt, level)


def pipl_request_days() -> int | None:
    """COMPLAI_PIPL_REQUEST_DAYS: the days a PIPL subject request must be answered in, where the
    organisation sets its own "timely manner"; None (unset or empty): the taxonomy's default. Read when
    a deadline is computed, so a change applies to requests opened from then on."""
    text = os.environ.get("COMPLAI_PIPL_REQUEST_DAYS", "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"COMPLAI_PIPL_REQUEST_DAYS must be a whole number of days, not {text!r}") from None


@dataclass(frozen=True)
class SparkSettings:
    """How complai reaches Spark (docs/spark.md): `master` a Spark master URL (`local[*]` runs Spark in
    this process; `spark://host:7077`, `k8s://https://...`, `yarn` a cluster), `conf` Spark properties
    passed to the session builder as they are (`[spark.conf]` in complai.toml)."""

    master: str = "local[*]"
    conf: dict[str, str] = field(default_factory=dict)


def spark_settings(settings: Settings) -> SparkSettings:
    """The workspace's Spark settings, COMPLAI_SPARK_MASTER (when set and not empty) overriding the master;
    InvalidInput for a value that is no Spark master URL."""
    master = os.environ.get("COMPLAI_SPARK_MASTER", "").strip()
    if not master:
        return settings.spark
    if not is_spark_master(master):
        raise InvalidInput(f"COMPLAI_SPARK_MASTER must be a Spark master URL ({SPARK_MASTERS}), not {master!r}")
    return SparkSettings(master=master, conf=dict(settings.spark.conf))


SPARK_MASTERS = "local[*], local[N], spark://HOST:PORT, k8s://https://HOST:PORT or yarn"


def is_spark_master(master: str) -> bool:
    """A master URL Spark accepts: `yarn`, or one starting with `local`, `spark` or `k8s` (Spark's rule)."""
    if any(c.isspace() for c in master):
        return False
    return master == "yarn" or master.startswith(("local", "spark://", "k8s://"))


def is_local_master(master: str) -> bool:
    """`local`, `local[N]`, `local[*]`, `local[N,F]`...: Spark runs inside this process."""
    return master == "local" or master.startswith("local[")


def spark_env(master: str) -> dict[str, str]:
    """The environment an embedded (local) Spark needs, for the variables not already set: the driver
    binds to the loopback address, and Python workers run this interpreter (so they import complai as
    the driver does). Empty for a cluster master: its executors bring their own Python."""
    if not is_local_master(master):
        return {}
    wanted = {
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    return {name: value for name, value in wanted.items() if not os.environ.get(name)}


@dataclass(frozen=True)
class Settings:
    """What `Workspace.open` needs to wire the workspace together."""

    path: Path
    workspace_id: str
    created: str
    database_url: str | None = None  # None: SQLite file in the workspace
    key_provider: str = "file"
    ledger_origin: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    spark: SparkSettings = field(default_factory=SparkSettings)

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    def resolved_database_url(self) -> str:
        env = os.environ.get("COMPLAI_DATABASE_URL")
        if env:
            return env
        if self.database_url:
            return self.database_url
        return self.default_database_url()

    def default_database_url(self) -> str:
        """The SQLite file in the workspace."""
        return f"sqlite:///{(self.path / DEFAULT_DB_FILE).resolve()}"

    def to_toml(self) -> str:
        doc: dict[str, Any] = {
            "workspace": {"id": self.workspace_id, "created": self.created, "format": CONFIG_FORMAT},
            "keys": {"provider": self.key_provider},
            "ledger": {"origin": self.ledger_origin},
        }
        if self.database_url:
            doc["store"] = {"url": self.database_url}
        if self.spark != SparkSettings():
            section: dict[str, Any] = {"master": self.spark.master}
            if self.spark.conf:
                section["conf"] = dict(self.spark.conf)
            doc["spark"] = section
        return tomli_w.dumps(doc)

    def write(self) -> None:
        if self.database_url:
            refuse_stored_password(self.database_url)
        target = self.path / CONFIG_FILE
        tmp = target.with_suffix(".toml.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # 0644 whatever the umask: no secret in it, but nobody else may rewrite where the store is
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.to_toml())
        os.replace(tmp, target)


def load_settings(path: Path) -> Settings:
    """Read and validate a workspace's settings; one clear error if missing or corrupt."""
    path = Path(path)
    cfg = path / CONFIG_FILE
    if not path.is_dir():
        raise WorkspaceError(f"no complai workspace at {path} (directory does not exist)")
    if not cfg.is_file():
        raise WorkspaceError(f"no complai workspace at {path} ({CONFIG_FILE} not found)")
    try:
        doc = tomllib.loads(cfg.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"corrupt workspace at {path}: {CONFIG_FILE} is not valid TOML ({exc})") from None
    unknown = set(doc) - _KNOWN_SECTIONS
    if unknown:
        raise WorkspaceError(f"corrupt workspace at {path}: unknown section(s) {sorted(unknown)} in {CONFIG_FILE}")
    ws = doc.get("workspace")
    if not isinstance(ws, dict) or not isinstance(ws.get("id"), str) or not isinstance(ws.get("created"), str):
        raise WorkspaceError(f"corrupt workspace at {path}: [workspace] id and created are required")
    if ws.get("format", CONFIG_FORMAT) > CONFIG_FORMAT:
        raise WorkspaceError(f"workspace at {path} was written by a newer complai (format {ws['format']})")
    store = doc.get("store", {})
    keys = doc.get("keys", {})
    ledger = doc.get("ledger", {})
    provider = keys.get("provider", "file")
    if provider != "file":
        raise WorkspaceError(f"unsupported key provider {provider!r} in {CONFIG_FILE} (supported: file)")
    return Settings(
        path=path,
        workspace_id=ws["id"],
        created=ws["created"],
        database_url=store.get("url"),
        key_provider=provider,
        ledger_origin=ledger.get("origin", f"complai/{ws['id']}"),
        spark=_spark_section(path, doc.get("spark", {})),
    )


def _spark_section(path: Path, section: Any) -> SparkSettings:
    """`[spark]`: `master` a non-empty string, `[spark.conf]` a table of strings (Spark properties)."""
    where = f"corrupt workspace at {path}: [spark]"
    if not isinstance(section, dict):
        raise WorkspaceError(f"{where} must be a table")
    unknown = set(section) - {"master", "conf"}
    if unknown:
        raise WorkspaceError(f"{where} has unknown key(s) {sorted(unknown)} (known: master, conf)")
    master = section.get("master", SparkSettings.master)
    if not isinstance(master, str) or not is_spark_master(master.strip()):
        raise WorkspaceError(f"{where} master must be a Spark master URL ({SPARK_MASTERS})")
    conf = section.get("conf", {})
    if not isinstance(conf, dict):
        raise WorkspaceError(f"{where} conf must be a table of Spark properties")
    bad = sorted(k for k, v in conf.items() if not isinstance(v, str))
    if bad:
        raise WorkspaceError(f"{where} conf values must be strings (quote them): {bad}")
    return SparkSettings(master=master.strip(), conf=dict(conf))


@dataclass(frozen=True)
class ServiceSettings:
    """How `complai serve` runs: where, with which limits. The serve command passes them to each worker
    process in COMPLAI_SERVICE (JSON) beside COMPLAI_WORKSPACE; `service_settings()` reads them back."""

    workspace: Path
    tls: bool = False
    max_body_bytes: int = 1 << 20  # a JSON request body
    max_upload_bytes: int = 1 << 30  # an ingested file
    login_token_lifetime: str = "PT1H"  # noqa: S105 - a duration, not a secret
    login_failures_per_principal: int = 5
    login_failures_per_address: int = 20
    login_window_s: int = 900
    job_threads: int = 2
    public_base_url: str | None = None
    public_ledger: bool = False  # /tlog entry bundles without a token (tiles and checkpoint are always public)
    portal_principal: str | None = None  # the service principal the portal acts as; None: no portal
    portal_channel: str = "outbox"  # how one-time codes go out: outbox (<workspace>/portal-outbox) or smtp
    portal_jurisdiction: str = "EU"  # the register's jurisdiction for a person who holds no data here
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_sender: str = "privacy@localhost"
    smtp_user: str | None = None
    smtp_security: str = "starttls"  # starttls, tls (implicit, port 465) or plain (a local relay only)
    job_stale_after_s: int = 120  # a running job silent this long died with its worker: reported failed
    read_cache_records: int = 200_000  # opened records each worker keeps between reads (0: none)
    request_threads: int = 4  # requests a worker runs at once; more wait their turn, holding no lock
    request_timeout_s: float = 60.0  # a request's answer; longer work is a job
    upload_timeout_s: float = 3600.0  # an ingest upload, its body included

    def to_env(self) -> dict[str, str]:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        return {"COMPLAI_WORKSPACE": str(self.workspace), "COMPLAI_SERVICE": json.dumps(data)}


def smtp_password() -> str | None:
    """COMPLAI_SMTP_PASSWORD: the portal's SMTP relay password (kept out of the service's settings)."""
    return os.environ.get("COMPLAI_SMTP_PASSWORD") or None


def service_settings() -> ServiceSettings:
    """The settings `complai serve` gave this worker process (defaults for the workspace otherwise)."""
    raw = os.environ.get("COMPLAI_SERVICE")
    if not raw:
        return ServiceSettings(workspace=default_workspace())
    data = json.loads(raw)
    data["workspace"] = Path(data["workspace"])
    return ServiceSettings(**data)
