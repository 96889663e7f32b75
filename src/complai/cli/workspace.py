"""Top-level commands on the workspace itself: init, status, and the quickstart that builds one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from complai.access.authz import OWNER
from complai.app.workspace import Workspace
from complai.cli.common import console, open_session, print_json, table, workspace_path
from complai.quickstart import run_quickstart


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
