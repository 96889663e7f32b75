"""`complai --server URL` (or COMPLAI_SERVER): commands sent to a complai service instead of opening a
local workspace, as the principal of --token / COMPLAI_TOKEN (`--as NAME` becomes the service's
delegation header). The server authorises and records each call exactly as it does the API's.

A command with a remote form here answers as its local form does (`--json` included); any other says
in one line that it runs only where the workspace is. A problem the server answers prints as the CLI's
one line: exit 2 for a refusal (4xx), 1 for a failure on the server's side. Only what the API answers
is shown: nothing here reads a workspace, so this module loads no front door. The client, the job
follower and output files are here; the remote forms of the data commands are in remote_data.py, the
external datasets' in remote_external.py, the officers' and auditors' in remote_records.py, the stewards'
and security officers' in remote_admin.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import click
import httpx
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from complai.cli.options import DeltaOpt, EpsilonOpt, MaxRowsOpt, QueryDatasetArg, QueryPurposeOpt, SqlArg
from complai.cli.options import JsonOpt as JsonOpt  # the remote modules and jobs.py take it from here
from complai.cli.output import print_datasets, print_json, table
from complai.cli.state import console, err_console, state
from complai.config import default_workspace
from complai.errors import ComplaiError, InvalidInput
from complai.files import atomic_output, check_output, workspace_protected, write_private

API = "/api/v1"
TIMEOUT_S = 300.0
PAGE = 1000
ACT_AS = "X-Complai-Act-As"
CA_BUNDLE = "COMPLAI_CA_BUNDLE"  # a PEM file of CAs to trust for an https server (a self-signed one)

ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
POLL_S = 0.25
FINISHED = ("succeeded", "failed", "cancelled")


class RemoteError(ComplaiError):
    """A problem document the server answered (or no answer at all): exit 2 for a 4xx, 1 otherwise."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = status or 502
        self.exit_code = 2 if status is not None and 400 <= status < 500 else 1


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_server_url(url: str) -> str:
    """The server's base URL: http(s), no path beyond `/`; plain http only to a loopback address, where
    a token cannot be read on the way."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"--server: {url!r} is not an http(s) URL (e.g. https://complai.example:8443)")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise InvalidInput(f"--server: plain http to {parts.hostname} would send the token in clear: use https")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"--server: give the server's base URL only, not {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


class Remote:
    """An HTTP client of one complai service, as the caller the global options name."""

    def __init__(self, server: str, token: str | None, act_as: str | None = None) -> None:
        if not token:
            raise InvalidInput("--server needs the caller's API token: give --token, or set COMPLAI_TOKEN")
        self.base = check_server_url(server)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if act_as:
            headers[ACT_AS] = act_as
        bundle = os.environ.get(CA_BUNDLE)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=bundle) if bundle else True
        self._client = httpx.Client(base_url=self.base + API, headers=headers, timeout=TIMEOUT_S, verify=verify)

    def pages(self, path: str, params: dict[str, Any] | None = None, page: int = PAGE) -> list[Any]:
        """Every item of a listing the server answers a page at a time (limit/offset)."""
        items: list[Any] = []
        while True:
            got = self.call("GET", path, params={**(params or {}), "limit": page, "offset": len(items)})
            items.extend(got)
            if len(got) < page:
                return items

    def follow(self, job: dict[str, Any], label: str, quiet: bool = False) -> dict[str, Any]:
        """Wait for a job, showing its progress (with its total once the server knows it) on stderr; the
        finished job, or RemoteError with its problem (exit 2 for a refusal, 1 otherwise). Interrupted,
        the job goes on on the server: `job cancel ID` stops it."""
        with job_progress(disable=quiet) as bar:
            task = bar.add_task(label, total=None, count="")
            while job.get("state") not in FINISHED:
                p = job.get("progress") or {}
                bar.update(task, completed=p.get("done") or 0, total=p.get("total"), count=progress_text(job))
                time.sleep(POLL_S)
                job = self.call("GET", f"/jobs/{segment(job['id'])}")
        problem = job.get("problem")
        if job["state"] != "succeeded":
            if isinstance(problem, dict):
                line = problem.get("detail") or problem.get("title") or job["state"]
                status = problem.get("status")
                code = status if isinstance(status, int) else None
                raise RemoteError(f"job {job['id']}: {' '.join(str(line).split())}", code)
            raise RemoteError(f"job {job['id']} {job['state']}", 409 if job["state"] == "cancelled" else None)
        return job

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def response(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The server's answer (any content type), or RemoteError with its problem's one line."""
        try:
            r = self._client.request(method, path, **kw)
        except httpx.TransportError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RemoteError(f"no answer from {self.base}: {reason}") from None
        if r.status_code >= 400:
            raise RemoteError(problem_line(r.status_code, r.headers.get("content-type", ""), r.text), r.status_code)
        return r

    def download(self, method: str, path: str, target: Path, force: bool, **kw: Any) -> httpx.Response:
        """Stream the server's answer into a new file (0600, whole or not at all, never through a link);
        the response (its headers) once written, or RemoteError with its problem's one line."""
        try:
            with self._client.stream(method, path, **kw) as r:
                if r.status_code >= 400:
                    r.read()
                    ctype = r.headers.get("content-type", "")
                    raise RemoteError(problem_line(r.status_code, ctype, r.text), r.status_code)
                with atomic_output(target, force=force, forbidden=protected()) as fh:
                    for block in r.iter_bytes(1 << 20):
                        fh.write(block)
                return r
        except httpx.TransportError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RemoteError(f"no answer from {self.base}: {reason}") from None

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON the server answered, or RemoteError with its problem's one line."""
        r = self.response(method, path, **kw)
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise RemoteError(f"{self.base} answered {r.status_code} with something other than JSON") from None


