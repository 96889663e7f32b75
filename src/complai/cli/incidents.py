"""`complai incident ...`: the breach register and its 72-hour clock."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from complai.cli.common import console, open_session, print_json, table
from complai.cli.options import AuthorityOpt, DescriptionOpt, IncidentArg

app = typer.Typer(help="Incidents (GDPR Art. 33): open, notify within 72 hours, close.", no_args_is_help=True)


def _show(i: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(i)
    else:
        state = "closed" if i["closed_at"] else ("notified" if i["notified_at"] else "open")
        late = " [red]LATE[/]" if i["late"] else ""
        console.print(f"{i['id']} ({i['kind']}): {state}{late}; notify by {i['notify_by']}. {i['description']}")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List incidents with their notification deadlines (72 hours from opening)."""
    with open_session("security") as (_, session):
        rows = session.incidents()
    if json_out:
        print_json(rows)
        return
    t = table("incident", "kind", "opened", "notify by", "notified", "closed", "description")
    for i in rows:
        t.add_row(
            i["id"],
            i["kind"],
            i["opened_at"],
            i["notify_by"] + (" LATE" if i["late"] else ""),
            i["notified_at"] or "",
            i["closed_at"] or "",
            i["description"],
        )
    console.print(t)


@app.command("open")
def open_(
    description: DescriptionOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Open an incident: the 72-hour notification deadline starts now."""
    with open_session("security") as (_, session):
        _show(session.incident_open(description).value, json_out)


@app.command("notify")
def notify(
    incident: IncidentArg,
    authority: AuthorityOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Record that the supervisory authority was notified."""
    with open_session("security") as (_, session):
        _show(session.incident_notify(incident, authority).value, json_out)


@app.command("close")
def close(
    incident: IncidentArg, json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Close an incident."""
    with open_session("security") as (_, session):
        _show(session.incident_close(incident).value, json_out)
