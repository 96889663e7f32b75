"""Entry point: global options, error handling (one line, exit 2 for refused input, 1 for failed checks).

Command groups load on first use: the root group knows each one's name, its one-line help and where
it lives ("module:attribute"), and imports that module only when the group runs, so `complai
--version`, `complai --help` and completing a command name load none of the front door (pandas,
SQLAlchemy). A new group is one line in COMMANDS.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import typer.main
import typer.utils
from click.shell_completion import CompletionItem
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup

from complai import __version__
from complai.cli.state import console, err_console, state
from complai.config import log_settings
from complai.errors import ComplaiError
from complai.logs import configure_logging

# name: ("module:attribute", one-line help). The attribute is a typer app (a group of commands) or a
# function (one command); the help is what `complai --help` lists without importing the module, and
# tests/cli/test_lazy_start.py checks it against the loaded command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("complai.cli.workspace:init", "Create a new workspace (refuses if one exists)."),
    "status": ("complai.cli.workspace:status", "Show the workspace, its schema version and counts."),
    "quickstart": ("complai.cli.workspace:quickstart", "Show the whole product on the bundled Adult data."),
    "ledger": ("complai.cli.ledger:app", "The verifiable ledger (Merkle transparency log)."),
    "witness": ("complai.cli.witness:app", "Run a witness over HTTP and ask one to cosign (C2SP tlog-witness)."),
    "dataset": ("complai.cli.vault:dataset_app", "Datasets: schemas, ingest, listing."),
    "subject": ("complai.cli.vault:subject_app", "Data subjects: export, erase, rectify, restrict, object."),
    "consent": ("complai.cli.vault:consent_app", "Consent records per subject and purpose."),
    "external": (
        "complai.cli.external:app",
        "External datasets: rows kept in the lake and read through Spark, governed by the vault.",
    ),
    "keys": ("complai.cli.vault:keys_app", "Encryption keys: status and rotation."),
    "retention": ("complai.cli.vault:retention_app", "Retention: delete what is past its dataset's retention."),
    "backup": ("complai.cli.vault:backup_app", "Encrypted backups and restores."),
    "principal": ("complai.cli.access:principal_app", "Principals: people and services that act in the workspace."),
    "token": ("complai.cli.access:token_app", "API tokens (shown once, stored as a hash)."),
    "role": ("complai.cli.access:role_app", "Roles: owner, admin, auditor, analyst, steward."),
    "policy": (
        "complai.cli.access:policy_app",
        "Policy rules: who may do what, on which datasets, for which purposes.",
    ),
    "share": ("complai.cli.access:share_app", "Data-sharing agreements and sealed share packages."),
    "deid": ("complai.cli.deid:app", "De-identification: k-anonymity, l-diversity, t-closeness."),
    "dp": ("complai.cli.dp:app", "Differential privacy: budgets."),
    "train": (
        "complai.cli.models:train",
        "Train a model with DP-SGD (or non-privately if the spec says private: false) and store its card.",
    ),
    "model": ("complai.cli.models:app", "Trained models: list, cards, membership-inference audits."),
    "federated": ("complai.cli.federated:app", "Federated learning with secure aggregation (Flower)."),
    "audit": ("complai.cli.audit:app", "Compliance audits against the workspace and its ledger."),
    "request": ("complai.cli.requests:app", "Data subject requests: deadlines, verification, fulfilment."),
    "incident": ("complai.cli.incidents:app", "Incidents (GDPR Art. 33): open, notify within 72 hours, close."),
    "dpia": ("complai.cli.dpia:app", "Data protection impact assessments (GDPR Art. 35)."),
    "taxonomy": (
        "complai.cli.taxonomy:app",
        "The vocabulary of schemas: data categories, purposes, lawful bases, jurisdictions, subject types.",
    ),
    "serve": (
        "complai.cli.serve:serve",
        "Serve the API (/api/v1), the web console (/console) and the data-subject portal (/portal).",
    ),
    "job": ("complai.cli.jobs:app", "Jobs: the long operations the service runs in the background."),
    "ropa": (
        "complai.cli.ropa:ropa",
        "Generate the records of processing from the datasets' declarations and the sharing agreements.",
    ),
}


def load_command(name: str, spec: str) -> click.Command:
    """Import `spec` ("module:attribute") and make it a click command named `name`: a typer app becomes
    a group (as `add_typer` made it), a function one command."""
    module, attr = spec.split(":")
    obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, typer.Typer):
        command: click.Command = typer.main.get_group(obj)
    else:
        single = typer.Typer()
        single.command(name)(obj)
        command = typer.main.get_command(single)
    command.name = name
    _restore_argument_help(command)
    return command


def _restore_argument_help(command: click.Command) -> None:
    """Put back the help of `typer.Argument(help=...)`: typer 0.20 sets it on its TyperArgument before
    calling click 8.5's Argument.__init__, which now takes a `help` of its own and resets it to None,
    so `--help` lost every argument's description. Read it again from the function's signature."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _restore_argument_help(sub)
    function = getattr(command.callback, "__wrapped__", None)
    if function is None:
        return
    declared = typer.utils.get_params_from_function(function)
    for param in command.params:
        info = declared.get(param.name or "")
        if isinstance(param, TyperArgument) and not param.help and info is not None:
            param.help = getattr(info.default, "help", None)


