"""`complai federated simulate SPEC.yaml`: organisations as workspaces, trained together in Flower."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from complai.cli.common import console, err_console, print_json
from complai.errors import InvalidInput

app = typer.Typer(help="Federated learning with secure aggregation (Flower).", no_args_is_help=True)


@app.command("simulate")
def simulate(
    spec_file: Annotated[Path, typer.Argument(help="Federated spec (YAML): organisations, rounds, dp, ...")],
    root: Annotated[Path, typer.Option("--root", help="Empty folder for the server's and organisations' workspaces.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Partition the bundled Adult data into organisations and train one model across them."""
    from complai.federated.engine import FederatedSpec
    from complai.federated.simulate import simulate as run

    try:
        data = yaml.safe_load(spec_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read federated spec {spec_file}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"federated spec {spec_file} must be a mapping")
    spec = FederatedSpec.parse(data)
    if not json_out:
        err_console.print(f"simulating {spec.organisations} organisations, {spec.rounds} rounds ...")
    out = run(spec, root)
    if json_out:
        print_json(out)
        return
    t = Table("round", "survivors", "dropped", "accuracy", "epsilon", "seconds")
    for h in out["history"]:
        t.add_row(
            str(h["round"]),
            str(h["survivors"]),
            str(h["dropped"]),
            "" if h["accuracy"] is None else f"{h['accuracy']:.4f}",
            "" if h["epsilon"] is None else f"{h['epsilon']:.3g}",
            f"{h['seconds']:.2f}",
        )
    console.print(t)
    console.print(
        f"run {out['run_id']}: secure aggregation {'on' if spec.secure_aggregation else 'off'}, dp {spec.dp}; "
        f"workspaces under {root}"
    )
