"""The server's side of a federated run, independent of how messages travel (Flower's simulation, a
SuperLink, or an in-process stand-in): a small round interface in the manner of Flower's strategies.

A `Strategy` says how one round's updates are collected into a sum (`collect`), how the sum becomes
the step applied to the global weights (`aggregate`), how large a coordinate of an update may be
(`bound`) and what privacy the rounds so far have spent (`epsilon`). `FedAvg` is the base: updates in
the clear, averaged over those who answered. Features wrap a base strategy and change one step each:
`SecureAggregation` collects the sum by secure aggregation (the server never sees one update),
`CentralDP` adds DP-FedAvg's Gaussian noise to the sum and divides by the fixed number sampled,
`LocalDP` accounts for the noise each organisation adds and widens the quantisation bound for it.
`RoundRunner` drives the rounds through a `Transport` and records each on the coordinator's ledger.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from complai.crypto.digest import digest
from complai.errors import InvalidInput
from complai.federated import engine
from complai.federated.secagg.protocol import (
    Advertise,
    Config,
    RunConfig,
    RunServer,
    SecAggAbort,
    Server,
    decode_masked,
    decode_message,
    decode_reveal,
    encode_message,
)

Value = str | int | float | bool | bytes
Payload = dict[str, Value]


class Transport(Protocol):
    """How the server reaches the organisations' nodes."""

    def node_ids(self) -> list[int]:
        """The nodes connected now."""
        ...

    def exchange(self, stage: str, payloads: Mapping[int, Payload]) -> dict[int, Mapping[str, Any]]:
        """Send one message per node (`stage` names what it asks for), return the replies by node; a node
        that answers with an error or not at all is absent (a dropout)."""
        ...


@dataclass(frozen=True)
class Collected:
    """One round's sum of updates and who contributed to it."""

    total: np.ndarray
    survivors: list[int]
    dropped: list[int]


def _weights(weights: np.ndarray) -> bytes:
    return weights.astype("<f8").tobytes()


class Strategy(ABC):
    """One round at a time: collect the sampled organisations' updates, turn their sum into a step."""

    def setup(self, nodes: list[int]) -> None:
        """Once per run, before the first round."""
        return None

    @abstractmethod
    def collect(self, round_: int, sampled: list[int], weights: np.ndarray) -> Collected:
        """The sum of the sampled organisations' updates to `weights`."""

    @abstractmethod
    def aggregate(self, collected: Collected, sampled: int) -> np.ndarray:
        """The step added to the global weights, from a round that sampled `sampled` organisations."""

    @abstractmethod
    def bound(self) -> float:
        """The largest magnitude an update's coordinate may have (the quantisation range)."""

    @abstractmethod
    def epsilon(self, rounds: int, sample_rate: float) -> float | None:
        """The privacy spent after `rounds` rounds sampling at `sample_rate` (None: no DP)."""


class FedAvg(Strategy):
    """Federated averaging with updates in the clear: the mean of the updates that arrived."""

    def __init__(self, transport: Transport, spec: engine.FederatedSpec, run_id: str) -> None:
        self.transport, self.spec, self.run_id = transport, spec, run_id

    def collect(self, round_: int, sampled: list[int], weights: np.ndarray) -> Collected:
        payload: Payload = {"round": round_, "run": self.run_id, "weights": _weights(weights)}
        replies = self.transport.exchange("train.plain", {n: dict(payload) for n in sampled})
        if len(replies) < 2:
            raise SecAggAbort(f"round {round_} aborted: only {len(replies)} organisations answered")
        total = sum(np.frombuffer(m["update"], dtype="<f8") for m in replies.values())
        return Collected(np.asarray(total), sorted(replies), [n for n in sampled if n not in replies])

    def aggregate(self, collected: Collected, sampled: int) -> np.ndarray:
        return collected.total / max(len(collected.survivors), 1)

    def bound(self) -> float:
        return self.spec.clip_norm

    def epsilon(self, rounds: int, sample_rate: float) -> float | None:
        return None


