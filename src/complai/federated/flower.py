"""complai's ServerApp and ClientApp on Flower's Message API.

Once per run, with secure aggregation, a query.advertise exchange collects every organisation's
public keys. Per round the server samples organisations and runs two exchanges: train.masked carries
the global weights and the key roster, and the organisation trains and answers with its masked update
and sealed shares; train.reveal names survivors and dropouts and collects what unmasks the sum.
Without secure aggregation one train.plain exchange carries the clipped updates in the clear. Each
organisation's secure-aggregation state between exchanges (its private keys, the round's self-mask
seed) stays in its own node's context. An evaluate exchange measures the new global model on each
organisation's held-out rows. Any failure to complete a round securely stops the run with the
protocol's error: a round is never skipped silently.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from complai.errors import ComplaiError, InvalidInput
from complai.federated import engine
from complai.federated.secagg.protocol import (
    Advertise,
    Client,
    Config,
    RunConfig,
    RunServer,
    SecAggAbort,
    Server,
    decode_message,
    encode_message,
)

STATE_KEY = "complai"


def _config_record(**values: Any) -> Any:
    from flwr.app import ConfigRecord

    return ConfigRecord(values)


def _content(**values: Any) -> Any:
    from flwr.app import RecordDict

    return RecordDict({"c": _config_record(**values)})


def _get(message: Any, key: str) -> Any:
    return message.content["c"][key]


# --- client side -----------------------------------------------------------------------------------


def org_workspace(context: Any, paths: list[str]) -> Path:
    """The organisation's workspace: the node's `workspace` setting (deployment) or its partition's
    entry in `paths` (simulation)."""
    cfg = context.node_config
    if "workspace" in cfg:
        return Path(str(cfg["workspace"]))
    return Path(paths[int(cfg["partition-id"])])


class Synthetic:
    """A stand-in organisation for protocol benchmarks: a fixed random update of `dimension` values,
    no data, no workspace, nothing recorded."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension


