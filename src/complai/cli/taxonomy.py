"""`complai taxonomy ...`: the vocabulary a dataset schema is written in (categories, purposes, lawful
bases, jurisdictions, subject types)."""

from __future__ import annotations

from typing import Annotated

import typer

from complai.cli.common import console, open_session, print_json, table
from complai.cli.options import KindArg, term_detail
from complai.errors import InvalidInput

app = typer.Typer(
    help="The vocabulary of schemas: data categories, purposes, lawful bases, jurisdictions, subject types.",
    no_args_is_help=True,
)

# the name on the command line -> the taxonomy's kind, and the schema key it is written under
KINDS: dict[str, tuple[str, str]] = {
    "categories": ("data_categories", "fields[].category"),
    "purposes": ("data_uses", "purposes (keys)"),
    "bases": ("legal_bases", "purposes (values)"),
    "jurisdictions": ("jurisdictions", "jurisdiction"),
    "subjects": ("data_subjects", "subject_type"),
}


@app.command("list")
def list_cmd(
    kind: KindArg = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the terms a schema may use, with the schema key each kind is written under."""
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"unknown kind {kind!r}: give one of {', '.join(KINDS)}")
    wanted = [kind] if kind else list(KINDS)
    with open_session("administration") as (_, session):
        terms = {name: session.vocabulary(KINDS[name][0]) for name in wanted}
    if json_out:
        print_json({name: [{"key": t.key, "name": t.name, **t.attrs} for t in ts] for name, ts in terms.items()})
        return
    for name, ts in terms.items():
        t = table("key", "name", "details", title=f"{name} (schema: {KINDS[name][1]})")
        t.columns[0].no_wrap = True  # a key is copied into a schema: shown whole, on one line
        for term in ts:
            about = [str(term.attrs["description"])] if term.attrs.get("description") else []
            t.add_row(
                term.key, term.name, "; ".join([*about, term_detail(term.attrs)] if term_detail(term.attrs) else about)
            )
        console.print(t)