class Wrapper(Strategy):
    """A feature around a strategy: every step is the inner strategy's unless the feature changes it."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def setup(self, nodes: list[int]) -> None:
        self.inner.setup(nodes)

    def collect(self, round_: int, sampled: list[int], weights: np.ndarray) -> Collected:
        return self.inner.collect(round_, sampled, weights)

    def aggregate(self, collected: Collected, sampled: int) -> np.ndarray:
        return self.inner.aggregate(collected, sampled)

    def bound(self) -> float:
        return self.inner.bound()

    def epsilon(self, rounds: int, sample_rate: float) -> float | None:
        return self.inner.epsilon(rounds, sample_rate)


class LocalDP(Wrapper):
    """Each organisation adds N(0, (z C)^2) to its clipped update before it leaves (engine.prepare_update):
    the server accounts for it (no amplification by sampling) and widens the bound to six sigmas."""

    def __init__(self, inner: Strategy, spec: engine.FederatedSpec) -> None:
        super().__init__(inner)
        self.spec = spec

    def bound(self) -> float:
        return self.spec.clip_norm * (1 + 6 * self.spec.noise_multiplier)

    def epsilon(self, rounds: int, sample_rate: float) -> float | None:
        return engine.dp_epsilon(self.spec, rounds, sample_rate)


class CentralDP(Wrapper):
    """DP-FedAvg (McMahan et al. 2018): Gaussian noise N(0, (z C)^2) on the sum of updates each clipped
    to C, divided by the number sampled (a fixed denominator keeps the noise calibrated)."""

    def __init__(self, inner: Strategy, spec: engine.FederatedSpec, rng: np.random.Generator) -> None:
        super().__init__(inner)
        self.spec, self.rng = spec, rng

    def aggregate(self, collected: Collected, sampled: int) -> np.ndarray:
        total: np.ndarray = engine.central_noise(collected.total, self.spec, self.rng)
        return total / sampled

    def epsilon(self, rounds: int, sample_rate: float) -> float | None:
        return engine.dp_epsilon(self.spec, rounds, sample_rate)


class SecureAggregation(Wrapper):
    """The sum by secure aggregation (secagg/protocol.py): once per run a query.advertise exchange
    collects every organisation's public keys; per round train.masked carries the global weights and
    the key roster and returns masked updates with sealed shares, and train.reveal names survivors and
    dropouts and collects what unmasks the sum. Too many dropouts abort the round (SecAggAbort)."""

    def __init__(
        self,
        inner: Strategy,
        transport: Transport,
        spec: engine.FederatedSpec,
        run_id: str,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(inner)
        self.transport, self.spec, self.run_id, self.rng = transport, spec, run_id, rng
        self.roster: dict[int, Advertise] = {}
        self.roster_json = ""

    def setup(self, nodes: list[int]) -> None:
        self.inner.setup(nodes)
        bound = self.bound()
        self.run_cfg = RunConfig(self.run_id, bound)
        replies = self.transport.exchange("query.advertise", {n: {"run": self.run_id, "bound": bound} for n in nodes})
        adverts = [decode_message(m["msg"]) for m in replies.values()]
        self.roster = RunServer(self.run_cfg).collect([a for a in adverts if isinstance(a, Advertise)])
        self.roster_json = json.dumps({str(k): encode_message(v).hex() for k, v in self.roster.items()})

    def collect(self, round_: int, sampled: list[int], weights: np.ndarray) -> Collected:
        sampled = [n for n in sampled if n in self.roster]
        cfg = Config.create(
            self.run_cfg,
            round_,
            sampled,
            weights.size,
            neighbours=self.spec.neighbours,
            graph_seed=int(self.rng.integers(2**62)),
            max_dropout=self.spec.max_dropout,
        )
        server = Server(cfg, self.roster)
        base: Payload = {"round": round_, "run": self.run_id, "bound": self.run_cfg.bound, "secagg": cfg.to_json()}
        replies = self.transport.exchange(
            "train.masked",
            {n: {**base, "roster": self.roster_json, "weights": _weights(weights)} for n in sampled},
        )
        survivors, dropped, inbox = server.collect_masked([decode_masked(m["msg"]) for m in replies.values()])
        replies = self.transport.exchange(
            "train.reveal",
            {
                n: {
                    **base,
                    "survivors": json.dumps(survivors),
                    "dropped": json.dumps(dropped),
                    "inbox": json.dumps({str(k): v.hex() for k, v in inbox[n].items()}),
                }
                for n in survivors
            },
        )
        result = server.finish([decode_reveal(m["msg"]) for m in replies.values()])
        return Collected(result.total, result.survivors, [n for n in sampled if n not in result.survivors])


def build(spec: engine.FederatedSpec, transport: Transport, run_id: str, rng: np.random.Generator) -> Strategy:
    """The spec's strategy: FedAvg, with local DP, secure aggregation and central DP as asked."""
    strategy: Strategy = FedAvg(transport, spec, run_id)
    if spec.dp == "local":
        strategy = LocalDP(strategy, spec)
    if spec.secure_aggregation:
        strategy = SecureAggregation(strategy, transport, spec, run_id, rng)
    if spec.dp == "central":
        strategy = CentralDP(strategy, spec, rng)
    return strategy


CoordinatorOpener = Callable[[], AbstractContextManager[engine.Coordinator]]


