"""`complai dp ...`: privacy budgets (DP queries follow)."""

from __future__ import annotations

from typing import Annotated

import typer

from complai.cli.common import console, open_session, print_json, progress, table
from complai.cli.options import (
    BudgetDatasetArg,
    DeltaOpt,
    EpsilonOpt,
    MaxRowsOpt,
    PrincipalOpt,
    QueryDatasetArg,
    QueryPurposeOpt,
    SelectionDeltaOpt,
    SetOpt,
    SqlArg,
    print_budgets,
)
from complai.errors import InvalidInput

app = typer.Typer(help="Differential privacy: budgets.", no_args_is_help=True)


@app.command("budget")
def budget(
    dataset: BudgetDatasetArg,
    set_: SetOpt = None,
    principal: PrincipalOpt = "*",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a dataset's privacy budgets, or set one (admin)."""
    with open_session("administration") as (_, session):
        if set_ is not None:
            session.set_budget(dataset, set_[0], set_[1], principal)
            states = session.budgets(dataset)
        else:
            states = session.audited_budgets(dataset)  # showing budgets without changing one: the auditor's view
    rows = [s.as_dict() for s in states]
    print_budgets(dataset, rows, json_out)


@app.command("query")
def query(
    dataset: QueryDatasetArg,
    sql: SqlArg,
    epsilon: EpsilonOpt,
    purpose: QueryPurposeOpt,
    delta: DeltaOpt = None,
    max_rows: MaxRowsOpt = 1,
    selection_delta: SelectionDeltaOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Answer an aggregate query with differential privacy, spending the dataset's budget."""
    from complai.dp.sql import parse  # heavy: sqlglot and OpenDP; not loaded for other commands

    named = parse(sql).dataset  # the statement's syntax only: no data or schema is consulted here
    if named != dataset:
        raise InvalidInput(f"the query reads {named!r}, not {dataset!r}")
    with open_session(purpose) as (_, session), progress(disable=json_out) as bar:
        task = bar.add_task("reading the dataset (%)", total=100)
        answer = session.dp_query(
            sql,
            epsilon,
            delta,
            max_rows,
            progress=lambda pct, _: bar.update(task, completed=pct),
            selection_delta=selection_delta,
        )
        left = session.budget(dataset).as_dict()
    doc = {**answer.as_dict(), "budget_remaining": left}
    if json_out:
        print_json(doc)
        return
    t = table("statistic", "group", "value", "± 95 %")
    for label, value in answer.values.items():
        if isinstance(value, dict):
            for g, v in value.items():
                t.add_row(label, g, f"{v:,.2f}", f"{answer.accuracy[label][g]:,.2f}")
        else:
            t.add_row(label, "", f"{value:,.2f}", f"{answer.accuracy[label]:,.2f}")
    console.print(t)
    console.print(
        f"cost: epsilon {answer.epsilon:g}"
        + (f", delta {answer.delta:g}" if answer.delta else "")
        + f" ({answer.mechanism}; rho {answer.rho:.4g}); epsilon left {left['epsilon_remaining_at_delta']:.4g} "
        f"at delta {left['delta']:g}"
    )
    if answer.selection is not None:
        console.print(
            f"groups selected by DP partition selection: a group is shown when its noisy count reaches "
            f"{answer.selection['threshold']:g} (delta {answer.selection['delta']:g} of the cost)"
        )
