"""`complai dpia generate|sign|status DATASET`: data protection impact assessments (Art. 35)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from complai.cli.common import ForceOpt, console, open_session, print_json, protected_paths
from complai.cli.options import ByOpt, DpiaDatasetArg, GenerateOutOpt, VersionOpt
from complai.files import check_output, write_private
from complai.inputs import bounded_int

app = typer.Typer(help="Data protection impact assessments (GDPR Art. 35).", no_args_is_help=True)


@app.command("generate")
def generate(
    dataset: DpiaDatasetArg,
    out: GenerateOutOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    force: ForceOpt = False,
) -> None:
    """Assess the dataset's processing: triggers, description, necessity, risks found, measures."""
    protected = protected_paths()
    if out is not None:
        check_output(out, force=force, forbidden=protected)
    with open_session("audit") as (_, session):
        result = session.dpia_generate(dataset).value
    if out is not None:
        write_private(out, json.dumps(result["document"], indent=1, default=str), force=force, forbidden=protected)
    if json_out:
        print_json(result)
        return
    doc = result["document"]
    console.print(f"DPIA {dataset} v{result['version']} ({result['digest']}): triggers {'; '.join(doc['triggers'])}")
    for r in doc["risks"]:
        console.print(f"  {r['control']}: {r['status']} - {r['finding']}")
    console.print(f"residual risk: {doc['residual_risk']}; sign it off with complai dpia sign {dataset} --by NAME")


@app.command("sign")
def sign(
    dataset: DpiaDatasetArg,
    by: ByOpt,
    version: VersionOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Sign off a dataset's DPIA (by default its latest version)."""
    if version is not None:
        bounded_int(version, "--version", lo=1)
    with open_session("audit") as (_, session):
        st = session.dpia_sign(dataset, by, version).value
    if json_out:
        print_json(st)
    else:
        console.print(f"DPIA {dataset} v{st['version']} signed off by {st['signed_by']} at {st['signed_at']}")


@app.command("status")
def status(
    dataset: DpiaDatasetArg, json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Whether the dataset's DPIA is current: signed off, and still describing its processing."""
    with open_session("audit") as (_, session):
        st = session.dpia_status(dataset)
    if json_out:
        print_json(st)
    else:
        console.print(f"DPIA {dataset}: " + ("current" if st["current"] else f"not current ({st['why']})"))
