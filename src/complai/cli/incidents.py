"""`complai incident ...`: the breach register and its 72-hour clock."""

from __future__ import annotations

from typing import Annotated

import typer

from complai.cli.common import open_session
from complai.cli.options import AuthorityOpt, DescriptionOpt, IncidentArg, print_incident, print_incidents

app = typer.Typer(help="Incidents (GDPR Art. 33): open, notify within 72 hours, close.", no_args_is_help=True)


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List incidents with their notification deadlines (72 hours from opening)."""
    with open_session("security") as (_, session):
        rows = session.incidents()
    print_incidents(rows, json_out)


@app.command("open")
def open_(
    description: DescriptionOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Open an incident: the 72-hour notification deadline starts now."""
    with open_session("security") as (_, session):
        print_incident(session.incident_open(description).value, json_out)


@app.command("notify")
def notify(
    incident: IncidentArg,
    authority: AuthorityOpt,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Record that the supervisory authority was notified."""
    with open_session("security") as (_, session):
        print_incident(session.incident_notify(incident, authority).value, json_out)


@app.command("close")
def close(
    incident: IncidentArg, json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Close an incident."""
    with open_session("security") as (_, session):
        print_incident(session.incident_close(incident).value, json_out)
