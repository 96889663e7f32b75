"""Federated learning: secure-aggregation cost and accuracy on Adult partitions.

1. protocol: complai's secure aggregation in one process (every client and the server), per stage,
   for 10, 50 and 100 clients and 10^4 and 10^6 parameters, next to a plain sum of the same vectors;
2. flower: the time of one warm round in Flower's simulation with synthetic clients (a fixed random
   update, no training, so the numbers are the aggregation's): plain FedAvg, complai's secure
   aggregation, and Flower's own SecAgg+ (legacy workflow), same clients and vector size;
3. accuracy: FedAvg with secure aggregation on Adult split among 10 organisations (IID and Dirichlet 0.5)
   vs the same model trained centrally on the union of their consented rows, evaluated on the union of
   their held-out rows.

Usage: python benchmarks/federated.py [--part protocol|flower|accuracy|all] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results
from complai.app.federation import simulate
from complai.federated import engine
from complai.federated.secagg.protocol import Config, RunConfig, Server, setup
from complai.federated.simulate import flower_environment

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "federated.json"
SIZES = [10, 50, 100]
DIMS = [10_000, 1_000_000]


# --- 1. the protocol in one process ------------------------------------------------------------------


def _protocol_once(n: int, d: int) -> dict[str, Any]:
    t = {"client": 0.0, "server": 0.0, "setup": 0.0}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        r = fn()
        t[name] += time.perf_counter() - t0
        return r

    run = RunConfig("bench", 1.0)
    clients, roster = timed("setup", lambda: setup(run, list(range(1, n + 1))))
    cfg = Config.create(run, 1, list(range(1, n + 1)), d, graph_seed=1)
    rng = np.random.default_rng(0)
    ups = {c: rng.uniform(-1, 1, d) / np.sqrt(d) for c in cfg.clients}
    server = Server(cfg, roster)
    masked = [timed("client", lambda c=c: clients[c].masked_input(cfg, ups[c])) for c in cfg.clients]
    survivors, dropped, inbox = timed("server", lambda: server.collect_masked(masked))
    reveals = [timed("client", lambda c=c: clients[c].reveal(cfg, survivors, dropped, inbox[c])) for c in survivors]
    result = timed("server", lambda: server.finish(reveals))
    t0 = time.perf_counter()
    plain = np.zeros(d)
    for u in ups.values():
        plain += u
    plain_s = time.perf_counter() - t0
    err = float(np.abs(result.total - plain).max())
    print(
        f"protocol n={n:3d} d={d:>9,}: per client {t['client'] / n:.3f} s, server {t['server']:.2f} s "
        f"(k={cfg.neighbours}); setup {t['setup']:.2f} s; plain sum {plain_s:.4f} s; "
        f"error {err:.2e} <= {result.error_bound:.2e}",
        flush=True,
    )
    return {
        "clients": n,
        "dimension": d,
        "neighbours": cfg.neighbours,
        "threshold": cfg.threshold,
        "client_s_mean": round(t["client"] / n, 4),
        "server_s": round(t["server"], 3),
        "setup_s_all_clients": round(t["setup"], 3),
        "plain_sum_s": round(plain_s, 4),
        "max_error": err,
        "error_bound": result.error_bound,
    }


def protocol(quick: bool) -> dict[str, Any]:
    return {
        f"n{n}_d{d}": _protocol_once(n, d)
        for n in (SIZES if not quick else [10])
        for d in (DIMS if not quick else [10_000])
    }


# --- 2. Flower simulation, synthetic clients --------------------------------------------------------


def _backend() -> dict[str, Any]:
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": 2,
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        },
    }


def complai_round(n: int, d: int, secure: bool, rounds: int) -> list[float]:
    from flwr.simulation import run_simulation

    from complai.federated.flower import Synthetic, make_client_app, make_server_app  # heavy: flwr

    tmp = Path(tempfile.mkdtemp(prefix="complai-fl-"))
    try:
        spec = engine.FederatedSpec(organisations=n, rounds=rounds, secure_aggregation=secure, clip_norm=1.0)
        sink = tmp / "out.json"
        run_simulation(
            make_server_app(spec, "bench", sink),
            make_client_app(spec, None, Synthetic(d)),
            num_supernodes=n,
            backend_config=_backend(),
        )
        out = json.loads(sink.read_text())
        if not out["ok"]:
            raise RuntimeError(out["error"])
        return [h["seconds"] for h in out["history"]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def flower_secaggplus_round(n: int, d: int, rounds: int) -> list[float]:
    """Flower's SecAgg+ (legacy workflow + secaggplus_mod), timed per round inside its strategy."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    marks: list[tuple[str, float]] = []

    class Timed(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
            marks.append(("start", time.perf_counter()))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            out = super().aggregate_fit(server_round, results, failures)
            marks.append(("end", time.perf_counter()))
            return out

    class Synthetic(NumPyClient):
        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            rng = np.random.default_rng(0)
            return [rng.uniform(-1, 1, d).astype(np.float32) / np.sqrt(d)], 1, {}

    def client_fn(context):  # type: ignore[no-untyped-def]
        return Synthetic().to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):  # type: ignore[no-untyped-def]
        strategy = Timed(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]),
        )
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        k = min(n - 1, max(3, n // 2))
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=k, reconstruction_threshold=k // 2 + 1))
        workflow(grid, ctx)

    run_simulation(server_app, client_app, num_supernodes=n, backend_config=_backend())
    starts = [t for k, t in marks if k == "start"]
    ends = [t for k, t in marks if k == "end"]
    return [round(e - s, 3) for s, e in zip(starts, ends, strict=False)]


def flower(quick: bool) -> dict[str, Any]:
    flower_environment()
    out: dict[str, Any] = {}
    rounds = 3
    for n in SIZES if not quick else [10]:
        for d in DIMS if not quick else [10_000]:
            key = f"n{n}_d{d}"
            row: dict[str, Any] = {"clients": n, "dimension": d}
            for mode in ("plain", "complai_secagg", "flower_secaggplus"):
                try:
                    if mode == "flower_secaggplus":
                        times = flower_secaggplus_round(n, d, rounds)
                    else:
                        times = complai_round(n, d, mode == "complai_secagg", rounds)
                    row[mode] = {"rounds_s": times, "warm_round_s": statistics.median(times[1:] or times)}
                except Exception as exc:  # a configuration that does not finish is reported, not fatal
                    row[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            base = row["plain"].get("warm_round_s")
            for mode in ("complai_secagg", "flower_secaggplus"):
                if base and "warm_round_s" in row[mode]:
                    row[mode]["vs_plain"] = round(row[mode]["warm_round_s"] / base, 2)
            out[key] = row
            print(
                f"flower n={n:3d} d={d:>9,}: "
                + ", ".join(
                    f"{m} {row[m].get('warm_round_s', 'error')}s"
                    + (f" ({row[m]['vs_plain']}x)" if "vs_plain" in row[m] else "")
                    for m in ("plain", "complai_secagg", "flower_secaggplus")
                ),
                flush=True,
            )
    return out


# --- 3. accuracy on Adult partitions ---------------------------------------------------------------


def centralised(layout: dict[str, Any], spec: engine.FederatedSpec) -> float:
    """The same model, trained on the union of the organisations' consented rows for the same number of
    epochs, evaluated on the union of their held-out rows."""
    import torch

    from complai.app.federation_apps import federated_session  # heavy: imports flwr

    parts = []
    for path in layout["organisations"]:
        with federated_session(Path(path)) as org:
            parts.append(engine.local_data(org, spec))
    union = engine.LocalData(
        torch.cat([p.x for p in parts]),
        torch.cat([p.y for p in parts]),
        torch.cat([p.test_x for p in parts]),
        torch.cat([p.test_y for p in parts]),
        parts[0].arch,
    )
    central = spec.model_copy(update={"local_epochs": spec.rounds * spec.local_epochs})
    vec = engine.initial_vector(union.arch, spec.seed)
    update, _ = engine.local_train(union, central, vec, 0)
    correct, total = engine.local_evaluate(union, vec + update)
    return correct / total


def accuracy(quick: bool) -> dict[str, Any]:
    flower_environment()
    out: dict[str, Any] = {}
    for kind in ("iid", "dirichlet"):
        tmp = Path(tempfile.mkdtemp(prefix="complai-fl-"))
        try:
            spec = engine.FederatedSpec(
                organisations=10 if not quick else 3,
                partition=kind,
                alpha=0.5,
                rounds=10 if not quick else 2,
                local_epochs=1,
                rows=None if not quick else 3000,
                secure_aggregation=True,
                seed=5,
            )
            t0 = time.perf_counter()
            fed = simulate(spec, tmp / "fl")
            wall = time.perf_counter() - t0
            cen = centralised(fed["layout"], spec)
            out[kind] = {
                "organisations": spec.organisations,
                "rows_per_org": fed["layout"]["rows"],
                "rounds": spec.rounds,
                "federated_accuracy": fed["history"][-1]["accuracy"],
                "accuracy_by_round": [h["accuracy"] for h in fed["history"]],
                "centralised_accuracy": cen,
                "wall_s": round(wall, 1),
            }
            print(
                f"accuracy {kind:9s}: federated {fed['history'][-1]['accuracy']:.4f} vs centralised {cen:.4f} "
                f"({spec.organisations} organisations, {spec.rounds} rounds, {wall:.0f} s)",
                flush=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["protocol", "flower", "accuracy", "all"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    result: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    result.pop("machine", None)
    if args.part in ("protocol", "all"):
        result["protocol"] = protocol(args.quick)
    if args.part in ("flower", "all"):
        result["flower"] = flower(args.quick)
    if args.part in ("accuracy", "all"):
        result["accuracy"] = accuracy(args.quick)
    write_results(OUT, result)
    print(f"results: {OUT}")


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    main()
