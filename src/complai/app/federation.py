"""Federated learning across workspaces: the organisations' and the coordinating server's workspaces
created from a partition of a dataset, a Flower simulation between them, and the coordinating side
of a real deployment (SuperLink). Each organisation reads and records through a session of its own
workspace bound to the workspace owner and the federated-training purpose; the server records its
rounds the same way in its workspace."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.errors import InvalidInput
from complai.federated import deploy, engine
from complai.federated.simulate import flower_environment
from complai.federated.simulate import run as run_simulation
from complai.vault.schema import load_schema

# the Flower App `flwr run` submits for a deployment: Flower loads these by name on the SuperLink's side
# (ServerApp) and each organisation's SuperNode (ClientApp)
COMPONENTS = deploy.Components(
    serverapp="complai.app.federation_apps:server_app",
    clientapp="complai.app.federation_apps:client_app",
)


def prepare_organisations(root: Path, spec: engine.FederatedSpec) -> engine.Layout:
    """Create the server's and each organisation's workspace; ingest each organisation's partition of
    the bundled Adult data with its subjects' consents."""
    if spec.dataset != "adult":
        raise InvalidInput("simulation partitions the bundled Adult data (dataset: adult)")
    if root.exists() and any(root.iterdir()):
        raise InvalidInput(f"{root} is not empty")
    df = load_adult().drop(columns=["split"], errors="ignore")
    if spec.rows:
        df = df.sample(n=min(spec.rows, len(df)), random_state=spec.seed).reset_index(drop=True)
    labels = (df[spec.label] == ">50K").to_numpy(dtype=np.int64)
    parts = engine.partition(labels, spec.organisations, spec.partition, spec.alpha, spec.seed)
    server_path, org_paths = engine.workspace_paths(root, spec)
    Workspace.init(server_path).close()
    sizes = []
    for i, (path, idx) in enumerate(zip(org_paths, parts, strict=True)):
        ws = Workspace.init(path)
        try:
            admin = ws.session(OWNER, "administration")
            admin.create_dataset(load_schema(adult_schema_path(), ws.taxonomy))
            part = df.iloc[idx].reset_index(drop=True)
            admin.ingest("adult", part, adult_consents(part["subject_id"], seed=spec.seed + i, now=ws.clock.now()))
        finally:
            ws.close()
        sizes.append(len(idx))
    return engine.Layout(server=str(server_path), organisations=[str(p) for p in org_paths], rows=sizes)


def simulate(spec: engine.FederatedSpec, root: Path, ray_dir: Path | None = None) -> dict[str, Any]:
    """Prepare the organisations under `root` and run the federated training in Flower's simulation
    (Ray's session in `ray_dir`, see federated/simulate.py); the result has the rounds' history, the
    layout of the workspaces and the path of the final weights."""
    flower_environment()
    from complai.app import federation_apps  # heavy: imports flwr

    root = Path(root)
    layout = prepare_organisations(root, spec)
    run_id = "fl-" + secrets.token_hex(4)
    sink = root / f"{run_id}.json"
    server_app = federation_apps.simulated_server_app(spec, Path(layout["server"]), run_id, sink)
    client_app = federation_apps.simulated_client_app(spec, layout["organisations"])
    out = run_simulation(server_app, client_app, spec.organisations, sink, ray_dir)
    out["layout"] = layout
    out["weights_path"] = str(sink.with_suffix(".npy"))
    return out


def serve(root: Path, spec: engine.FederatedSpec, timeout: float = 900) -> dict[str, Any]:
    """The coordinating side of a real federation under `root` (federated/deploy.py): the server's
    workspace (root/server, created when missing) records the rounds."""
    root.mkdir(parents=True, exist_ok=True)
    server_ws = root / "server"
    if not (server_ws / "complai.toml").exists() and not server_ws.exists():
        Workspace.init(server_ws).close()
    return deploy.serve(root, spec, server_ws, COMPONENTS, timeout)


def check_organisation(path: Path) -> None:
    """Refuse early (NotFound, InvalidInput) unless `path` is a workspace an organisation can run from."""
    Workspace.open(path).close()
