"""`complai serve`: the HTTP service (API, console, portal) on uvicorn."""

from __future__ import annotations

import copy
import ipaddress
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from complai.app.workspace import Workspace
from complai.cli.common import err_console, has_workspace, workspace_path
from complai.config import ServiceSettings, load_settings
from complai.errors import AuthenticationFailed, InvalidInput, PolicyDenied, WorkspaceError


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise InvalidInput(f"--max-upload: {text!r} is not a size (e.g. 512M, 2G)") from None


MAX_REQUEST_TIMEOUT_S = 3600.0
MAX_UPLOAD_TIMEOUT_S = 86400.0


def _seconds(option: str, text: str, most: float) -> float:
    """A positive number of seconds, at most `most` (one line naming the option otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{option}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > most:
        raise InvalidInput(f"{option}: {text!r} is not a number of seconds above 0 and at most {most:g}")
    return value


def _log_config(access: bool) -> dict[str, Any]:
    """uvicorn's logging: its own messages from warnings up; with --access-log, a line per request."""
    # heavy: uvicorn loads only for this command
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn"]["level"] = "WARNING"
    config["loggers"]["uvicorn.error"] = {"level": "WARNING"}
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access else "WARNING"
    return config


def _check_portal(
    path: Path, principal: str, channel: str, jurisdiction: str, smtp_host: str | None, security: str
) -> None:
    """Refuse to start a portal that could not act: an unknown or disabled principal, one without its
    rule, a channel that cannot send, or a jurisdiction without a request regime."""
    if channel not in ("outbox", "smtp"):
        raise InvalidInput(f"--portal-channel: {channel!r} is not outbox or smtp")
    if channel == "smtp" and not smtp_host:
        raise InvalidInput("--portal-channel smtp needs --smtp-host")
    if security not in ("starttls", "tls", "plain"):
        raise InvalidInput(f"--smtp-security: {security!r} is not starttls, tls or plain")
    if security == "plain" and smtp_host and not _loopback(smtp_host):
        raise InvalidInput("--smtp-security plain sends codes in clear: only to a relay on this machine")
    with Workspace.open(path) as ws:
        try:
            session = ws.session(principal, "subject_request")
        except AuthenticationFailed:
            raise InvalidInput(
                f"--portal: no enabled principal {principal!r}; add it (complai principal add {principal} "
                f"--kind service) and allow it (complai policy allow {principal} --dataset '*' --action admin "
                "--purpose subject_request)"
            ) from None
        try:
            session.portal_ready()
        except PolicyDenied:
            raise InvalidInput(
                f"--portal: {principal} may not act for the portal; allow it (complai policy allow {principal} "
                "--dataset '*' --action admin --purpose subject_request)"
            ) from None
        session.portal_check_jurisdiction(jurisdiction)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless --insecure or TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (more than one needs a PostgreSQL store).")
    ] = 1,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); serve HTTPS with --key.")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM) for --cert.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plain HTTP on an address other than loopback.")
    ] = False,
    max_upload: Annotated[str, typer.Option(help="Largest file an ingest or restore accepts (e.g. 2G).")] = "1G",
    log_requests: Annotated[bool, typer.Option("--access-log", help="Log each request line (no bodies).")] = False,
    public_ledger: Annotated[
        bool,
        typer.Option("--public-ledger", help="Serve the ledger's entry bundles (/tlog) without a token."),
    ] = False,
    portal: Annotated[
        str | None,
        typer.Option(
            "--portal",
            help="Open the data-subject portal (/portal), acting as this service principal (it needs a rule "
            "allowing admin on * for subject_request). Without it the portal is closed.",
        ),
    ] = None,
    portal_channel: Annotated[
        str, typer.Option(help="How the portal sends one-time codes: outbox (files in the workspace) or smtp.")
    ] = "outbox",
    portal_jurisdiction: Annotated[
        str, typer.Option(help="The jurisdiction of a portal request from someone who holds no data here.")
    ] = "EU",
    smtp_host: Annotated[str | None, typer.Option(help="SMTP relay for --portal-channel smtp.")] = None,
    smtp_port: Annotated[int, typer.Option(min=1, max=65535, help="SMTP relay port.")] = 587,
    smtp_from: Annotated[str, typer.Option(help="Sender address of the portal's messages.")] = "privacy@localhost",
    smtp_user: Annotated[
        str | None, typer.Option(help="SMTP user (its password in COMPLAI_SMTP_PASSWORD, never an option).")
    ] = None,
    smtp_security: Annotated[
        str, typer.Option(help="starttls, tls (implicit TLS) or plain (a relay on this machine only).")
    ] = "starttls",
    job_stale_after: Annotated[
        int,
        typer.Option(
            min=2,
            max=86400,
            help="Seconds a running job may go unreported before it is reported failed (its worker died).",
        ),
    ] = 120,
    read_cache: Annotated[
        int,
        typer.Option(
            min=0,
            max=100_000_000,
            help="Opened records each worker keeps between governed reads (0: none): a DP count or a page "
            "of a dataset this size or smaller then decrypts nothing. Emptied by any change in the ledger.",
        ),
    ] = 200_000,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Requests each worker runs at once (the rest wait their turn). A few per core: with dozens, "
            "a request holding a lock waits for the interpreter while the others queue on the lock.",
        ),
    ] = 4,
    request_timeout: Annotated[
        str,
        typer.Option(
            help="Seconds a request may take before it is answered 503 with its outcome unknown (its work is "
            "not stopped); longer operations run as jobs. At most 3600.",
        ),
    ] = "60",
    upload_timeout: Annotated[
        str,
        typer.Option(
            help="Seconds an ingest upload may take, its body included, in place of --request-timeout. At most 86400.",
        ),
    ] = "3600",
) -> None:
    """Serve the API (/api/v1), the web console (/console) and the data-subject portal (/portal).

    Plain HTTP only on loopback unless --insecure; give --cert and --key for HTTPS. Several workers need
    the workspace on PostgreSQL (SQLite serialises writers: use one worker)."""
    path = workspace_path()
    if not has_workspace(path):
        raise WorkspaceError(f"no workspace at {path} (run `complai init` first)")
    if (cert is None) != (key is None):
        raise InvalidInput("give both --cert and --key for TLS, or neither")
    for f in (cert, key):
        if f is not None and not f.is_file():
            raise InvalidInput(f"no such file: {f}")
    deadline = _seconds("--request-timeout", request_timeout, MAX_REQUEST_TIMEOUT_S)
    upload_deadline = _seconds("--upload-timeout", upload_timeout, MAX_UPLOAD_TIMEOUT_S)
    tls = cert is not None
    if not tls and not _loopback(host) and not insecure:
        raise InvalidInput(f"plain HTTP on {host} would send tokens in clear: give --cert/--key, or --insecure")
    ws_settings = load_settings(path)
    if workers > 1 and ws_settings.resolved_database_url().startswith("sqlite"):
        raise InvalidInput("several workers need a PostgreSQL store; this workspace uses SQLite (use --workers 1)")
    if portal is not None:
        _check_portal(path, portal, portal_channel, portal_jurisdiction, smtp_host, smtp_security)
    settings = ServiceSettings(
        workspace=path.resolve(),
        tls=tls,
        max_upload_bytes=_size(max_upload),
        public_ledger=public_ledger,
        portal_principal=portal,
        portal_channel=portal_channel,
        portal_jurisdiction=portal_jurisdiction,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_sender=smtp_from,
        smtp_user=smtp_user,
        smtp_security=smtp_security,
        job_stale_after_s=job_stale_after,
        request_timeout_s=deadline,
        read_cache_records=read_cache,
        request_threads=threads,
        upload_timeout_s=upload_deadline,
    )
    os.environ.update(settings.to_env())
    # heavy: uvicorn and the FastAPI app load only for this command
    import uvicorn

    scheme = "https" if tls else "http"
    err_console.print(
        f"complai: serving {path} at {scheme}://{host}:{port}/ "
        "(console: /console, API: /api/v1, schema: /api/v1/openapi.json)"
    )
    if portal is None:
        err_console.print("complai: the data-subject portal is closed (open it with --portal PRINCIPAL)")
    else:
        err_console.print(f"complai: portal at /portal as {portal}, codes by {portal_channel}")
    uvicorn.run(
        "complai.service.app:factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        access_log=log_requests,
        log_config=_log_config(log_requests),
        log_level=None,  # the levels are the config's: a level here would silence the access log too
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=30,
        # h11, not httptools (uvicorn's pick when installed): httptools takes a request head of any size,
        # h11 refuses one over this limit
        http="h11",
        h11_max_incomplete_event_size=64 * 1024,
    )