def make_client_app(fixed: engine.FederatedSpec | None, paths: list[str], synthetic: Synthetic | None = None) -> Any:
    """The ClientApp; `fixed` is the spec (simulation), or None to take it from the run's messages
    (deployment, where the server's Flower App carries it)."""
    from flwr.app import Message
    from flwr.clientapp import ClientApp

    from complai.access.identity import OWNER
    from complai.app.workspace import Workspace

    app = ClientApp()

    class _Null:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    def _open(context: Any) -> Any:
        if synthetic is not None:
            return _Null()
        return Workspace.open(org_workspace(context, paths))

    def _spec(message: Any) -> engine.FederatedSpec:
        if fixed is not None:
            return fixed
        return engine.FederatedSpec.model_validate_json(str(_get(message, "spec")))

    def _data(ws: Any, spec: engine.FederatedSpec) -> engine.LocalData:
        return engine.local_data(ws, OWNER, spec)

    def _record(ws: Any, spec: engine.FederatedSpec, run_id: str, round_: int, payload: bytes, examples: int) -> None:
        from complai.events import FederatedUpdateSent

        if ws is None:
            return
        ws.ledger.record(
            FederatedUpdateSent(
                time=ws.clock.now(),
                actor=OWNER,
                purpose=engine.PURPOSE,
                run_id=run_id,
                round=round_,
                dataset=spec.dataset,
                examples=examples,
                secure_aggregation=spec.secure_aggregation,
                local_dp=spec.dp == "local",
                update_digest=engine.digest(payload),
            )
        )

    def _update(ws: Any, message: Any, round_: int) -> tuple[np.ndarray, int]:
        spec = _spec(message)
        if synthetic is not None:
            rng = np.random.default_rng(round_)
            return rng.uniform(-spec.clip_norm, spec.clip_norm, synthetic.dimension) / np.sqrt(synthetic.dimension), 1
        global_vec = np.frombuffer(_get(message, "weights"), dtype="<f8")
        data = _data(ws, spec)
        update, n = engine.local_train(data, spec, global_vec, round_)
        update, _ = engine.clip(update, spec.clip_norm)
        if spec.dp == "local":
            rng = np.random.default_rng()
            update = engine.privatise_local(update, spec, rng)
        return update, n

    @app.query("describe")
    def describe(message: Any, context: Any) -> Any:
        if synthetic is not None:
            arch = {"architecture": "synthetic", "dimension": synthetic.dimension}
            return Message(_content(arch=json.dumps(arch), examples=1), reply_to=message)
        with _open(context) as ws:
            data = _data(ws, _spec(message))
        return Message(_content(arch=json.dumps(data.arch), examples=len(data.y)), reply_to=message)

    @app.train("plain")
    def plain(message: Any, context: Any) -> Any:
        round_, run_id = int(_get(message, "round")), str(_get(message, "run"))
        with _open(context) as ws:
            update, n = _update(ws, message, round_)
            payload = update.astype("<f8").tobytes()
            _record(ws, _spec(message), run_id, round_, payload, n)
        return Message(_content(update=payload, examples=n), reply_to=message)

    def _run(message: Any) -> RunConfig:
        return RunConfig(str(_get(message, "run")), float(_get(message, "bound")))

    def _load(context: Any, run: RunConfig) -> Client:
        if STATE_KEY not in context.state:
            raise SecAggAbort("this organisation holds no keys for the run (did it miss the setup?)")
        held = context.state[STATE_KEY]
        if str(held["run"]) != run.run_id:
            raise SecAggAbort("secure aggregation message for a run this organisation did not join")
        return Client.from_state(run, held["secagg"])

    def _save(context: Any, run: RunConfig, client: Client) -> None:
        context.state[STATE_KEY] = _config_record(run=run.run_id, secagg=client.export_state())

    @app.query("advertise")
    def advertise(message: Any, context: Any) -> Any:
        run = _run(message)
        client = Client(run, context.node_id)
        _save(context, run, client)
        return Message(_content(msg=encode_message(client.advertise())), reply_to=message)

    @app.train("masked")
    def masked(message: Any, context: Any) -> Any:
        run = _run(message)
        client = _load(context, run)
        if not client.roster:
            roster = {int(k): decode_message(bytes.fromhex(v)) for k, v in json.loads(_get(message, "roster")).items()}
            client.accept_roster(roster)  # type: ignore[arg-type]
        cfg = Config.from_json(_get(message, "secagg"))
        round_ = cfg.round
        with _open(context) as ws:
            update, n = _update(ws, message, round_)
            out = client.masked_input(cfg, update)
            payload = encode_message(out)
            _record(ws, _spec(message), run.run_id, round_, payload, n)
        _save(context, run, client)
        return Message(_content(msg=payload), reply_to=message)

    @app.train("reveal")
    def reveal(message: Any, context: Any) -> Any:
        run = _run(message)
        client = _load(context, run)
        cfg = Config.from_json(_get(message, "secagg"))
        inbox = {int(k): bytes.fromhex(v) for k, v in json.loads(_get(message, "inbox")).items()}
        out = client.reveal(cfg, json.loads(_get(message, "survivors")), json.loads(_get(message, "dropped")), inbox)
        _save(context, run, client)
        return Message(_content(msg=encode_message(out)), reply_to=message)

    @app.evaluate()
    def evaluate(message: Any, context: Any) -> Any:
        if synthetic is not None:
            return Message(_content(correct=0, total=0), reply_to=message)
        vec = np.frombuffer(_get(message, "weights"), dtype="<f8")
        with _open(context) as ws:
            correct, total = engine.local_evaluate(_data(ws, _spec(message)), vec)
        return Message(_content(correct=correct, total=total), reply_to=message)

    return app


# --- server side -----------------------------------------------------------------------------------


