"""Entry point: global options, error handling (one line, exit 2 for refused input, 1 for failed checks)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.markup import escape

from complai import __version__
from complai.access.authz import OWNER
from complai.access.identity import redact_tokens
from complai.app.workspace import Workspace
from complai.cli import access as access_cmd
from complai.cli import audit as audit_cmd
from complai.cli import deid as deid_cmd
from complai.cli import dp as dp_cmd
from complai.cli import dpia as dpia_cmd
from complai.cli import federated as federated_cmd
from complai.cli import incidents as incidents_cmd
from complai.cli import ledger as ledger_cmd
from complai.cli import models as models_cmd
from complai.cli import requests as requests_cmd
from complai.cli import ropa as ropa_cmd
from complai.cli import vault as vault_cmd
from complai.cli.common import (
    authenticate_at_startup,
    console,
    err_console,
    open_session,
    print_json,
    state,
    table,
    workspace_path,
)
from complai.errors import ComplaiError
from complai.quickstart import run_quickstart

app = typer.Typer(
    name="complai",
    help="Make AI on personal data provably compliant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(ledger_cmd.app, name="ledger")
app.add_typer(vault_cmd.dataset_app, name="dataset")
app.add_typer(vault_cmd.subject_app, name="subject")
app.add_typer(vault_cmd.consent_app, name="consent")
app.add_typer(vault_cmd.keys_app, name="keys")
app.add_typer(vault_cmd.retention_app, name="retention")
app.add_typer(vault_cmd.backup_app, name="backup")
app.add_typer(access_cmd.principal_app, name="principal")
app.add_typer(access_cmd.token_app, name="token")
app.add_typer(access_cmd.role_app, name="role")
app.add_typer(access_cmd.policy_app, name="policy")
app.add_typer(access_cmd.share_app, name="share")
app.add_typer(deid_cmd.app, name="deid")
app.add_typer(dp_cmd.app, name="dp")
app.add_typer(models_cmd.app, name="model")
app.add_typer(federated_cmd.app, name="federated")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(requests_cmd.app, name="request")
app.add_typer(incidents_cmd.app, name="incident")
app.add_typer(dpia_cmd.app, name="dpia")
app.command("ropa")(ropa_cmd.ropa)
app.command("train")(models_cmd.train)


def _version(value: bool) -> None:
    if value:
        console.print(f"complai {__version__}")
        raise typer.Exit()


_NO_WORKSPACE_COMMANDS = {"init", "quickstart"}  # they create their own workspace


@app.callback()
def _global(
    ctx: typer.Context,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", envvar="COMPLAI_WORKSPACE", help="Workspace directory."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="COMPLAI_TOKEN",
            help="Act as the principal of this API token (cpl_...).",
            show_default=False,
        ),
    ] = None,
    as_principal: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Owners only: act as this principal (its rights; the ledger records the delegation).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    state.reset(workspace, state.debug or debug, token, as_principal)
    if ctx.invoked_subcommand not in _NO_WORKSPACE_COMMANDS and not ctx.resilient_parsing:
        authenticate_at_startup(ctx)


@app.command()
def init(
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", help="Directory to create.")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="PostgreSQL URL (default: SQLite in the workspace).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a new workspace (refuses if one exists)."""
    path = workspace_path(workspace)
    with Workspace.init(path, database_url=database_url) as ws:
        st = ws.session(OWNER, "administration").status()  # the workspace's creator is its owner
    if json_out:
        print_json(st.as_dict())
    else:
        console.print(f"Created workspace [bold]{path}[/] ({st.workspace_id}), schema {st.schema_revision}")


@app.command()
def status(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show the workspace, its schema version and counts."""
    with open_session("administration") as (_, session):
        st = session.status()
    if json_out:
        print_json(st.as_dict())
        return
    t = table(show_header=False, box=None, columns=2)
    for k, v in st.as_dict().items():
        t.add_row(k.replace("_", " "), str(v))
    console.print(t)


@app.command()
def quickstart(
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="Directory for the quickstart workspace.")
    ] = Path("complai-quickstart"),
    reset: Annotated[bool, typer.Option("--reset", help="Replace an existing workspace at that path.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show the whole product on the bundled Adult data."""
    summary = run_quickstart(workspace, reset=reset, quiet=json_out)
    if json_out:
        print_json(summary)


def main() -> None:
    """Run the CLI with complai's error contract: one line on stderr, exit 2 (refused) or 1 (failed check)."""
    try:
        # not standalone: click's usage errors come here, to be printed as one line like every other refusal
        rc = app(prog_name="complai", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "complai"
        text = " ".join(redact_tokens(exc.format_message(), state.token).split())
        if text:  # empty when the help was shown for a bare group (no_args_is_help)
            err_console.print(f"[red]error:[/] {escape(text)} (see '{escape(where)} --help')", soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        text = " ".join(redact_tokens(exc.format_message(), state.token).split())
        err_console.print(f"[red]error:[/] {escape(text)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except ComplaiError as exc:
        if state.debug:
            traceback.print_exc()
        err_console.print(f"[red]error:[/] {escape(redact_tokens(exc.message, state.token))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback unless --debug
        if state.debug:
            traceback.print_exc()
        text = redact_tokens(str(exc), state.token).strip()
        first = escape(text.splitlines()[0]) if text else ""
        err_console.print(f"[red]internal error:[/] {type(exc).__name__}: {first} (run with --debug for details)")
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
