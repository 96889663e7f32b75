"""`complai dp ...`: privacy budgets (DP queries follow)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from complai.cli.common import console, open_session, print_json

app = typer.Typer(help="Differential privacy: budgets.", no_args_is_help=True)


@app.command("budget")
def budget(
    dataset: Annotated[str, typer.Argument()],
    set_: Annotated[
        tuple[float, float] | None, typer.Option("--set", help="EPSILON DELTA: the total budget.", show_default=False)
    ] = None,
    principal: Annotated[str, typer.Option("--principal", help="A principal's own budget on the dataset.")] = "*",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a dataset's privacy budgets, or set one (admin)."""
    with open_session("administration") as (ws, session):
        if set_ is not None:
            session.set_budget(dataset, set_[0], set_[1], principal)
        else:
            session.audit_access()
            ws.catalog.get(dataset)
        states = ws.budgets.all(dataset)
    rows = [s.as_dict() for s in states]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"no privacy budget set for {dataset} (queries are refused until one is)")
        return
    t = Table("principal", "epsilon", "delta", "rho total", "rho spent", "epsilon left at delta")
    for r in rows:
        t.add_row(
            r["principal"],
            f"{r['epsilon']:g}",
            f"{r['delta']:g}",
            f"{r['rho_total']:.6g}",
            f"{r['rho_spent']:.6g}",
            f"{r['epsilon_remaining_at_delta']:.4g}",
        )
    console.print(t)
