"""complai's ServerApp and ClientApp on Flower's Message API.

The server's rounds are strategy.py's, carried here over Flower's Grid: one message per node and
exchange, the spec riding along with each. With secure aggregation a query.advertise exchange collects
every organisation's public keys once per run; per round train.masked carries the global weights and
the key roster, and the organisation trains and answers with its masked update and sealed shares;
train.reveal names survivors and dropouts and collects what unmasks the sum. Without secure aggregation
one train.plain exchange carries the clipped updates in the clear. Each organisation's
secure-aggregation state between exchanges (its private keys, the round's self-mask seed) stays in its
own node's context. An evaluate exchange measures the new global model on each organisation's held-out
rows.

Nothing here opens a workspace: the organisation's side reaches its data and its ledger through an
`engine.Organisation` that the caller opens per message, the server records through an
`engine.Coordinator` (app/federation_apps.py opens both as sessions of the workspaces).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from complai.crypto.digest import digest
from complai.errors import ComplaiError
from complai.federated import engine
from complai.federated.secagg.protocol import (
    Client,
    Config,
    RunConfig,
    SecAggAbort,
    decode_roster,
    encode_message,
)
from complai.federated.strategy import CoordinatorOpener, Payload, RoundRunner

STATE_KEY = "complai"

OrganisationOpener = Callable[[Context, str], AbstractContextManager[engine.Organisation]]
"""Opens the node's organisation for one message: (the node's context, the run's purpose)."""


def _content(**values: Any) -> RecordDict:
    return RecordDict({"c": ConfigRecord(values)})


def _get(message: Message, key: str) -> Any:
    return message.content["c"][key]


# --- transport ---------------------------------------------------------------------------------------


class GridTransport:
    """strategy.Transport over Flower's Grid (simulation or SuperLink)."""

    def __init__(self, grid: Grid, spec: engine.FederatedSpec, run_id: str) -> None:
        self.grid, self.spec, self.run_id = grid, spec, run_id

    def node_ids(self) -> list[int]:
        return [int(n) for n in self.grid.get_node_ids()]

    def exchange(self, stage: str, payloads: Mapping[int, Payload]) -> dict[int, Mapping[str, Any]]:
        spec_json = self.spec.model_dump_json()
        msgs = [
            Message(_content(**payload, spec=spec_json), dst_node_id=node, message_type=stage, group_id=self.run_id)
            for node, payload in payloads.items()
        ]
        replies = self.grid.send_and_receive(msgs, timeout=self.spec.timeout_s)
        out: dict[int, Mapping[str, Any]] = {}
        for r in replies:
            if not r.has_error():
                out[r.metadata.src_node_id] = r.content["c"]
        return out


# --- client side -----------------------------------------------------------------------------------


