"""The server's round interface without Flower: strategies composed from a spec, secure aggregation's
sum equal to the plain one, DP-FedAvg's noise and fixed denominator, the runner's records; and the
session operations an organisation and the server record through."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.errors import PolicyDenied
from complai.events import decode_event
from complai.federated import engine, strategy
from complai.federated.secagg.protocol import (
    Client,
    Config,
    RunConfig,
    decode_roster,
    encode_message,
)
from complai.federated.strategy import CentralDP, FedAvg, LocalDP, RoundRunner, SecureAggregation

DIM = 33


class InProcess:
    """strategy.Transport to organisations living in this process, each with a fixed update per round."""

    def __init__(self, nodes: list[int], seed: int = 0, silent: set[int] | None = None) -> None:
        self.nodes = nodes
        self.silent = silent or set()
        rng = np.random.default_rng(seed)
        self.updates = {n: rng.uniform(-0.1, 0.1, DIM) for n in nodes}
        self.clients: dict[int, Client] = {}
        self.stages: list[str] = []

    def node_ids(self) -> list[int]:
        return list(self.nodes)

    def exchange(self, stage: str, payloads: Mapping[int, strategy.Payload]) -> dict[int, Mapping[str, Any]]:
        self.stages.append(stage)
        out: dict[int, Mapping[str, Any]] = {}
        for n, p in payloads.items():
            if n in self.silent and stage.startswith("train"):
                continue
            if stage == "query.describe":
                out[n] = {"arch": json.dumps({"architecture": "synthetic", "dimension": DIM})}
            elif stage == "train.plain":
                out[n] = {"update": self.updates[n].astype("<f8").tobytes()}
            elif stage == "query.advertise":
                self.clients[n] = Client(RunConfig(str(p["run"]), float(p["bound"])), n)
                out[n] = {"msg": encode_message(self.clients[n].advertise())}
            elif stage == "train.masked":
                client = self.clients[n]
                if not client.roster:
                    client.accept_roster(decode_roster(str(p["roster"])))
                cfg = Config.from_json(str(p["secagg"]))
                out[n] = {"msg": encode_message(client.masked_input(cfg, self.updates[n]))}
            elif stage == "train.reveal":
                cfg = Config.from_json(str(p["secagg"]))
                inbox = {int(k): bytes.fromhex(v) for k, v in json.loads(str(p["inbox"])).items()}
                survivors, dropped = json.loads(str(p["survivors"])), json.loads(str(p["dropped"]))
                out[n] = {"msg": encode_message(self.clients[n].reveal(cfg, survivors, dropped, inbox))}
            elif stage == "evaluate":
                out[n] = {"correct": 0, "total": 0}
        return out


def _spec(**kw: Any) -> engine.FederatedSpec:
    return engine.FederatedSpec.parse({"organisations": 4, "rounds": 2, "clip_norm": 1.0, **kw})


def _layers(s: strategy.Strategy) -> list[str]:
    out = [type(s).__name__]
    while isinstance(s, strategy.Wrapper):
        s = s.inner
        out.append(type(s).__name__)
    return out


def test_features_wrap_the_base_strategy_as_the_spec_asks() -> None:
    t, rng = InProcess([1, 2]), np.random.default_rng(0)
    assert _layers(strategy.build(_spec(secure_aggregation=False), t, "r", rng)) == ["FedAvg"]
    assert _layers(strategy.build(_spec(), t, "r", rng)) == ["SecureAggregation", "FedAvg"]
    central = strategy.build(_spec(dp="central"), t, "r", rng)
    assert _layers(central) == ["CentralDP", "SecureAggregation", "FedAvg"]
    local = strategy.build(_spec(dp="local", noise_multiplier=0.5), t, "r", rng)
    assert _layers(local) == ["SecureAggregation", "LocalDP", "FedAvg"]
    # the quantisation range widens for the organisations' own noise: six sigmas
    assert local.bound() == pytest.approx(1.0 * (1 + 6 * 0.5))
    assert central.bound() == 1.0
    assert strategy.build(_spec(), t, "r", rng).epsilon(3, 0.5) is None
    assert central.epsilon(3, 0.5) == engine.dp_epsilon(_spec(dp="central"), 3, 0.5)


def test_secure_aggregation_collects_the_plain_sum() -> None:
    nodes = [11, 12, 13, 14]
    weights = np.zeros(DIM)
    plain = FedAvg(InProcess(nodes), _spec(), "r").collect(1, nodes, weights)
    transport = InProcess(nodes)
    secure = SecureAggregation(FedAvg(transport, _spec(), "r"), transport, _spec(), "r", np.random.default_rng(1))
    secure.setup(nodes)
    got = secure.collect(1, nodes, weights)
    assert transport.stages == ["query.advertise", "train.masked", "train.reveal"]
    assert got.survivors == plain.survivors == nodes and got.dropped == []
    # quantisation: half a step per client, step = 2 * bound / (2^32 - 1)
    assert np.abs(got.total - plain.total).max() <= 4 * 1.0 / (2**32 - 1)
    assert np.allclose(plain.total, sum(InProcess(nodes).updates.values()))


def test_a_silent_organisation_is_a_dropout_and_the_mean_is_over_those_who_answered() -> None:
    nodes = [1, 2, 3, 4]
    base = FedAvg(InProcess(nodes, silent={3}), _spec(secure_aggregation=False), "r")
    got = base.collect(1, nodes, np.zeros(DIM))
    assert got.survivors == [1, 2, 4] and got.dropped == [3]
    assert np.allclose(base.aggregate(got, 4), got.total / 3)


def test_central_dp_adds_calibrated_noise_and_divides_by_the_number_sampled() -> None:
    spec = _spec(dp="central", noise_multiplier=0.7, secure_aggregation=False)
    collected = strategy.Collected(np.ones(DIM), [1, 2, 3], [4])
    dp = CentralDP(FedAvg(InProcess([1]), spec, "r"), spec, np.random.default_rng(5))
    expected = (np.ones(DIM) + np.random.default_rng(5).normal(0.0, 0.7 * 1.0, DIM)) / 4
    assert np.array_equal(dp.aggregate(collected, 4), expected)
    big = strategy.Collected(np.zeros(200_000), [1, 2], [])
    noise = CentralDP(FedAvg(InProcess([1]), spec, "r"), spec, np.random.default_rng(6)).aggregate(big, 1)
    assert abs(noise.std() - 0.7) < 0.01  # 6 standard errors of a sample of 200k


def test_local_dp_accounts_without_amplification() -> None:
    spec = _spec(dp="local", noise_multiplier=1.1)
    local = LocalDP(FedAvg(InProcess([1]), spec, "r"), spec)
    assert local.epsilon(2, 0.5) == engine.dp_epsilon(spec, 2, 1.0)


class Recorder:
    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []

    def record_federated_round(self, **fields: Any) -> int:
        self.rounds.append(fields)
        return len(self.rounds)


def test_the_runner_records_every_round_through_the_coordinator() -> None:
    recorder = Recorder()

    @contextmanager
    def coordinator() -> Iterator[Recorder]:
        yield recorder

    spec = _spec(dp="central", noise_multiplier=1.0)
    transport = InProcess([5, 6, 7, 8])
    out = RoundRunner(transport, spec, "run-x", coordinator).run()
    assert [h["survivors"] for h in out["history"]] == [4, 4]
    assert [r["round"] for r in recorder.rounds] == [1, 2]
    first = recorder.rounds[0]
    assert first["secure_aggregation"] and first["dp"] == "central" and first["sample_rate"] == 1.0
    assert first["epsilon"] == out["history"][0]["epsilon"] == engine.dp_epsilon(spec, 1, 1.0)
    assert first["aggregate_digest"].startswith("sha256:")
    # the same spec and seed give the same model: the rounds draw from one seeded generator
    again = RoundRunner(InProcess([5, 6, 7, 8]), spec, "run-x").run()
    assert np.array_equal(again["weights"], out["weights"])


def _events(ws: Workspace, kind: str) -> list[Any]:
    return [e for e in (decode_event(x.data) for x in ws.ledger.entries()) if e.kind == kind]


def test_session_records_what_left_the_organisation_and_refuses_a_stranger(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "org")
    try:
        ws.identity.add(OWNER, "stranger", "service")
        owner = ws.session(OWNER, engine.PURPOSE)
        seq = owner.record_federated_update(
            run_id="r",
            round=1,
            dataset="adult",
            examples=10,
            secure_aggregation=True,
            local_dp=False,
            update_digest="sha256:" + "0" * 64,
        )
        sent = _events(ws, "federated.update_sent")
        assert seq == owner.last_seq and len(sent) == 1
        assert (sent[0].actor, sent[0].purpose, sent[0].examples) == (OWNER, engine.PURPOSE, 10)
        stranger = ws.session("stranger", engine.PURPOSE)
        with pytest.raises(PolicyDenied):
            stranger.training_schema("adult")
        with pytest.raises(PolicyDenied):
            stranger.record_federated_round(
                run_id="r",
                round=1,
                sampled=2,
                survivors=2,
                dropped=0,
                secure_aggregation=False,
                dp="none",
                noise_multiplier=None,
                clip_norm=1.0,
                sample_rate=1.0,
                epsilon=None,
                delta=None,
                aggregate_digest="sha256:" + "0" * 64,
            )
        assert _events(ws, "federated.round") == []
        assert [e.actor for e in _events(ws, "access.denied")] == ["stranger", "stranger"]
    finally:
        ws.close()
