"""complai's ServerApp and ClientApp on Flower's Message API.

Per round the server samples organisations and, with secure aggregation, runs the protocol's four
stages as four message exchanges (train.advertise carries the global weights, the client trains then
and answers with its keys; train.share, train.masked, train.reveal follow); without it, one
train.plain exchange carries the clipped updates in the clear. Each organisation's secure-aggregation
state between stages stays in its own node's context. An evaluate exchange measures the new global
model on each organisation's held-out rows. Any failure to complete a round securely stops the run
with the protocol's error: a round is never skipped silently.
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


def make_client_app(spec: engine.FederatedSpec, paths: list[str]) -> Any:
    from flwr.app import Message
    from flwr.clientapp import ClientApp

    from complai.workspace import OWNER, Workspace

    app = ClientApp()

    def _open(context: Any) -> Any:
        return Workspace.open(org_workspace(context, paths))

    def _data(ws: Any) -> engine.LocalData:
        return engine.local_data(ws, OWNER, spec)

    def _record(ws: Any, run_id: str, round_: int, payload: bytes, examples: int) -> None:
        from complai.events import FederatedUpdateSent

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
        global_vec = np.frombuffer(_get(message, "weights"), dtype="<f8")
        data = _data(ws)
        update, n = engine.local_train(data, spec, global_vec, round_)
        update, _ = engine.clip(update, spec.clip_norm)
        if spec.dp == "local":
            rng = np.random.default_rng()
            update = engine.privatise_local(update, spec, rng)
        return update, n

    @app.query("describe")
    def describe(message: Any, context: Any) -> Any:
        with _open(context) as ws:
            data = _data(ws)
        return Message(_content(arch=json.dumps(data.arch), examples=len(data.y)), reply_to=message)

    @app.train("plain")
    def plain(message: Any, context: Any) -> Any:
        round_, run_id = int(_get(message, "round")), str(_get(message, "run"))
        with _open(context) as ws:
            update, n = _update(ws, message, round_)
            payload = update.astype("<f8").tobytes()
            _record(ws, run_id, round_, payload, n)
        return Message(_content(update=payload, examples=n), reply_to=message)

    @app.train("advertise")
    def advertise(message: Any, context: Any) -> Any:
        round_ = int(_get(message, "round"))
        cfg = _cfg(message)
        with _open(context) as ws:
            update, n = _update(ws, message, round_)
        client = Client(cfg, context.node_id)
        context.state[STATE_KEY] = _config_record(
            secagg=client.export_state(), update=update.astype("<f8").tobytes(), examples=n, round=round_
        )
        return Message(_content(msg=encode_message(client.advertise())), reply_to=message)

    def _client(message: Any, context: Any) -> tuple[Client, Any]:
        held = context.state[STATE_KEY]
        if int(held["round"]) != int(_get(message, "round")):
            raise SecAggAbort("secure aggregation message for a round this client is not in")
        return Client.from_state(_cfg(message), held["secagg"]), held

    def _save(context: Any, client: Client, held: Any) -> None:
        held["secagg"] = client.export_state()
        context.state[STATE_KEY] = held

    @app.train("share")
    def share(message: Any, context: Any) -> Any:
        client, held = _client(message, context)
        roster = {int(k): decode_message(bytes.fromhex(v)) for k, v in json.loads(_get(message, "roster")).items()}
        out = client.share(roster)  # type: ignore[arg-type]
        _save(context, client, held)
        return Message(_content(msg=encode_message(out)), reply_to=message)

    @app.train("masked")
    def masked(message: Any, context: Any) -> Any:
        client, held = _client(message, context)
        inbox = {int(k): bytes.fromhex(v) for k, v in json.loads(_get(message, "inbox")).items()}
        update = np.frombuffer(held["update"], dtype="<f8")
        out = client.masked_input(update, inbox)
        payload = encode_message(out)
        with _open(context) as ws:
            _record(ws, str(_get(message, "run")), int(held["round"]), payload, int(held["examples"]))
        _save(context, client, held)
        return Message(_content(msg=payload), reply_to=message)

    @app.train("reveal")
    def reveal(message: Any, context: Any) -> Any:
        client, held = _client(message, context)
        out = client.reveal(json.loads(_get(message, "survivors")), json.loads(_get(message, "dropped")))
        _save(context, client, held)
        return Message(_content(msg=encode_message(out)), reply_to=message)

    @app.evaluate()
    def evaluate(message: Any, context: Any) -> Any:
        vec = np.frombuffer(_get(message, "weights"), dtype="<f8")
        with _open(context) as ws:
            correct, total = engine.local_evaluate(_data(ws), vec)
        return Message(_content(correct=correct, total=total), reply_to=message)

    return app


def _cfg(message: Any) -> Config:
    body = json.loads(_get(message, "secagg"))
    return Config(
        round_id=body["round_id"],
        clients=tuple(body["clients"]),
        dimension=int(body["dimension"]),
        bound=float(body["bound"]),
        neighbours=int(body["neighbours"]),
        threshold=int(body["threshold"]),
        graph_seed=int(body["graph_seed"]),
    )


def _cfg_json(cfg: Config) -> str:
    return json.dumps(
        {
            "round_id": cfg.round_id,
            "clients": list(cfg.clients),
            "dimension": cfg.dimension,
            "bound": cfg.bound,
            "neighbours": cfg.neighbours,
            "threshold": cfg.threshold,
            "graph_seed": cfg.graph_seed,
        }
    )


# --- server side -----------------------------------------------------------------------------------


class RoundRunner:
    """The server's loop, independent of how the Grid is provided (simulation or SuperLink)."""

    def __init__(self, grid: Any, spec: engine.FederatedSpec, server_ws: Path, run_id: str) -> None:
        self.grid, self.spec, self.server_ws, self.run_id = grid, spec, server_ws, run_id
        self.rng = np.random.default_rng(spec.seed)
        self.history: list[dict[str, Any]] = []

    def _send(self, stage: str, content_by_node: dict[int, Any]) -> dict[int, Any]:
        """Send one message per node, collect replies; errors and missing replies are dropouts."""
        from flwr.app import Message

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
        from complai.workspace import Workspace

        nodes = self._wait_for_nodes()
        described = self._send("query.describe", {n: _content() for n in nodes})
        if not described:
            raise InvalidInput("no organisation answered")
        archs = {_get(m, "arch") for m in described.values()}
        if len(archs) != 1:
            raise InvalidInput("organisations disagree on the model's shape (different schemas?)")
        arch = json.loads(archs.pop())
        weights = engine.initial_vector(arch, self.spec.seed)
        dim = weights.size
        per_round = engine.expected_clients(self.spec, len(nodes))
        q = per_round / len(nodes)
        with Workspace.open(self.server_ws) as ws:
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
                self._record(ws, r, len(sampled), survivors, dropped, q, eps, aggregate)
                accuracy = self._evaluate(nodes, weights)
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

    def _secure_round(
        self, r: int, sampled: list[int], weights: np.ndarray, dim: int
    ) -> tuple[np.ndarray, list[int], list[int]]:
        spec = self.spec
        bound = spec.clip_norm * (1 + 6 * spec.noise_multiplier) if spec.dp == "local" else spec.clip_norm
        cfg = Config.create(
            f"{self.run_id}-r{r}",
            sampled,
            dim,
            bound,
            neighbours=spec.neighbours,
            graph_seed=int(self.rng.integers(2**62)),
        )
        server = Server(cfg)
        base = {"round": r, "run": self.run_id, "secagg": _cfg_json(cfg)}
        replies = self._send(
            "train.advertise", {n: _content(**base, weights=weights.astype("<f8").tobytes()) for n in sampled}
        )
        adverts = [decode_message(_get(m, "msg")) for m in replies.values()]
        rosters = server.collect_advertise([a for a in adverts if isinstance(a, Advertise)])
        replies = self._send(
            "train.share",
            {
                n: _content(**base, roster=json.dumps({str(k): encode_message(v).hex() for k, v in ro.items()}))
                for n, ro in rosters.items()
            },
        )
        inbox = server.collect_shares([decode_message(_get(m, "msg")) for m in replies.values()])  # type: ignore[misc]
        replies = self._send(
            "train.masked",
            {
                n: _content(**base, inbox=json.dumps({str(k): v.hex() for k, v in ib.items()}))
                for n, ib in inbox.items()
            },
        )
        survivors, dropped = server.collect_masked([decode_message(_get(m, "msg")) for m in replies.values()])  # type: ignore[misc]
        replies = self._send(
            "train.reveal",
            {n: _content(**base, survivors=json.dumps(survivors), dropped=json.dumps(dropped)) for n in survivors},
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
        from complai.events import FederatedRound
        from complai.workspace import OWNER

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


def make_server_app(spec: engine.FederatedSpec, server_ws: Path, run_id: str, sink: Path) -> Any:
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
