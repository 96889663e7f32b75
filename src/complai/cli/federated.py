"""`complai federated simulate SPEC.yaml`: organisations as workspaces, trained together in Flower."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from complai.app import federation
from complai.app.session import Session
from complai.cli.common import (
    console,
    err_console,
    has_workspace,
    load_mapping,
    open_session,
    print_json,
    progress,
    protected_paths,
    table,
    workspace_path,
)
from complai.errors import InvalidInput
from complai.federated.deploy import free_port, start_supernode
from complai.federated.engine import FederatedSpec, Layout, RoundSummary
from complai.files import check_output_dir, output_dir, staged_output_dir

app = typer.Typer(help="Federated learning with secure aggregation (Flower).", no_args_is_help=True)


@app.command("simulate")
def simulate(
    spec_file: Annotated[
        Path, typer.Argument(help="Federated spec (YAML): dataset, label, features, organisations, rounds, dp, ...")
    ],
    root: Annotated[Path, typer.Option("--root", help="Empty folder for the server's and organisations' workspaces.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the run's result as JSON.")] = False,
) -> None:
    """Partition a dataset of this workspace (only subjects with a live lawful basis for the spec's
    purpose) into organisations and train one model across them. A spec naming adult uses the bundled
    Adult sample when the workspace holds no dataset of that name."""
    spec = _load_spec(spec_file)
    _root(root)
    with _source(spec) as source:
        what = spec.dataset if source is not None else "the bundled Adult sample"
        with progress(disable=json_out) as bar:
            task = bar.add_task(
                f"{spec.organisations} organisations on {what}: {spec.rounds} rounds", total=spec.rounds
            )

            def on_round(summary: RoundSummary, total: int) -> None:
                bar.update(task, completed=summary["round"], total=total, description=_round_line(summary, total))

            out = federation.simulate(spec, root, source=source, on_round=on_round)
    if json_out:
        print_json(out)
        return
    t = table("round", "survivors", "dropped", "accuracy", "majority", "epsilon", "seconds")
    for h in out["history"]:
        t.add_row(
            str(h["round"]),
            str(h["survivors"]),
            str(h["dropped"]),
            _number(h["accuracy"], ".4f"),
            _number(h["majority"], ".4f"),
            _number(h["epsilon"], ".3g"),
            f"{h['seconds']:.2f}",
        )
    console.print(t)
    console.print(
        f"run {out['run_id']}: secure aggregation {'on' if spec.secure_aggregation else 'off'}, dp {spec.dp}; "
        f"workspaces under {root}"
    )
    if out.get("warning"):
        err_console.print(f"warning: {out['warning']}")


def _number(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _round_line(summary: RoundSummary, total: int) -> str:
    """One round's metrics, for the progress bar's description."""
    parts = [f"round {summary['round']}/{total}"]
    if summary["accuracy"] is not None:
        parts.append(f"accuracy {summary['accuracy']:.4f}")
    if summary["majority"] is not None:
        parts.append(f"majority {summary['majority']:.4f}")
    if summary["epsilon"] is not None:
        parts.append(f"epsilon {summary['epsilon']:.3g}")
    return ", ".join(parts)


@contextmanager
def _source(spec: FederatedSpec) -> Iterator[Session | None]:
    """The session (the spec's purpose) through which the spec's dataset is read; None for the bundled
    Adult sample: a spec naming adult where there is no workspace or it holds no dataset adult."""
    if spec.dataset == federation.BUNDLED and not has_workspace(workspace_path()):
        yield None
        return
    with open_session(spec.purpose) as (_, session):
        yield federation.source_of(session, spec)


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
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create the server's and the organisations' workspaces from a partition of a dataset of this
    workspace, or of the bundled Adult sample when the spec names adult and the workspace holds no such
    dataset (for a deployment on one machine: then `federated server` and one `federated client` each)."""
    spec = _load_spec(spec_file)
    _root(root)
    # built in a private temporary sibling that takes the name only when every workspace is ready:
    # a failure or a kill leaves no half-prepared federation behind
    with _source(spec) as source, staged_output_dir(root, forbidden=protected_paths()) as staging:
        if source is None:
            layout = federation.prepare_organisations(staging, spec)
        else:
            layout = federation.prepare_organisations(staging, spec, source)
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
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run the coordinating SuperLink (TLS, SuperNode authentication) and the federated training; writes
    ROOT/ready.json with the address, CA and one key per organisation once they may connect."""
    if not (math.isfinite(timeout) and 0 < timeout <= 31 * 86400):
        raise InvalidInput(f"--timeout must be a number of seconds between 0 and 31 days, not {timeout}")
    spec = _load_spec(spec_file)
    _root(root, create=True)
    if not json_out:
        err_console.print(f"SuperLink starting under {root}; waiting for {spec.organisations} organisations ...")
    with progress(disable=json_out) as bar:
        task = bar.add_task(f"{spec.organisations} organisations: {spec.rounds} rounds", total=spec.rounds)

        def on_round(summary: RoundSummary, total: int) -> None:
            bar.update(task, completed=summary["round"], total=total, description=_round_line(summary, total))

        out = federation.serve(root, spec, timeout, on_round=None if json_out else on_round)
    if json_out:
        print_json(out)
        return
    for h in out["history"]:
        console.print(
            f"round {h['round']}: {h['survivors']} survivors, {h['dropped']} dropped, "
            f"accuracy {_number(h['accuracy'], '.4f')} (majority class {_number(h.get('majority'), '.4f')})"
            + ("" if h["epsilon"] is None else f", epsilon {h['epsilon']:.3g}")
        )
    if out.get("warning"):
        err_console.print(f"warning: {out['warning']}")


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
