"""Flower's simulation of a federated run in one process tree (Ray): the ServerApp and the ClientApp
given, one simulated SuperNode per organisation, the run's outcome read back from the server's sink."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from complai.errors import InvalidInput
from complai.federated.secagg.protocol import SecAggAbort

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp


def flower_environment() -> None:
    """Offline, loopback-only Flower and Ray."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def run(
    server_app: ServerApp, client_app: ClientApp, organisations: int, sink: Path, ray_dir: Path | None = None
) -> dict[str, Any]:
    """Run the apps in Flower's simulation and return the result the server app wrote to `sink` (with
    the run's wall time); a failed run raises its error (SecAggAbort, or InvalidInput).

    Ray keeps its session (sockets, logs) in `ray_dir`, by default a private temporary directory removed
    afterwards, so that the run's processes are identifiable as its own and nothing of it stays in /tmp/ray.
    Ray's socket paths must stay under 107 bytes: the directory should have a short path."""
    flower_environment()
    from flwr.simulation import run_simulation  # heavy: flwr

    own_dir = ray_dir is None
    ray_tmp = Path(ray_dir) if ray_dir is not None else Path(tempfile.mkdtemp(prefix="cplray-"))
    backend: dict[str, Any] = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": max(1, min(os.cpu_count() or 1, 4)),
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
            "_temp_dir": str(ray_tmp),
        },
    }
    started = time.perf_counter()
    _quiet_flower()
    try:
        run_simulation(server_app, client_app, num_supernodes=organisations, backend_config=backend)
    finally:
        if own_dir:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    if not sink.exists():
        raise InvalidInput("the federated run ended without a result (see Flower's log)")
    out: dict[str, Any] = json.loads(sink.read_text())
    if not out["ok"]:
        if out["type"] == "SecAggAbort":
            raise SecAggAbort(out["error"])
        raise InvalidInput(f"federated run failed: {out['error']}")
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


def _quiet_flower() -> None:
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