def problem_line(status: int, content_type: str, text: str) -> str:
    """One line from a problem document (its detail, else its title), or the bare status."""
    if "json" in content_type:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            line = doc.get("detail") or doc.get("title")
            if isinstance(line, str) and line.strip():
                return " ".join(line.split())
    return f"the server answered HTTP {status}"


def remote() -> Remote:
    assert state.server is not None
    return Remote(state.server, state.token, state.as_principal)


def output_path(path: Path, force: bool) -> Path:
    """Refuse, before anything is asked of the server, an output file that may not be written (an existing
    file without --force, a link, a folder, the local workspace's keys or database), as the local forms do."""
    return check_output(path, force=force, forbidden=protected())


def protected() -> list[Path]:
    """What no output path may replace or enter: a local workspace's keys, settings and database."""
    return workspace_protected(state.workspace or default_workspace())


def write_file(path: Path, data: bytes | str, force: bool, say: bool = False) -> None:
    """A new file (0600, written whole or not at all, never through a link), as the local forms write."""
    write_private(path, data, force=force, forbidden=protected())
    if say:
        err_console.print(f"wrote {path}")


def job_progress(disable: bool = False) -> Progress:
    """A progress bar for a job the server runs: done of total (once known) in the job's unit, on stderr."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=disable or not err_console.is_terminal,
    )


def key_values(doc: dict[str, Any], keys: list[str] | None = None) -> None:
    t = table(show_header=False, box=None, columns=2)
    for k in keys or list(doc):
        t.add_row(k.replace("_", " "), str(doc.get(k)))
    console.print(t)


def no_remote_form(name: str, offered: list[str] | None = None) -> click.Command:
    """A stand-in that refuses, in one line, a command that runs only where the workspace is."""

    def refuse() -> None:
        also = f" (with --server, `{name.split()[0]}` offers: {', '.join(offered)})" if offered else ""
        raise InvalidInput(f"`complai {name}` has no remote form: run it without --server, on the workspace{also}")

    return click.Command(
        name.split()[-1],
        callback=refuse,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help="Runs only on the workspace (no remote form).",
    )


class RemoteGroup(TyperGroup):
    """A command group's remote form: a subcommand without one is refused in one line."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        return no_remote_form(f"{self.name} {cmd_name}", sorted(self.commands))


# --- status ----------------------------------------------------------------------------------------


