"""Federated learning across workspaces: the organisations' and the coordinating server's workspaces
created from a partition of a dataset, a Flower simulation between them, and the coordinating side
of a real deployment (SuperLink). The partition is a governed read of the dataset through a session
of the team's workspace bound to the run's purpose; each organisation reads and records through a
session of its own workspace bound to the workspace owner and that purpose; the server records its
rounds the same way in its workspace."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from complai.access.identity import OWNER
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.errors import InvalidInput, NotFound
from complai.events import FederatedRound, decode_event
from complai.federated import deploy, engine
from complai.federated.simulate import flower_environment
from complai.federated.simulate import run as run_simulation
from complai.files import output_dir

# the Flower App `flwr run` submits for a deployment: Flower loads these by name on the SuperLink's side
# (ServerApp) and each organisation's SuperNode (ClientApp)
COMPONENTS = deploy.Components(
    serverapp="complai.app.federation_apps:server_app",
    clientapp="complai.app.federation_apps:client_app",
)

BUNDLED = "adult"


def source_of(session: Session, spec: engine.FederatedSpec) -> Session | None:
    """Where a simulation's data comes from: the session's workspace when it holds the spec's dataset;
    None (the bundled Adult sample) when the spec names adult and the workspace holds no such dataset."""
    if spec.dataset != BUNDLED:
        return session
    try:
        session.dataset_schema(spec.dataset, "read")
    except NotFound:
        return None
    return session


@contextmanager
def bundled_adult(spec: engine.FederatedSpec) -> Iterator[Session]:
    """A session (the spec's purpose) of a private temporary workspace holding the dataset named adult,
    created from the bundled sample (`spec.rows` of it) with its subjects' seeded consents; the
    workspace is removed when the block ends."""
    tmp = Path(tempfile.mkdtemp(prefix="complai-adult-"))
    try:
        with Workspace.init(tmp / "ws") as ws:
            admin = ws.session(OWNER, "administration")
            admin.create_dataset(admin.parse_schema(adult_schema_path()))
            df = load_adult().drop(columns=["split"], errors="ignore")
            if spec.rows:
                df = df.sample(n=min(spec.rows, len(df)), random_state=spec.seed).reset_index(drop=True)
            admin.ingest(BUNDLED, df, adult_consents(df["subject_id"], seed=spec.seed, now=ws.clock.now()))
            yield ws.session(OWNER, spec.purpose)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_organisations(root: Path, spec: engine.FederatedSpec, source: Session | None = None) -> engine.Layout:
    """Create the server's and each organisation's workspace under `root` (empty or new) from a
    partition of the spec's dataset read through `source` (None: the bundled Adult sample); each
    organisation gets its share's records, the source's schema for them and its subjects' consent to
    the spec's purpose (only subjects with a live lawful basis for it were read). The spec is checked
    against the schema before anything is created."""
    if root.exists() and any(root.iterdir()):
        raise InvalidInput(f"{root} is not empty")
    if source is None:
        with bundled_adult(spec) as bundled:
            partition = bundled.federated_partition(spec)
    else:
        partition = source.federated_partition(spec)
    output_dir(root)
    server_path, org_paths = engine.workspace_paths(root, spec)
    Workspace.init(server_path).close()
    subject = partition.schema.subject_column
    sizes = []
    for path, share in zip(org_paths, partition.shares, strict=True):
        with Workspace.init(path) as ws:
            admin = ws.session(OWNER, "administration")
            admin.create_dataset(partition.schema)
            consents = pd.DataFrame(
                {"subject": share[subject], "purpose": spec.purpose, "source": f"federated partition of {spec.dataset}"}
            )
            admin.ingest(spec.dataset, share, consents)
        sizes.append(len(share))
    return engine.Layout(server=str(server_path), organisations=[str(p) for p in org_paths], rows=sizes)


def simulate(
    spec: engine.FederatedSpec,
    root: Path,
    ray_dir: Path | None = None,
    *,
    source: Session | None = None,
    on_round: engine.RoundProgress | None = None,
) -> dict[str, Any]:
    """Prepare the organisations under `root` from the spec's dataset read through `source` (None: the
    bundled Adult sample) and run the federated training in Flower's simulation (Ray's session in
    `ray_dir`, see federated/simulate.py); `on_round` gets each round's summary and the total as it
    completes. The result has the rounds' history, the final accuracy beside the majority-class
    baseline (with a warning when below it), the layout of the workspaces and the final weights' path.
    A run refused before its workspaces exist leaves nothing under `root`."""
    flower_environment()
    from complai.app import federation_apps  # heavy: imports flwr

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise InvalidInput(f"{root} is not empty")
    existed = root.exists()
    try:
        layout = prepare_organisations(root, spec, source)
    except BaseException:
        _remove_created(root, existed)
        raise
    run_id = "fl-" + secrets.token_hex(4)
    sink = root / f"{run_id}.json"
    server_app = federation_apps.simulated_server_app(spec, Path(layout["server"]), run_id, sink, on_round)
    client_app = federation_apps.simulated_client_app(spec, layout["organisations"])
    out = run_simulation(server_app, client_app, spec.organisations, sink, ray_dir)
    out["layout"] = layout
    out["weights_path"] = str(sink.with_suffix(".npy"))
    return out


def _remove_created(root: Path, existed: bool) -> None:
    """Undo a preparation that failed: `root` was new (removed) or empty (emptied again) before it."""
    if not root.is_dir() or root.is_symlink():
        return
    if existed:
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    else:
        shutil.rmtree(root, ignore_errors=True)


def serve(
    root: Path, spec: engine.FederatedSpec, timeout: float = 900, on_round: engine.RoundProgress | None = None
) -> dict[str, Any]:
    """The coordinating side of a real federation under `root` (federated/deploy.py): the server's
    workspace (root/server, created when missing) records the rounds. The ServerApp runs in a process
    of Flower's, so `on_round` is fed from the server's ledger: each federated.round event of the run as
    it appears (accuracy and baseline are the result's, not the ledger's: None there)."""
    root.mkdir(parents=True, exist_ok=True)
    server_ws = root / "server"
    if not (server_ws / "complai.toml").exists() and not server_ws.exists():
        Workspace.init(server_ws).close()
    watch = round_watcher(server_ws, spec, on_round) if on_round is not None else None
    return deploy.serve(root, spec, server_ws, COMPONENTS, timeout, watch)


def round_watcher(server_ws: Path, spec: engine.FederatedSpec, on_round: engine.RoundProgress) -> Callable[[str], None]:
    """A watcher that reports each new federated.round event of a run in the server's ledger (read
    through an audit session of the server's workspace); seconds are the time since the last one seen."""
    state = {"next": 0, "at": time.monotonic()}

    def watch(run_id: str) -> None:
        with Workspace.open(server_ws) as ws:
            entries = ws.session(OWNER, "audit").ledger_entries(int(state["next"]), "federated.round", limit=10_000)
        for entry in entries:
            state["next"] = entry.seq + 1
            event = decode_event(entry.data)
            if not isinstance(event, FederatedRound) or event.run_id != run_id:
                continue
            now = time.monotonic()
            summary = engine.RoundSummary(
                round=event.round,
                seconds=round(now - state["at"], 3),
                survivors=event.survivors,
                dropped=event.dropped,
                accuracy=None,
                majority=None,
                epsilon=event.epsilon,
            )
            state["at"] = now
            on_round(summary, spec.rounds)

    return watch


def check_organisation(path: Path) -> None:
    """Refuse early (NotFound, InvalidInput) unless `path` is a workspace an organisation can run from."""
    Workspace.open(path).close()
