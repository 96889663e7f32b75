"""`complai federated simulate SPEC.yaml`: organisations as workspaces, trained together in Flower."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from complai.app import federation
from complai.cli.common import console, err_console, load_mapping, print_json, protected_paths, table
from complai.errors import InvalidInput
from complai.federated.deploy import free_port, start_supernode
from complai.federated.engine import FederatedSpec, Layout
from complai.files import check_output_dir, output_dir, staged_output_dir

app = typer.Typer(help="Federated learning with secure aggregation (Flower).", no_args_is_help=True)


@app.command("simulate")
def simulate(
    spec_file: Annotated[Path, typer.Argument(help="Federated spec (YAML): organisations, rounds, dp, ...")],
    root: Annotated[Path, typer.Option("--root", help="Empty folder for the server's and organisations' workspaces.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Partition the bundled Adult data into organisations and train one model across them."""
    spec = _load_spec(spec_file)
    _root(root, create=True)
    if not json_out:
        err_console.print(f"simulating {spec.organisations} organisations, {spec.rounds} rounds ...")
    out = federation.simulate(spec, root)
    if json_out:
        print_json(out)
        return
    t = table("round", "survivors", "dropped", "accuracy", "epsilon", "seconds")
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


def _root(root: Path, create: bool = False) -> None:
    """The folder a federation's workspaces and keys go to: not a link, not inside this workspace's keys;
    with `create`, made private (0700, whatever the umask) when it does not exist yet."""
    check_output_dir(root, forbidden=protected_paths())
    if create:
        output_dir(root, forbidden=protected_paths())


def _load_spec(spec_file: Path) -> FederatedSpec:
    return FederatedSpec.parse(load_mapping(spec_file, "federated spec"))


@app.command("prepare")
def prepare(
    spec_file: Annotated[Path, typer.Argument(help="Federated spec (YAML).")],
    root: Annotated[Path, typer.Option("--root", help="Empty folder for the server's and organisations' workspaces.")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create the server's and the organisations' workspaces from a partition of the bundled Adult data
    (for a deployment on one machine: then `federated server` and one `federated client` each)."""
    spec = _load_spec(spec_file)
    _root(root)
    # built in a private temporary sibling that takes the name only when every workspace is ready:
    # a failure or a kill leaves no half-prepared federation behind
    with staged_output_dir(root, forbidden=protected_paths()) as staging:
        layout = federation.prepare_organisations(staging, spec)
    layout = Layout(
        server=str(root / Path(layout["server"]).relative_to(staging)),
        organisations=[str(root / Path(p).relative_to(staging)) for p in layout["organisations"]],
        rows=layout["rows"],
    )
    if json_out:
        print_json(layout)
        return
    for i, (path, rows) in enumerate(zip(layout["organisations"], layout["rows"], strict=True)):
        console.print(f"organisation {i}: {path} ({rows:,} rows)")
    console.print(f"server: {layout['server']}")


@app.command("server")
def server(
    spec_file: Annotated[Path, typer.Argument(help="Federated spec (YAML).")],
    root: Annotated[Path, typer.Option("--root", help="Folder for the server workspace, PKI, SuperLink state.")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the run.")] = 1800,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the coordinating SuperLink (TLS, SuperNode authentication) and the federated training; writes
    ROOT/ready.json with the address, CA and one key per organisation once they may connect."""
    if not (math.isfinite(timeout) and 0 < timeout <= 31 * 86400):
        raise InvalidInput(f"--timeout must be a number of seconds between 0 and 31 days, not {timeout}")
    spec = _load_spec(spec_file)
    _root(root, create=True)
    if not json_out:
        err_console.print(f"SuperLink starting under {root}; waiting for {spec.organisations} organisations ...")
    out = federation.serve(root, spec, timeout)
    if json_out:
        print_json(out)
        return
    for h in out["history"]:
        console.print(
            f"round {h['round']}: {h['survivors']} survivors, {h['dropped']} dropped, "
            f"accuracy {h['accuracy']:.4f}" + ("" if h["epsilon"] is None else f", epsilon {h['epsilon']:.3g}")
        )


@app.command("client")
def client(
    workspace: Annotated[Path, typer.Option("--workspace", help="This organisation's complai workspace.")],
    superlink: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the SuperLink.")],
    root_certificates: Annotated[Path, typer.Option("--root-certificates", help="The federation's CA certificate.")],
    key: Annotated[Path, typer.Option("--key", help="This organisation's SuperNode key (OpenSSH, registered).")],
    port: Annotated[int, typer.Option("--port", help="Local port of the SuperNode's app API (0: any free).")] = 0,
) -> None:
    """Run this organisation's SuperNode until stopped (Ctrl-C or SIGTERM)."""
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port must be between 0 and 65535, not {port}")
    federation.check_organisation(workspace)  # refuse early if it is not a workspace
    for f in (root_certificates, key):
        if not f.is_file():
            raise InvalidInput(f"{f} does not exist")
    proc = start_supernode(
        workspace, superlink, root_certificates, key, port or free_port(), workspace / "logs" / "supernode.log"
    )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and proc.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        code = proc.proc.poll()
        proc.stop()
    if code not in (None, 0) and not stopping:
        raise InvalidInput(f"the SuperNode exited with status {code} (see {proc.log})")
