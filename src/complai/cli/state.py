"""The CLI's global options once parsed, and its two consoles: light enough for `complai --version`
and `complai --help` to load, which must not load the front door (pandas, SQLAlchemy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from complai.config import debug_default

if TYPE_CHECKING:
    from complai.app.workspace import Caller, Workspace

console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


@dataclass
class State:
    workspace: Path | None = None
    debug: bool = field(default_factory=debug_default)  # --debug or COMPLAI_DEBUG
    token: str | None = None  # --token / COMPLAI_TOKEN: a real API token, never a principal name
    as_principal: str | None = None  # --as NAME: an owner acting as NAME (recorded as delegation)
    caller: Caller | None = None  # the authenticated caller (and what its token proved), once checked
    authenticated_in: Path | None = None  # the workspace the caller was checked against
    opened: Workspace | None = None  # opened at start-up to authenticate; the command's first use takes it
    server: str | None = None  # --server / COMPLAI_SERVER: send the command to this service (cli/remote.py)

    def reset(
        self,
        workspace: Path | None,
        debug: bool,
        token: str | None,
        as_principal: str | None,
        server: str | None = None,
    ) -> None:
        self.release_startup_workspace()
        self.workspace, self.debug, self.token, self.as_principal = workspace, debug, token, as_principal
        self.server = server
        self.caller = self.authenticated_in = None

    def release_startup_workspace(self) -> None:
        """Close the workspace opened at start-up if no command took it."""
        if self.opened is not None:
            self.opened.close()
            self.opened = None


state = State()
