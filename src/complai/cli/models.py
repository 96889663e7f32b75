"""`complai train SPEC.yaml` and `complai model list|show|card|audit`."""

from __future__ import annotations

from typing import Annotated

import typer

from complai.cli.common import (
    console,
    load_mapping,
    open_session,
    open_workspace,
    print_json,
    progress,
    session_for,
)
from complai.cli.options import (
    CardFormatOpt,
    CardJsonOpt,
    SeedOpt,
    ShadowsOpt,
    SpecFileArg,
    TrainPurposeOpt,
    print_audit_report,
    print_card_summary,
    print_models,
)
from complai.dp.training import TrainingSpec, card_markdown, card_warnings
from complai.errors import InvalidInput

app = typer.Typer(help="Trained models: list, cards, membership-inference audits.", no_args_is_help=True)

DEFAULT_PURPOSE = "train_ai_system"


def train(
    spec_file: SpecFileArg,
    purpose: TrainPurposeOpt = None,
    json_out: CardJsonOpt = False,
) -> None:
    """Train a model with DP-SGD (or non-privately if the spec says private: false) and store its card."""
    data = load_mapping(spec_file, "training spec")
    spec_purpose = data.pop("purpose", DEFAULT_PURPOSE)
    spec = TrainingSpec.parse(data)
    with open_session(purpose or spec_purpose) as (_, session), progress(disable=json_out) as bar:
        task = bar.add_task(f"training {spec.model} on {spec.dataset}", total=None)
        card = session.train(spec=spec, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if json_out:
        print_json(card)
        return
    print_card_summary(card, card_warnings(card))


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every stored model, with its privacy parameters and whether an erasure flagged it."""
    with open_session("audit") as (_, session):
        rows = session.models()
    print_models(rows, json_out)


@app.command("show")
def show(
    model_id: Annotated[str, typer.Argument(help="The model's id (see `model list`).")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A model's registry entry (digests, flag) and card summary."""
    with open_session("audit") as (_, session):
        info = session.model(model_id)
    if json_out:
        print_json(info)
        return
    card = info.pop("card")
    for k, v in info.items():
        console.print(f"{k}: {v}")
    print_card_summary(card, card_warnings(card))


@app.command("card")
def card(
    model_id: Annotated[str, typer.Argument(help="The model's id (see `model list`).")],
    format_: CardFormatOpt = "md",
) -> None:
    """Print a model's card (Markdown or canonical JSON)."""
    if format_ not in ("md", "json"):
        raise InvalidInput("--format is md or json")
    with open_session("audit") as (_, session):
        info = session.model(model_id)
    if format_ == "json":
        print_json(info["card"])
    else:
        console.file.write(card_markdown(info["card"]))


@app.command("audit")
def audit(
    model_id: Annotated[str, typer.Argument(help="The model's id (see `model list`).")],
    shadows: ShadowsOpt = 8,
    seed: SeedOpt = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Membership-inference audit (loss threshold and LiRA): AUC, TPR at low FPR, empirical epsilon."""
    with open_workspace() as ws:
        session = session_for(ws, session_for(ws, "audit").model_purpose(model_id))
        with progress(disable=json_out) as bar:
            task = bar.add_task("shadow models", total=shadows or None)
            report = session.audit_model(
                model_id, shadows=shadows, seed=seed, progress=lambda d, t: bar.update(task, completed=d, total=t)
            )
    if json_out:
        print_json(report)
        return
    print_audit_report(model_id, report, f"report {report['report_path']}")
