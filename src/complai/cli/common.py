"""Shared CLI state and helpers: the global options, consoles, JSON output, opening the workspace."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from complai.config import default_workspace
from complai.session import Session
from complai.workspace import OWNER, Workspace

console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


@dataclass
class State:
    workspace: Path | None = None
    debug: bool = bool(os.environ.get("COMPLAI_DEBUG"))
    token: str | None = None


state = State()


def workspace_path(override: Path | None = None) -> Path:
    return override or state.workspace or default_workspace()


@contextmanager
def open_workspace(override: Path | None = None) -> Iterator[Workspace]:
    ws = Workspace.open(workspace_path(override))
    try:
        yield ws
    finally:
        ws.close()


@contextmanager
def open_session(purpose: str, override: Path | None = None) -> Iterator[tuple[Workspace, Session]]:
    """The workspace and a session as the caller: the --token / COMPLAI_TOKEN principal, else the owner."""
    with open_workspace(override) as ws:
        yield ws, ws.session(state.token or OWNER, purpose)


def actor() -> str:
    return "token holder" if state.token else OWNER


def print_json(obj: Any) -> None:
    console.file.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
    import yaml

    from complai.errors import InvalidInput

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {what} {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} {path} must be a mapping")
    return data