def status(json_out: JsonOpt = False) -> None:
    """Show the workspace, its schema version and counts."""
    with remote() as r:
        doc = r.call("GET", "/status")
    if json_out:
        print_json(doc)
        return
    key_values({"server": r.base, **doc})


# --- ledger ----------------------------------------------------------------------------------------

ledger_app = typer.Typer(cls=RemoteGroup, help="The verifiable ledger (Merkle transparency log).", no_args_is_help=True)


@ledger_app.command("status")
def ledger_status(json_out: JsonOpt = False) -> None:
    """Size, root, latest checkpoint, witnesses and entries per event type."""
    with remote() as r:
        doc = r.call("GET", "/ledger")
    if json_out:
        print_json(doc)
        return
    key_values(doc, ["origin", "size", "root", "log_key", "latest_checkpoint"])
    console.print(f"witnesses  {', '.join(doc.get('witnesses') or []) or 'none'}")
    by_type = doc.get("entries_by_type") or {}
    if by_type:
        t = table("event type", "entries")
        for name, n in sorted(by_type.items()):
            t.add_row(name, str(n))
        console.print(t)


# --- datasets --------------------------------------------------------------------------------------

dataset_app = typer.Typer(cls=RemoteGroup, help="Datasets: schemas, ingest, listing.", no_args_is_help=True)


@dataset_app.command("list")
def dataset_list(json_out: JsonOpt = False) -> None:
    """The datasets the caller may act on (exact counts only for those who may see exact data)."""
    docs: list[dict[str, Any]] = []
    with remote() as r:
        while True:
            page = r.call("GET", "/datasets", params={"limit": PAGE, "offset": len(docs)})
            docs.extend(page)
            if len(page) < PAGE:
                break
    rows = [
        {
            "dataset": d["name"],
            "records": d.get("records"),
            "subjects": d.get("subjects"),
            "purposes": list(d.get("purposes") or {}),
            "retention": d.get("retention"),
            "jurisdiction": d.get("jurisdiction"),
        }
        for d in docs
    ]
    print_datasets(rows, json_out)


# --- differential privacy --------------------------------------------------------------------------

dp_app = typer.Typer(cls=RemoteGroup, help="Differential privacy: budgets.", no_args_is_help=True)