class RoundRunner:
    """The server's loop: wait for the organisations, agree on the model, then per round sample, collect
    through the strategy, step, record and evaluate. Any failure to complete a round stops the run with
    its error: a round is never skipped silently."""

    def __init__(
        self,
        transport: Transport,
        spec: engine.FederatedSpec,
        run_id: str,
        coordinator: CoordinatorOpener | None = None,
        on_round: engine.RoundProgress | None = None,
    ) -> None:
        self.transport, self.spec, self.run_id, self.coordinator = transport, spec, run_id, coordinator
        self.on_round = on_round
        self.label_counts: np.ndarray = np.zeros(0, dtype=np.int64)  # the last evaluation's, per class
        self.rng = np.random.default_rng(spec.seed)
        self.strategy = build(spec, transport, run_id, self.rng)
        self.history: list[engine.RoundSummary] = []

    def _wait_for_nodes(self) -> list[int]:
        deadline = time.monotonic() + self.spec.timeout_s
        while True:
            nodes = sorted(self.transport.node_ids())
            if len(nodes) >= self.spec.organisations:
                return nodes
            if time.monotonic() > deadline:
                raise InvalidInput(f"only {len(nodes)} of {self.spec.organisations} organisations connected")
            time.sleep(0.5)

    def run(self) -> dict[str, Any]:
        nodes = self._wait_for_nodes()
        described = self.transport.exchange("query.describe", {n: {} for n in nodes})
        if not described:
            raise InvalidInput("no organisation answered")
        archs = {str(m["arch"]) for m in described.values()}
        if len(archs) != 1:
            raise InvalidInput("organisations disagree on the model's shape (different schemas?)")
        arch = json.loads(archs.pop())
        if arch["architecture"] == "synthetic":
            weights = np.zeros(int(arch["dimension"]))
        else:
            weights = engine.initial_vector(arch, self.spec.seed)
        self.strategy.setup(nodes)
        per_round = engine.expected_clients(self.spec, len(nodes))
        q = per_round / len(nodes)
        opened: AbstractContextManager[engine.Coordinator | None] = (
            self.coordinator() if self.coordinator is not None else nullcontext()
        )
        with opened as coordinator:
            for r in range(1, self.spec.rounds + 1):
                t0 = time.perf_counter()
                # node ids are 64-bit: sample positions, never the ids through numpy
                picks = self.rng.choice(len(nodes), size=per_round, replace=False)
                sampled = sorted(nodes[int(i)] for i in picks)
                collected = self.strategy.collect(r, sampled, weights)
                aggregate = self.strategy.aggregate(collected, per_round)
                weights = weights + aggregate
                eps = self.strategy.epsilon(r, q)
                if coordinator is not None:
                    self._record(coordinator, r, len(sampled), collected, q, eps, aggregate)
                accuracy, majority = (
                    self._evaluate(nodes, weights) if arch["architecture"] != "synthetic" else (None, None)
                )
                summary = engine.RoundSummary(
                    round=r,
                    seconds=round(time.perf_counter() - t0, 3),
                    survivors=len(collected.survivors),
                    dropped=len(collected.dropped),
                    accuracy=accuracy,
                    majority=majority,
                    epsilon=eps,
                )
                self.history.append(summary)
                if self.on_round is not None:
                    self.on_round(summary, self.spec.rounds)
        last = self.history[-1]
        return {
            "run_id": self.run_id,
            "arch": arch,
            "weights": weights,
            "history": self.history,
            "accuracy": last["accuracy"],
            "majority_accuracy": last["majority"],
            "warning": engine.below_majority(last["accuracy"], self.label_counts),
        }

    def _evaluate(self, nodes: list[int], weights: np.ndarray) -> tuple[float | None, float | None]:
        """(accuracy, majority-class accuracy) on the union of the organisations' held-out rows; the
        baseline from the label counts each organisation sends with its result, never recorded."""
        replies = self.transport.exchange("evaluate", {n: {"weights": _weights(weights)} for n in nodes})
        correct = sum(int(m["correct"]) for m in replies.values())
        total = sum(int(m["total"]) for m in replies.values())
        counts = [json.loads(str(m["counts"])) for m in replies.values() if "counts" in m]
        self.label_counts = np.zeros(0, dtype=np.int64)
        if counts and len({len(c) for c in counts}) == 1:
            self.label_counts = np.sum(np.asarray(counts, dtype=np.int64), axis=0)
        majority = engine.majority_accuracy(self.label_counts) if self.label_counts.size else None
        return (correct / total if total else None), majority

    def _record(
        self,
        coordinator: engine.Coordinator,
        r: int,
        sampled: int,
        collected: Collected,
        q: float,
        eps: float | None,
        aggregate: np.ndarray,
    ) -> None:
        spec = self.spec
        dp = spec.dp
        coordinator.record_federated_round(
            run_id=self.run_id,
            round=r,
            sampled=sampled,
            survivors=len(collected.survivors),
            dropped=len(collected.dropped),
            secure_aggregation=spec.secure_aggregation,
            dp=dp,
            noise_multiplier=spec.noise_multiplier if dp != "none" else None,
            clip_norm=spec.clip_norm,
            sample_rate=q,
            epsilon=eps,
            delta=spec.delta if dp != "none" else None,
            aggregate_digest=digest(_weights(aggregate)),
        )