def remote_command(name: str) -> click.Command:
    """The remote form of `name` (cli/remote.py), or a stand-in that says it has none."""
    remote = importlib.import_module("complai.cli.remote")
    spec: str | None = remote.REMOTE.get(name)
    return load_command(name, spec) if spec else remote.no_remote_form(name)


class LazyGroup(TyperGroup):
    """The root group: COMMANDS are imported when run (or completed into); listing them for `--help`
    or for shell completion of their names uses the help recorded in COMMANDS instead."""

    lazy: dict[str, tuple[str, str]] = COMMANDS

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False

    @contextmanager
    def _names_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(n for n in self.commands if n not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if ctx.params.get("server") and cmd_name in self.lazy and not self._listing:
            return remote_command(cmd_name)  # never cached: the same name runs locally without --server
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return self.commands.get(cmd_name)
        spec, help_text = self.lazy[cmd_name]
        if self._listing:  # a stand-in that only names the command: nothing is imported
            return click.Command(cmd_name, help=help_text, short_help=help_text)
        command = load_command(cmd_name, spec)
        self.add_command(command, cmd_name)
        return command

    def load_all(self, ctx: click.Context) -> list[click.Command]:
        """Every command, imported (for checks that walk the whole tree)."""
        return [c for n in self.list_commands(ctx) if (c := self.get_command(ctx, n)) is not None]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with self._names_only():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        with self._names_only():
            return super().shell_complete(ctx, incomplete)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return click.Group.resolve_command(self, ctx, args)
        except click.UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if not matches:
                raise
            hint = f"Did you mean {', '.join(repr(m) for m in matches)}?"
            raise click.UsageError(f"{exc.message.rstrip('.')}. {hint}", exc.ctx) from None


app = typer.Typer(
    name="complai",
    help="Make AI on personal data provably compliant.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


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
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Log what each operation does on stderr: -v for each operation, -vv for more "
            "(format from COMPLAI_LOG: text or json). Never values or secrets.",
        ),
    ] = 0,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="COMPLAI_TOKEN",
            help="Act as the principal of this API token (cpl_...).",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="COMPLAI_SERVER",
            help="Send the command to a complai service at this URL (with --token) instead of opening a workspace.",
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
    state.reset(workspace, state.debug or debug, token, as_principal, server)
    configure_logging(log_settings(verbose))
    if server is None and ctx.invoked_subcommand not in _NO_WORKSPACE_COMMANDS and not ctx.resilient_parsing:
        # heavy: opening a workspace loads the front door (pandas, SQLAlchemy), which --help must not
        from complai.cli.common import authenticate_at_startup

        authenticate_at_startup(ctx)


def _redact(text: str) -> str:
    """`text` with tokens cut to their ids and the caller's token removed (access.identity)."""
    if state.token is None and "cpl_" not in text.lower():
        return text  # nothing token-like: spare a usage error (or a bare `complai`) loading SQLAlchemy
    # heavy: the token pattern lives with the identities (SQLAlchemy); needed only to report an error
    from complai.access.identity import redact_tokens

    return redact_tokens(text, state.token)


def main() -> None:
    """Run the CLI with complai's error contract: one line on stderr, exit 2 (refused) or 1 (failed check)."""
    try:
        # not standalone: click's usage errors come here, to be printed as one line like every other refusal
        rc = app(prog_name="complai", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "complai"
        text = " ".join(_redact(exc.format_message()).split())
        if text:  # empty when the help was shown for a bare group (no_args_is_help)
            err_console.print(f"[red]error:[/] {escape(text)} (see '{escape(where)} --help')", soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        text = " ".join(_redact(exc.format_message()).split())
        err_console.print(f"[red]error:[/] {escape(text)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except ComplaiError as exc:
        if state.debug:
            traceback.print_exc()
        err_console.print(f"[red]error:[/] {escape(_redact(exc.message))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback unless --debug
        if state.debug:
            traceback.print_exc()
        text = _redact(str(exc)).strip()
        first = escape(text.splitlines()[0]) if text else ""
        err_console.print(f"[red]internal error:[/] {type(exc).__name__}: {first} (run with --debug for details)")
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