@dp_app.command("query")
def dp_query(
    dataset: QueryDatasetArg,
    sql: SqlArg,
    epsilon: EpsilonOpt,
    purpose: QueryPurposeOpt,
    delta: DeltaOpt = None,
    max_rows: MaxRowsOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Answer an aggregate query with differential privacy, spending the dataset's budget."""
    from complai.dp.sql import parse  # heavy: sqlglot; the statement's syntax only, as the local form checks

    named = parse(sql).dataset
    if named != dataset:
        raise InvalidInput(f"the query reads {named!r}, not {dataset!r}")
    body: dict[str, Any] = {"sql": sql, "epsilon": epsilon, "max_rows": max_rows}
    if delta is not None:
        body["delta"] = delta
    with remote() as r:
        doc = r.call("POST", "/dp/query", params={"purpose": purpose}, json=body)
    if json_out:
        print_json(doc)
        return
    t = table("statistic", "group", "value", "± 95 %")
    for label, value in doc["values"].items():
        if isinstance(value, dict):
            for g, v in value.items():
                t.add_row(label, g, f"{v:,.2f}", f"{doc['accuracy'][label][g]:,.2f}")
        else:
            t.add_row(label, "", f"{value:,.2f}", f"{doc['accuracy'][label]:,.2f}")
    console.print(t)
    left = doc["budget_remaining"]
    console.print(
        f"cost: epsilon {doc['epsilon']:g}"
        + (f", delta {doc['delta']:g}" if doc.get("delta") else "")
        + f" ({doc['mechanism']}; rho {doc['rho']:.4g}); epsilon left {left['epsilon_remaining_at_delta']:.4g} "
        f"at delta {left['delta']:g}"
    )


# --- jobs ------------------------------------------------------------------------------------------

job_app = typer.Typer(
    cls=RemoteGroup, help="Jobs: the long operations the service runs in the background.", no_args_is_help=True
)

JOB_COLUMNS = ("id", "kind", "principal", "state", "progress", "created")


def progress_text(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    done, total, unit = p.get("done", 0), p.get("total"), p.get("unit") or ""
    return (f"{done:,}/{total:,} {unit}" if total is not None else f"{done:,} {unit}").strip()


def print_jobs(jobs: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        print_json(jobs)
        return
    t = table(*JOB_COLUMNS)
    for j in jobs:
        t.add_row(j["id"], j["kind"], j["principal"], j["state"], progress_text(j), str(j.get("created_at")))
    console.print(t)


def print_job(job: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(job)
        return
    keys = ["id", "kind", "principal", "purpose", "state", "created_at", "started_at", "finished_at"]
    key_values({**job, "progress": progress_text(job)}, [*keys[:5], "progress", *keys[5:]])
    if job.get("cancel_requested") and job.get("state") in ("queued", "running"):
        console.print("cancel requested: it stops at its next progress report")
    if job.get("problem"):
        pr = job["problem"]
        console.print(f"problem: {pr.get('title')}: {pr.get('detail') or ''}".rstrip(": "))
    if job.get("result") is not None:
        console.print("result:")
        print_json(job["result"])


LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")]
JobId = Annotated[str, typer.Argument(help="The job's id.")]


@job_app.command("list")
def job_list(limit: LimitOpt = 100, json_out: JsonOpt = False) -> None:
    """The caller's jobs (every principal's for an owner or admin), newest first."""
    with remote() as r:
        jobs = r.call("GET", "/jobs", params={"limit": limit})
    print_jobs(jobs, json_out)


@job_app.command("show")
def job_show(job_id: JobId, json_out: JsonOpt = False) -> None:
    """One job: state, progress, result or problem."""
    with remote() as r:
        job = r.call("GET", f"/jobs/{segment(job_id)}")
    print_job(job, json_out)


@job_app.command("cancel")
def job_cancel(job_id: JobId, json_out: JsonOpt = False) -> None:
    """Ask a job to stop: what it did is rolled back."""
    with remote() as r:
        job = r.call("DELETE", f"/jobs/{segment(job_id)}")
    print_job(job, json_out)


def segment(value: str) -> str:
    """A path segment as given, never a way out of it."""
    return quote(value, safe="")


# --- dispatch --------------------------------------------------------------------------------------

# the top-level commands with a remote form: name -> "module:attribute", as cli/main.py's COMMANDS
# (remote_data, remote_records and remote_admin add their commands to the groups here when imported)
_DATA = "complai.cli.remote_data"
_RECORDS = "complai.cli.remote_records"
_ADMIN = "complai.cli.remote_admin"  # adds `principal add` to remote_records' group
_EXTERNAL = "complai.cli.remote_external"
REMOTE: dict[str, str] = {
    "status": f"{__name__}:status",
    "ledger": f"{_RECORDS}:ledger_app",
    "dataset": f"{_DATA}:dataset_app",
    "external": f"{_EXTERNAL}:external_app",
    "dp": f"{_DATA}:dp_app",
    "model": f"{_DATA}:model_app",
    "job": f"{__name__}:job_app",
    "audit": f"{_RECORDS}:audit_app",
    "request": f"{_RECORDS}:request_app",
    "incident": f"{_RECORDS}:incident_app",
    "dpia": f"{_RECORDS}:dpia_app",
    "ropa": f"{_RECORDS}:ropa",
    "principal": f"{_ADMIN}:principal_app",
    "role": f"{_ADMIN}:role_app",
    "policy": f"{_ADMIN}:policy_app",
    "taxonomy": f"{_ADMIN}:taxonomy_app",
    "train": f"{_DATA}:train",
    "subject": f"{_ADMIN}:subject_app",
    "consent": f"{_ADMIN}:consent_app",
    "keys": f"{_ADMIN}:keys_app",
    "backup": f"{_ADMIN}:backup_app",
    "share": f"{_ADMIN}:share_app",
    "retention": f"{_ADMIN}:retention_app",
    "token": f"{_RECORDS}:token_app",
}