class Synthetic:
    """A stand-in organisation for protocol benchmarks: a fixed random update of `dimension` values,
    no data, no workspace, nothing recorded."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension


def make_client_app(
    fixed: engine.FederatedSpec | None,
    organisation: OrganisationOpener | None,
    synthetic: Synthetic | None = None,
) -> ClientApp:
    """The ClientApp; `fixed` is the spec (simulation), or None to take it from the run's messages
    (deployment, where the server's Flower App carries it). `organisation(context, purpose)` opens the
    node's organisation for one message (a session of its workspace bound to the run's purpose); a
    `synthetic` stand-in needs none."""
    if organisation is None and synthetic is None:
        raise ValueError("a client needs an organisation or a synthetic stand-in")
    app = ClientApp()

    @contextmanager
    def _open(context: Context, message: Message) -> Iterator[engine.Organisation | None]:
        if organisation is None or synthetic is not None:
            yield None
            return
        with organisation(context, _spec(message).purpose) as org:
            yield org

    def _spec(message: Message) -> engine.FederatedSpec:
        if fixed is not None:
            return fixed
        return engine.FederatedSpec.model_validate_json(str(_get(message, "spec")))

    def _data(org: engine.Organisation | None, spec: engine.FederatedSpec) -> engine.LocalData:
        if org is None:
            raise ValueError("a synthetic organisation has no data")
        return engine.local_data(org, spec)

    def _record(
        org: engine.Organisation | None,
        spec: engine.FederatedSpec,
        run_id: str,
        round_: int,
        payload: bytes,
        examples: int,
    ) -> None:
        if org is None:
            return
        org.record_federated_update(
            run_id=run_id,
            round=round_,
            dataset=spec.dataset,
            examples=examples,
            secure_aggregation=spec.secure_aggregation,
            local_dp=spec.dp == "local",
            update_digest=digest(payload),
        )

    def _update(org: engine.Organisation | None, message: Message, round_: int) -> tuple[np.ndarray, int]:
        spec = _spec(message)
        if synthetic is not None:
            rng = np.random.default_rng(round_)
            return rng.uniform(-spec.clip_norm, spec.clip_norm, synthetic.dimension) / np.sqrt(synthetic.dimension), 1
        global_vec = np.frombuffer(_get(message, "weights"), dtype="<f8")
        update, n = engine.local_train(_data(org, spec), spec, global_vec, round_)
        return engine.prepare_update(update, spec), n

    @app.query("describe")
    def describe(message: Message, context: Context) -> Message:
        if synthetic is not None:
            arch = {"architecture": "synthetic", "dimension": synthetic.dimension}
            return Message(_content(arch=json.dumps(arch), examples=1), reply_to=message)
        with _open(context, message) as org:
            data = _data(org, _spec(message))
        return Message(_content(arch=json.dumps(data.arch), examples=len(data.y)), reply_to=message)

    @app.train("plain")
    def plain(message: Message, context: Context) -> Message:
        round_, run_id = int(_get(message, "round")), str(_get(message, "run"))
        with _open(context, message) as org:
            update, n = _update(org, message, round_)
            payload = update.astype("<f8").tobytes()
            _record(org, _spec(message), run_id, round_, payload, n)
        return Message(_content(update=payload, examples=n), reply_to=message)

    def _run(message: Message) -> RunConfig:
        return RunConfig(str(_get(message, "run")), float(_get(message, "bound")))

    def _load(context: Context, run: RunConfig) -> Client:
        if STATE_KEY not in context.state:
            raise SecAggAbort("this organisation holds no keys for the run (did it miss the setup?)")
        held = context.state[STATE_KEY]
        if str(held["run"]) != run.run_id:
            raise SecAggAbort("secure aggregation message for a run this organisation did not join")
        state = held["secagg"]
        if not isinstance(state, bytes):
            raise SecAggAbort("this organisation's secure aggregation state is damaged")
        return Client.from_state(run, state)

    def _save(context: Context, run: RunConfig, client: Client) -> None:
        context.state[STATE_KEY] = ConfigRecord({"run": run.run_id, "secagg": client.export_state()})

    @app.query("advertise")
    def advertise(message: Message, context: Context) -> Message:
        run = _run(message)
        client = Client(run, context.node_id)
        _save(context, run, client)
        return Message(_content(msg=encode_message(client.advertise())), reply_to=message)

    @app.train("masked")
    def masked(message: Message, context: Context) -> Message:
        run = _run(message)
        client = _load(context, run)
        if not client.roster:
            client.accept_roster(decode_roster(str(_get(message, "roster"))))
        cfg = Config.from_json(_get(message, "secagg"))
        round_ = cfg.round
        with _open(context, message) as org:
            update, n = _update(org, message, round_)
            out = client.masked_input(cfg, update)
            payload = encode_message(out)
            _record(org, _spec(message), run.run_id, round_, payload, n)
        _save(context, run, client)
        return Message(_content(msg=payload), reply_to=message)

    @app.train("reveal")
    def reveal(message: Message, context: Context) -> Message:
        run = _run(message)
        client = _load(context, run)
        cfg = Config.from_json(_get(message, "secagg"))
        inbox = {int(k): bytes.fromhex(v) for k, v in json.loads(_get(message, "inbox")).items()}
        out = client.reveal(cfg, json.loads(_get(message, "survivors")), json.loads(_get(message, "dropped")), inbox)
        _save(context, run, client)
        return Message(_content(msg=encode_message(out)), reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        if synthetic is not None:
            return Message(_content(correct=0, total=0), reply_to=message)
        vec = np.frombuffer(_get(message, "weights"), dtype="<f8")
        with _open(context, message) as org:
            data = _data(org, _spec(message))
            correct, total = engine.local_evaluate(data, vec)
        counts = json.dumps(engine.label_counts(data))
        return Message(_content(correct=correct, total=total, counts=counts), reply_to=message)

    return app


# --- server side -----------------------------------------------------------------------------------


def run_rounds(
    grid: Grid,
    spec: engine.FederatedSpec,
    run_id: str,
    coordinator: CoordinatorOpener | None = None,
    on_round: engine.RoundProgress | None = None,
) -> dict[str, Any]:
    """The run's rounds over `grid`, recorded through `coordinator` (None: nothing recorded), each
    round's summary handed to `on_round` as it completes."""
    return RoundRunner(GridTransport(grid, spec, run_id), spec, run_id, coordinator, on_round).run()


def make_server_app(
    spec: engine.FederatedSpec,
    run_id: str,
    sink: Path,
    coordinator: CoordinatorOpener | None = None,
    on_round: engine.RoundProgress | None = None,
) -> ServerApp:
    """A ServerApp that runs the rounds and writes its result (or its error) to `sink` as JSON, the
    final weights next to it (.npy). In Flower's simulation the ServerApp runs in a thread of the
    calling process, so `on_round` is called there after each round."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            out = run_rounds(grid, spec, run_id, coordinator, on_round)
            weights = out.pop("weights")
            np.save(sink.with_suffix(".npy"), weights)
            sink.write_text(json.dumps({"ok": True, **out}))
        except ComplaiError as exc:
            sink.write_text(json.dumps({"ok": False, "error": exc.message, "type": type(exc).__name__}))
        except Exception as exc:  # the run's outcome must reach the caller, whatever it is
            sink.with_suffix(".log").write_text(traceback.format_exc())
            sink.write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}", "type": "internal"}))

    return app
