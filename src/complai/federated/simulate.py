"""`complai federated simulate`: N organisations created as workspaces from a partition of a dataset,
one coordinating server workspace, and a Flower simulation of the federated training between them."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from complai.errors import InvalidInput
from complai.federated import engine
from complai.federated.secagg.protocol import SecAggAbort


def flower_environment() -> None:
    """Offline, loopback-only Flower and Ray."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def prepare_organisations(root: Path, spec: engine.FederatedSpec) -> dict[str, Any]:
    """Create the server's and each organisation's workspace; ingest each organisation's partition of
    the bundled Adult data with its subjects' consents."""
    from complai.access.identity import OWNER
    from complai.app.workspace import Workspace
    from complai.datasets.adult import adult_schema_path, load_adult
    from complai.datasets.consents import adult_consents
    from complai.vault.schema import load_schema

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
    return {"server": str(server_path), "organisations": [str(p) for p in org_paths], "rows": sizes}


def simulate(spec: engine.FederatedSpec, root: Path, ray_dir: Path | None = None) -> dict[str, Any]:
    """Prepare the organisations under `root` and run the federated training in Flower's simulation.

    Ray keeps its session (sockets, logs) in `ray_dir`, by default a private temporary directory removed
    afterwards, so that the run's processes are identifiable as its own and nothing of it stays in /tmp/ray.
    Ray's socket paths must stay under 107 bytes: the directory should have a short path."""
    flower_environment()
    from flwr.simulation import run_simulation

    from complai.federated.flower import make_client_app, make_server_app

    root = Path(root)
    layout = prepare_organisations(root, spec)
    run_id = "fl-" + secrets.token_hex(4)
    sink = root / f"{run_id}.json"
    server_app = make_server_app(spec, Path(layout["server"]), run_id, sink)
    client_app = make_client_app(spec, layout["organisations"])
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": max(1, min(os.cpu_count() or 1, 4)),
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        },
    }
    own_dir = ray_dir is None
    ray_tmp = Path(ray_dir) if ray_dir is not None else Path(tempfile.mkdtemp(prefix="cplray-"))
    backend["init_args"]["_temp_dir"] = str(ray_tmp)
    started = time.perf_counter()
    _quiet_flower()
    try:
        run_simulation(server_app, client_app, num_supernodes=spec.organisations, backend_config=backend)
    finally:
        if own_dir:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    if not sink.exists():
        raise InvalidInput("the federated run ended without a result (see Flower's log)")
    out = json.loads(sink.read_text())
    if not out["ok"]:
        if out["type"] == "SecAggAbort":
            raise SecAggAbort(out["error"])
        raise InvalidInput(f"federated run failed: {out['error']}")
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["layout"] = layout
    out["weights_path"] = str(sink.with_suffix(".npy"))
    return out


def _quiet_flower() -> None:
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