class RoundRunner:
    """The server's loop, independent of how the Grid is provided (simulation or SuperLink)."""

    def __init__(self, grid: Any, spec: engine.FederatedSpec, server_ws: Path | None, run_id: str) -> None:
        self.grid, self.spec, self.server_ws, self.run_id = grid, spec, server_ws, run_id
        self.rng = np.random.default_rng(spec.seed)
        self.history: list[dict[str, Any]] = []

    def _send(self, stage: str, content_by_node: dict[int, Any]) -> dict[int, Any]:
        """Send one message per node, collect replies; errors and missing replies are dropouts."""
        from flwr.app import Message

        spec_json = self.spec.model_dump_json()
        for content in content_by_node.values():
            content["c"]["spec"] = spec_json
        msgs = [
            Message(content, dst_node_id=node, message_type=stage, group_id=self.run_id)
            for node, content in content_by_node.items()
        ]
        replies = self.grid.send_and_receive(msgs, timeout=self.spec.timeout_s)
        out = {}
        for r in replies:
            if not r.has_error():
                out[r.metadata.src_node_id] = r
        return out

    def _wait_for_nodes(self) -> list[int]:
        deadline = time.monotonic() + self.spec.timeout_s
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) >= self.spec.organisations:
                return nodes
            if time.monotonic() > deadline:
                raise InvalidInput(f"only {len(nodes)} of {self.spec.organisations} organisations connected")
            time.sleep(0.5)

    def run(self) -> dict[str, Any]:
        from complai.app.workspace import Workspace

        nodes = self._wait_for_nodes()
        described = self._send("query.describe", {n: _content() for n in nodes})
        if not described:
            raise InvalidInput("no organisation answered")
        archs = {_get(m, "arch") for m in described.values()}
        if len(archs) != 1:
            raise InvalidInput("organisations disagree on the model's shape (different schemas?)")
        arch = json.loads(archs.pop())
        if arch["architecture"] == "synthetic":
            weights = np.zeros(int(arch["dimension"]))
        else:
            weights = engine.initial_vector(arch, self.spec.seed)
        dim = weights.size
        if self.spec.secure_aggregation:
            self._setup(nodes)
        per_round = engine.expected_clients(self.spec, len(nodes))
        q = per_round / len(nodes)
        with Workspace.open(self.server_ws) if self.server_ws else _nullcontext() as ws:
            for r in range(1, self.spec.rounds + 1):
                t0 = time.perf_counter()
                # node ids are 64-bit: sample positions, never the ids through numpy
                picks = self.rng.choice(len(nodes), size=per_round, replace=False)
                sampled = sorted(nodes[int(i)] for i in picks)
                if self.spec.secure_aggregation:
                    total, survivors, dropped = self._secure_round(r, sampled, weights, dim)
                else:
                    total, survivors, dropped = self._plain_round(r, sampled, weights)
                if self.spec.dp == "central":
                    total = engine.central_noise(total, self.spec, self.rng)
                    aggregate = total / per_round  # a fixed denominator keeps the noise calibrated
                else:
                    aggregate = total / max(len(survivors), 1)
                weights = weights + aggregate
                eps = engine.dp_epsilon(self.spec, r, q)
                if ws is not None:
                    self._record(ws, r, len(sampled), survivors, dropped, q, eps, aggregate)
                accuracy = self._evaluate(nodes, weights) if arch["architecture"] != "synthetic" else None
                self.history.append(
                    {
                        "round": r,
                        "seconds": round(time.perf_counter() - t0, 3),
                        "survivors": len(survivors),
                        "dropped": len(dropped),
                        "accuracy": accuracy,
                        "epsilon": eps,
                    }
                )
        return {"run_id": self.run_id, "arch": arch, "weights": weights, "history": self.history}

    def _plain_round(self, r: int, sampled: list[int], weights: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
        replies = self._send(
            "train.plain",
            {n: _content(round=r, run=self.run_id, weights=weights.astype("<f8").tobytes()) for n in sampled},
        )
        if len(replies) < 2:
            raise SecAggAbort(f"round {r} aborted: only {len(replies)} organisations answered")
        total = sum(np.frombuffer(_get(m, "update"), dtype="<f8") for m in replies.values())
        return np.asarray(total), sorted(replies), [n for n in sampled if n not in replies]

    def _bound(self) -> float:
        spec = self.spec
        return spec.clip_norm * (1 + 6 * spec.noise_multiplier) if spec.dp == "local" else spec.clip_norm

    def _setup(self, nodes: list[int]) -> None:
        """Once per run: every organisation's public keys."""
        self.run_cfg = RunConfig(self.run_id, self._bound())
        replies = self._send("query.advertise", {n: _content(run=self.run_id, bound=self._bound()) for n in nodes})
        adverts = [decode_message(_get(m, "msg")) for m in replies.values()]
        self.roster = RunServer(self.run_cfg).collect([a for a in adverts if isinstance(a, Advertise)])
        self.roster_json = json.dumps({str(k): encode_message(v).hex() for k, v in self.roster.items()})

    def _secure_round(
        self, r: int, sampled: list[int], weights: np.ndarray, dim: int
    ) -> tuple[np.ndarray, list[int], list[int]]:
        sampled = [n for n in sampled if n in self.roster]
        cfg = Config.create(
            self.run_cfg,
            r,
            sampled,
            dim,
            neighbours=self.spec.neighbours,
            graph_seed=int(self.rng.integers(2**62)),
            max_dropout=self.spec.max_dropout,
        )
        server = Server(cfg, self.roster)
        base = {"round": r, "run": self.run_id, "bound": self.run_cfg.bound, "secagg": cfg.to_json()}
        replies = self._send(
            "train.masked",
            {n: _content(**base, roster=self.roster_json, weights=weights.astype("<f8").tobytes()) for n in sampled},
        )
        survivors, dropped, inbox = server.collect_masked([decode_message(_get(m, "msg")) for m in replies.values()])  # type: ignore[misc]
        replies = self._send(
            "train.reveal",
            {
                n: _content(
                    **base,
                    survivors=json.dumps(survivors),
                    dropped=json.dumps(dropped),
                    inbox=json.dumps({str(k): v.hex() for k, v in inbox[n].items()}),
                )
                for n in survivors
            },
        )
        result = server.finish([decode_message(_get(m, "msg")) for m in replies.values()])  # type: ignore[misc]
        return result.total, result.survivors, [n for n in sampled if n not in result.survivors]

    def _evaluate(self, nodes: list[int], weights: np.ndarray) -> float | None:
        replies = self._send("evaluate", {n: _content(weights=weights.astype("<f8").tobytes()) for n in nodes})
        correct = sum(int(_get(m, "correct")) for m in replies.values())
        total = sum(int(_get(m, "total")) for m in replies.values())
        return correct / total if total else None

    def _record(
        self,
        ws: Any,
        r: int,
        sampled: int,
        survivors: list[int],
        dropped: list[int],
        q: float,
        eps: float | None,
        aggregate: np.ndarray,
    ) -> None:
        from complai.access.identity import OWNER
        from complai.events import FederatedRound

        dp = self.spec.dp
        ws.ledger.record(
            FederatedRound(
                time=ws.clock.now(),
                actor=OWNER,
                purpose=engine.PURPOSE,
                run_id=self.run_id,
                round=r,
                sampled=sampled,
                survivors=len(survivors),
                dropped=len(dropped),
                secure_aggregation=self.spec.secure_aggregation,
                dp=dp,
                noise_multiplier=self.spec.noise_multiplier if dp != "none" else None,
                clip_norm=self.spec.clip_norm,
                sample_rate=q,
                epsilon=eps,
                delta=self.spec.delta if dp != "none" else None,
                aggregate_digest=engine.digest(aggregate.astype("<f8").tobytes()),
            )
        )


def _nullcontext() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def make_server_app(spec: engine.FederatedSpec, server_ws: Path | None, run_id: str, sink: Path) -> Any:
    """A ServerApp that runs the rounds and writes its result (or its error) to `sink` as JSON."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        try:
            out = RoundRunner(grid, spec, server_ws, run_id).run()
            weights = out.pop("weights")
            np.save(sink.with_suffix(".npy"), weights)
            sink.write_text(json.dumps({"ok": True, **out}))
        except ComplaiError as exc:
            sink.write_text(json.dumps({"ok": False, "error": exc.message, "type": type(exc).__name__}))
        except Exception as exc:  # the run's outcome must reach the caller, whatever it is
            import traceback

            sink.with_suffix(".log").write_text(traceback.format_exc())
            sink.write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}", "type": "internal"}))

    return app
