"""Shared CLI helpers: the global options and consoles (from cli/state.py), JSON output, opening the
workspace and authenticating the caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.cli.output import print_json as print_json
from complai.cli.output import table as table
from complai.cli.state import console as console  # the commands' consoles and global options, from here
from complai.cli.state import err_console as err_console
from complai.cli.state import state as state
from complai.config import CONFIG_FILE, default_workspace
from complai.errors import InvalidInput
from complai.events import delegation
from complai.files import workspace_protected
from complai.inputs import parse_yaml, read_text_input


def workspace_path(override: Path | None = None) -> Path:
    return override or state.workspace or default_workspace()


def has_workspace(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def authenticate(ws: Workspace) -> str:
    """The authenticated caller, checked once per workspace: the principal of --token (a real API token;
    a principal name is refused), else the owner. With --as NAME the caller must hold the owner role
    and NAME must be an enabled principal. AuthenticationFailed / PolicyDenied otherwise (exit 2)."""
    if state.caller is None or state.authenticated_in != ws.path:
        state.caller = ws.authenticate(state.token, act_as=state.as_principal)
        state.authenticated_in = ws.path
    return state.caller.principal.name


def acting_principal(ws: Workspace) -> str:
    """Whom this command acts as: --as NAME (checked above), else the authenticated caller."""
    caller = authenticate(ws)
    return state.as_principal or caller


def authenticate_at_startup(ctx: typer.Context) -> None:
    """Refuse a bogus, expired or revoked token (or a forbidden --as) before any command does anything.
    The workspace opened for the check is kept for the command's first `open_workspace` (opening it
    twice would cost a second connection and upgrade check), and closed when the command ends."""
    if state.token is None and state.as_principal is None:
        return
    path = workspace_path()
    if not has_workspace(path):
        return  # nothing to check against; a command that needs a workspace refuses on its own
    ws = Workspace.open(path)
    try:
        authenticate(ws)
    except BaseException:
        ws.close()
        raise
    state.opened = ws
    ctx.call_on_close(release_startup_workspace)


def release_startup_workspace() -> None:
    """Close the workspace opened at start-up if no command took it."""
    state.release_startup_workspace()


@contextmanager
def open_workspace(override: Path | None = None) -> Iterator[Workspace]:
    """The workspace, after the caller is authenticated; with --as, events of the delegate's actions
    record the authenticated owner as `delegated_by`."""
    if override is None and state.opened is not None:
        ws, state.opened = state.opened, None
    else:
        ws = Workspace.open(workspace_path(override))
    try:
        caller = authenticate(ws) if state.token is not None or state.as_principal is not None else None
        if state.as_principal is not None and caller is not None and state.as_principal != caller:
            with delegation(state.as_principal, caller):
                yield ws
        else:
            yield ws
    finally:
        ws.close()


def session_for(ws: Workspace, purpose: str) -> Session:
    """A session as the acting principal; the CLI never turns an unverified string into a principal."""
    return ws.session(acting_principal(ws), purpose)


@contextmanager
def open_session(purpose: str, override: Path | None = None) -> Iterator[tuple[Workspace, Session]]:
    """The workspace and a session as the caller: the --token / COMPLAI_TOKEN principal, else the owner
    (or, with --as NAME, NAME on the owner's authority)."""
    with open_workspace(override) as ws:
        yield ws, session_for(ws, purpose)


def print_exact(text: str) -> None:
    """Text that must arrive byte for byte (a signed note, a key, a cosignature): written as is, never
    wrapped to the terminal's width or read as markup, ending in one newline."""
    console.file.write(text if text.endswith("\n") else text + "\n")


def progress(transient: bool = True, disable: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=disable or not err_console.is_terminal,
    )


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a spec); InvalidInput naming `what` otherwise."""
    data = parse_yaml(read_text_input(path, what), f"{what} {path}")
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} {path} must be a mapping")
    return data


ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]


def protected_paths(override: Path | None = None) -> list[Path]:
    """What no output path may replace or enter: the workspace's keys, settings and database."""
    return workspace_protected(workspace_path(override))
