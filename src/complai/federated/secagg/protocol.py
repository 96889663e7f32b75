"""Secure aggregation: the server learns the sum of the clients' vectors and nothing else about any one
of them, even when clients drop out mid-round. A pure state machine (no I/O, no transport): flower.py
carries it. The design follows Bonawitz et al. (2017) double masking with the sparse neighbourhoods of
Bell et al. (2020), arranged so that a training round costs two message exchanges, not five.

Once per run (setup): each client sends two X25519 public keys, c (share transport) and s (masks),
signed with its Ed25519 identity key when the configuration enrols identities. Every round then has:

1. masked input (the exchange that carries the global model): each sampled client u draws a fresh
   self-mask seed b and returns
       y_u = q(x_u) + PRG(b) + sum over its round neighbours v of +-PRG(s_uv)   (mod 2^64)
   with q fixed-point quantisation, s_uv = HKDF(X25519(s_u, s_v), run, round, pair) (the lower id adds,
   the higher subtracts), PRG = AES-256-CTR keyed through HKDF, plus Shamir shares of b (threshold t,
   one per neighbour), each sealed with AES-GCM under a key agreed from the c keys and bound to the
   run, round, sender and recipient;
2. unmasking: the server names the survivors S (whose y arrived) and the dropped D; each survivor v
   opens the shares addressed to it and returns its shares of b_u for neighbours u in S and its own
   pair seeds s_vw for neighbours w in D, never both for one client, and nothing at all unless at
   least t of its neighbours survived. The server rebuilds each b_u from t shares and removes the
   self-masks of S and the masks S shared with D.

Why it holds: a dropped client's b is never revealed, so its y (should it arrive late) stays masked;
a survivor's pair masks with other survivors are never revealed, so its y stays masked by them. Even
a server that tells different clients different S and D learns, for any client w, either b_w's shares
(from neighbours told w survived) or pair seeds with w (from neighbours told w dropped), never
enough of both: the neighbours who reveal b-shares keep their pair seeds with w. Pair seeds are per
round, so nothing revealed carries over to later rounds and no client ever needs new keys.

Neighbourhoods: a random circulant (Harary) graph over the round's clients, k neighbours each, so a
client's work grows with k = O(log n); k = n - 1 (everyone) for small rounds. A round completes when
every survivor keeps at least t responding neighbours; otherwise it aborts with SecAggAbort saying how
short it fell (it never silently drops clients or skips the round).
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from complai.errors import ComplaiError, InvalidInput
from complai.federated.secagg.primitives import (
    Quantizer,
    TamperedMessage,
    agree,
    expand,
    open_sealed,
    recover_secret,
    seal,
    share_secret,
    x25519_keypair,
    x25519_private_bytes,
)


class SecAggAbort(ComplaiError):
    """The round cannot complete securely (too many dropouts, inconsistent server claims)."""

    exit_code = 1


def default_neighbours(n: int) -> int:
    """Everyone for up to 33 clients; beyond, an even k of about 6 log2 n (42 at 100, 60 at 1,000)."""
    if n <= 33:
        return n - 1
    k = 6 * math.ceil(math.log2(n))
    return min(n - 1, k + (k % 2))


# --- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """What holds for a whole run: its id, the quantisation bound, enrolled identities."""

    run_id: str
    bound: float
    identities: dict[int, bytes] = field(default_factory=dict)  # client -> Ed25519 public key (raw)

    def __post_init__(self) -> None:
        Quantizer(self.bound)

    def info(self, *parts: object) -> bytes:
        return "|".join(["complai-secagg-v2", self.run_id, *map(str, parts)]).encode()


@dataclass(frozen=True)
class Config:
    """One round: its number, the sampled clients, the vector size, the neighbourhood graph."""

    run: RunConfig
    round: int
    clients: tuple[int, ...]
    dimension: int
    neighbours: int
    threshold: int
    graph_seed: int

    @classmethod
    def create(
        cls,
        run: RunConfig,
        round_: int,
        clients: list[int],
        dimension: int,
        neighbours: int | None = None,
        threshold: int | None = None,
        graph_seed: int | None = None,
        max_dropout: float | None = None,
    ) -> Config:
        """`max_dropout`: the share of a client's neighbours that may drop while the round still
        completes; it sets the threshold t = max(k//2 + 1, k - ceil(max_dropout * k)) unless `threshold`
        is given (a higher t needs more colluders to rebuild a seed, tolerates fewer dropouts)."""
        ids = tuple(sorted(set(clients)))
        n = len(ids)
        if n < 2 or n != len(clients):
            raise InvalidInput("secure aggregation needs at least two distinct clients")
        if dimension < 1:
            raise InvalidInput("dimension must be positive")
        k = default_neighbours(n) if neighbours is None else neighbours
        if not 1 <= k <= n - 1:
            raise InvalidInput(f"neighbours must be between 1 and {n - 1}")
        if threshold is not None:
            t = threshold
        elif max_dropout is not None:
            if not 0 <= max_dropout < 0.5:
                raise InvalidInput("max_dropout must be in [0, 0.5)")
            t = max(k // 2 + 1, k - math.ceil(max_dropout * k))
        else:
            t = k // 2 + 1
        if not k // 2 + 1 <= t <= k:
            # t > k/2: the neighbours who reveal b-shares (at least t) and those who reveal pair seeds
            # can never together expose one client
            raise InvalidInput(f"threshold must be between {k // 2 + 1} and {k}")
        seed = int.from_bytes(os.urandom(8), "big") if graph_seed is None else graph_seed
        return cls(run, round_, ids, dimension, k, t, seed)

    def order(self) -> list[int]:
        """The clients around the circle the neighbourhood graph is drawn on (a seeded shuffle)."""
        order = list(self.clients)
        random.Random(self.graph_seed).shuffle(order)
        return order

    def graph(self) -> dict[int, list[int]]:
        """Each client's neighbours: a circulant graph on a seeded random order (k/2 each side; for an
        odd k, also the opposite node)."""
        order = self.order()
        n, k = len(order), self.neighbours
        pos = {c: i for i, c in enumerate(order)}
        out: dict[int, set[int]] = {c: set() for c in order}
        for c in order:
            i = pos[c]
            for d in range(1, k // 2 + 1):
                out[c].add(order[(i + d) % n])
                out[c].add(order[(i - d) % n])
            if k % 2:
                out[c].add(order[(i + n // 2) % n])
        return {c: sorted(v - {c}) for c, v in out.items()}

    def info(self, *parts: object) -> bytes:
        return self.run.info(self.round, *parts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run.run_id,
                "bound": self.run.bound,
                "round": self.round,
                "clients": list(self.clients),
                "dimension": self.dimension,
                "neighbours": self.neighbours,
                "threshold": self.threshold,
                "graph_seed": self.graph_seed,
            }
        )

    @classmethod
    def from_json(cls, text: str, identities: dict[int, bytes] | None = None) -> Config:
        b = json.loads(text)
        run = RunConfig(str(b["run_id"]), float(b["bound"]), dict(identities or {}))
        return cls(
            run,
            int(b["round"]),
            tuple(int(c) for c in b["clients"]),
            int(b["dimension"]),
            int(b["neighbours"]),
            int(b["threshold"]),
            int(b["graph_seed"]),
        )


# --- messages -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advertise:
    client: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class MaskedInput:
    client: int
    y: np.ndarray  # uint64 words
    sealed: dict[int, bytes]  # neighbour -> its sealed share of this client's self-mask seed


@dataclass(frozen=True)
class Reveal:
    client: int
    b_shares: dict[int, bytes]  # surviving neighbour -> this client's share of its self-mask seed
    pair_seeds: dict[int, bytes]  # dropped neighbour -> the pair seed this client shares with it


def _signed_bytes(run: RunConfig, client: int, c_pk: bytes, s_pk: bytes) -> bytes:
    return run.info("advertise", client) + b"|" + c_pk + s_pk


def verify_advertise(run: RunConfig, m: Advertise) -> None:
    if len(m.c_pk) != 32 or len(m.s_pk) != 32:
        raise TamperedMessage(f"client {m.client}: malformed public keys")
    if run.identities:
        key = run.identities.get(m.client)
        if key is None:
            raise TamperedMessage(f"client {m.client} is not an enrolled identity")
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(m.signature, _signed_bytes(run, m.client, m.c_pk, m.s_pk))
        except (InvalidSignature, ValueError):
            raise TamperedMessage(f"client {m.client}: advertised keys are not signed by its identity") from None


def _pair_seed(cfg: Config, s_sk: X25519PrivateKey, peer_s_pk: bytes, u: int, v: int) -> bytes:
    return agree(s_sk, peer_s_pk, cfg.info("pair", min(u, v), max(u, v)))


def _pair_mask(cfg: Config, seed: bytes, u: int, v: int) -> np.ndarray:
    return expand(seed, cfg.dimension, cfg.info("mask", min(u, v), max(u, v)))


# --- client -----------------------------------------------------------------------------------------


class Client:
    """One client across a run: long-term keys from setup, a fresh self-mask per round."""

    def __init__(
        self,
        run: RunConfig,
        client: int,
        identity: Ed25519PrivateKey | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """`random_bytes` is the source of the client's keys and self-mask seeds: the OS generator,
        replaceable only so that statistical tests can be reproduced."""
        self.run, self.id, self.identity = run, client, identity
        self._random = random_bytes
        self._c_sk, self._c_pk = x25519_keypair(random_bytes(32))
        self._s_sk, self._s_pk = x25519_keypair(random_bytes(32))
        self.roster: dict[int, Advertise] = {}
        self._advert: Advertise | None = None
        # per round: the round, our self-mask seed, and the rounds already answered
        self._b: dict[int, bytes] = {}
        self._revealed: set[int] = set()

    def advertise(self) -> Advertise:
        if self._advert is None:
            sig = b""
            if self.identity is not None:
                sig = self.identity.sign(_signed_bytes(self.run, self.id, self._c_pk, self._s_pk))
            self._advert = Advertise(self.id, self._c_pk, self._s_pk, sig)
        return self._advert

    def accept_roster(self, roster: dict[int, Advertise]) -> None:
        """The run's advertised keys (checked: own keys unchanged, signatures when identities are enrolled)."""
        for cid, m in roster.items():
            if m.client != cid:
                raise TamperedMessage(f"roster entry {cid} carries client {m.client}")
            verify_advertise(self.run, m)
        if roster.get(self.id) != self.advertise():
            raise TamperedMessage("the roster does not carry this client's own keys")
        self.roster = roster

    def _channel(self, cfg: Config, peer: int) -> bytes:
        return agree(self._c_sk, self.roster[peer].c_pk, cfg.info("seal", min(self.id, peer), max(self.id, peer)))

    def masked_input(self, cfg: Config, x: np.ndarray) -> MaskedInput:
        if cfg.run != self.run:
            raise TamperedMessage("round configuration for another run")
        if self.id not in cfg.clients:
            raise InvalidInput(f"client {self.id} is not in round {cfg.round}")
        if cfg.round in self._b:
            raise SecAggAbort(f"client {self.id} already sent its input for round {cfg.round}")
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size != cfg.dimension:
            raise InvalidInput(f"update has {x.size} values, the round expects {cfg.dimension}")
        neighbours = cfg.graph()[self.id]
        missing = [v for v in neighbours if v not in self.roster]
        if missing:
            raise TamperedMessage(f"round {cfg.round} names clients outside the run's roster: {missing[:3]}")
        b = self._random(16)  # a 128-bit seed: one Shamir polynomial over GF(2^128)
        self._b[cfg.round] = b
        shares = share_secret(b, cfg.threshold, len(neighbours))
        sealed = {}
        for i, v in enumerate(neighbours):
            body = struct.pack(">QQQ", cfg.round, self.id, v) + shares[i]
            sealed[v] = seal(self._channel(cfg, v), body, cfg.info("share", self.id, v))
        q, _ = Quantizer(self.run.bound).encode(x)
        y = q + expand(b, cfg.dimension, cfg.info("self", self.id))
        for v in neighbours:
            mask = _pair_mask(cfg, _pair_seed(cfg, self._s_sk, self.roster[v].s_pk, self.id, v), self.id, v)
            y = y + mask if self.id < v else y - mask
        return MaskedInput(self.id, y, sealed)

    def reveal(self, cfg: Config, survivors: list[int], dropped: list[int], inbox: dict[int, bytes]) -> Reveal:
        """Shares of b for surviving neighbours (from the sealed shares in `inbox`), pair seeds for dropped
        ones; refuses contradictions and a survivor set too small to keep this client's input hidden."""
        if cfg.round in self._revealed:
            raise SecAggAbort(f"client {self.id} already answered the unmasking of round {cfg.round}")
        if cfg.round not in self._b:
            raise SecAggAbort(f"client {self.id} sent no input in round {cfg.round}")
        s, d = set(survivors), set(dropped)
        if s & d:
            raise SecAggAbort("the server named clients both survived and dropped")
        if self.id not in s:
            raise SecAggAbort(f"client {self.id} is not listed among the survivors")
        neighbours = set(cfg.graph()[self.id])
        if not (s | d) >= neighbours or not (s | d) <= set(cfg.clients):
            raise SecAggAbort("the server's survivor and dropout lists do not cover the round")
        if len(s & neighbours) + 1 < cfg.threshold:
            # answering would help a server that hides survivors expose this client's input
            raise SecAggAbort(f"client {self.id}: only {len(s & neighbours)} neighbours survived, below the threshold")
        b_shares = {}
        for u, blob in inbox.items():
            if u not in neighbours or u not in s:
                raise TamperedMessage(f"client {self.id} was handed a share from {u}, not a surviving neighbour")
            body = open_sealed(self._channel(cfg, u), blob, cfg.info("share", u, self.id))
            if len(body) != 24 + 16 or struct.unpack(">QQQ", body[:24]) != (cfg.round, u, self.id):
                raise TamperedMessage(f"share from {u} is not addressed to this client for this round")
            b_shares[u] = body[24:]
        seeds = {w: _pair_seed(cfg, self._s_sk, self.roster[w].s_pk, self.id, w) for w in sorted(d & neighbours)}
        self._revealed.add(cfg.round)
        del self._b[cfg.round]
        return Reveal(self.id, b_shares, seeds)

    # --- state kept between messages (on the client's own side only) -------------------------------

    def export_state(self) -> bytes:
        body = {
            "id": self.id,
            "c": x25519_private_bytes(self._c_sk).hex(),
            "s": x25519_private_bytes(self._s_sk).hex(),
            "sig": self.advertise().signature.hex(),
            "roster": {str(k): encode_message(v).hex() for k, v in self.roster.items()},
            "b": {str(k): v.hex() for k, v in self._b.items()},
            "revealed": sorted(self._revealed),
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_state(cls, run: RunConfig, data: bytes, identity: Ed25519PrivateKey | None = None) -> Client:
        body = json.loads(data)
        keys = iter([bytes.fromhex(body["c"]), bytes.fromhex(body["s"])])
        client = cls(run, int(body["id"]), identity, random_bytes=lambda n: next(keys) if n == 32 else os.urandom(n))
        client._random = os.urandom
        client._advert = Advertise(client.id, client._c_pk, client._s_pk, bytes.fromhex(body["sig"]))
        client.roster = {int(k): decode_advertise(bytes.fromhex(v)) for k, v in body["roster"].items()}
        client._b = {int(k): bytes.fromhex(v) for k, v in body["b"].items()}
        client._revealed = set(body["revealed"])
        return client


# --- server -----------------------------------------------------------------------------------------


@dataclass
class Result:
    total: np.ndarray  # float64 sum of the survivors' (clipped) vectors
    survivors: list[int]
    dropped: list[int]
    error_bound: float


class RunServer:
    """The server's side of setup: collect and check the advertised keys."""

    def __init__(self, run: RunConfig) -> None:
        self.run = run
        self.roster: dict[int, Advertise] = {}

    def collect(self, msgs: list[Advertise]) -> dict[int, Advertise]:
        for m in msgs:
            verify_advertise(self.run, m)
            if m.client in self.roster:
                raise TamperedMessage(f"client {m.client} advertised twice")
            self.roster[m.client] = m
        if len(self.roster) < 2:
            raise SecAggAbort(f"run {self.run.run_id}: fewer than two clients advertised keys")
        return dict(self.roster)


class Server:
    """The server's side of one round."""

    def __init__(self, cfg: Config, roster: dict[int, Advertise]) -> None:
        missing = [c for c in cfg.clients if c not in roster]
        if missing:
            raise InvalidInput(f"round {cfg.round} samples clients without keys: {missing[:3]}")
        self.cfg, self.roster = cfg, roster
        self.graph = cfg.graph()
        self.masked: dict[int, MaskedInput] = {}

    def collect_masked(self, msgs: list[MaskedInput]) -> tuple[list[int], list[int], dict[int, dict[int, bytes]]]:
        """(survivors, dropped, per survivor the sealed shares addressed to it by other survivors)."""
        for m in msgs:
            if m.client not in self.graph or m.client in self.masked:
                raise TamperedMessage(f"unexpected masked input from {m.client}")
            if m.y.dtype != np.uint64 or m.y.shape != (self.cfg.dimension,):
                raise TamperedMessage(f"masked input from {m.client} has the wrong shape or type")
            if set(m.sealed) != set(self.graph[m.client]):
                raise TamperedMessage(f"client {m.client} sealed shares to the wrong clients")
            self.masked[m.client] = m
        survivors = sorted(self.masked)
        if len(survivors) < max(2, self.cfg.threshold):
            raise SecAggAbort(
                f"round {self.cfg.round} aborted: only {len(survivors)} clients sent masked inputs, "
                f"fewer than the threshold {self.cfg.threshold}"
            )
        dropped = [c for c in self.cfg.clients if c not in self.masked]
        inbox: dict[int, dict[int, bytes]] = {v: {} for v in survivors}
        for u in survivors:
            for v, blob in self.masked[u].sealed.items():
                if v in self.masked:
                    inbox[v][u] = blob
        return survivors, dropped, inbox

    def finish(self, reveals: list[Reveal]) -> Result:
        cfg, t = self.cfg, self.cfg.threshold
        survivors = sorted(self.masked)
        dropped = [c for c in cfg.clients if c not in self.masked]
        b_shares: dict[int, dict[int, bytes]] = {}
        total = np.zeros(cfg.dimension, dtype=np.uint64)
        for c in survivors:
            total += self.masked[c].y
        for r in reveals:
            if r.client not in self.masked:
                raise TamperedMessage(f"unmasking answer from {r.client}, which sent no masked input")
            for owner, share in r.b_shares.items():
                b_shares.setdefault(owner, {})[self.graph[owner].index(r.client)] = share
            for w, seed in r.pair_seeds.items():
                if w in self.masked or w not in self.graph[r.client]:
                    raise TamperedMessage(f"client {r.client} revealed a pair seed with {w}, not a dropped neighbour")
                mask = _pair_mask(cfg, seed, r.client, w)
                # r.client added +mask if its id is the lower one, -mask otherwise: undo it
                total = total - mask if r.client < w else total + mask
        answered = {r.client for r in reveals}
        for u in survivors:
            # every survivor's masks with dropped neighbours must have been undone by u itself
            if any(w not in self.masked for w in self.graph[u]) and u not in answered:
                raise SecAggAbort(
                    f"round {cfg.round} aborted: survivor {u} did not answer the unmasking and had dropped "
                    "neighbours (too many dropouts)"
                )
            have = b_shares.get(u, {})
            if len(have) < t:
                raise SecAggAbort(
                    f"round {cfg.round} aborted: client {u}'s self-mask has {len(have)} of the {t} shares "
                    "needed (too many dropouts)"
                )
            total -= expand(recover_secret(have, t), cfg.dimension, cfg.info("self", u))
        q = Quantizer(cfg.run.bound)
        return Result(q.decode(total, len(survivors)), survivors, dropped, q.error_bound(len(survivors)))


def run_round(
    cfg: Config,
    clients: dict[int, Client],
    roster: dict[int, Advertise],
    updates: dict[int, np.ndarray],
    drop: dict[str, set[int]] | None = None,
) -> Result:
    """One round in one process (tests, benchmarks); `drop` names the clients that vanish before the
    masked-input stage ("masked") or before answering the unmasking ("reveal")."""
    drop = drop or {}
    server = Server(cfg, roster)
    sending = [c for c in cfg.clients if c not in drop.get("masked", set())]
    survivors, dropped, inbox = server.collect_masked([clients[c].masked_input(cfg, updates[c]) for c in sending])
    answering = [c for c in survivors if c not in drop.get("reveal", set())]
    return server.finish([clients[c].reveal(cfg, survivors, dropped, inbox[c]) for c in answering])


def setup(
    run: RunConfig,
    ids: list[int],
    identities: dict[int, Ed25519PrivateKey] | None = None,
    drop: set[int] | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> tuple[dict[int, Client], dict[int, Advertise]]:
    """The run's setup in one process: clients created, keys advertised and distributed."""
    clients = {c: Client(run, c, (identities or {}).get(c), random_bytes) for c in ids}
    server = RunServer(run)
    roster = server.collect([clients[c].advertise() for c in ids if c not in (drop or set())])
    for c in roster:
        clients[c].accept_roster(roster)
    return {c: clients[c] for c in roster}, roster


# --- wire format ------------------------------------------------------------------------------------


def encode_message(m: Advertise | MaskedInput | Reveal) -> bytes:
    """Bytes for transport: JSON with hex fields; a masked vector as little-endian words after it."""
    if isinstance(m, MaskedInput):
        head = json.dumps({"c": m.client, "s": {str(k): v.hex() for k, v in m.sealed.items()}}).encode()
        return b"M" + struct.pack(">I", len(head)) + head + m.y.astype("<u8").tobytes()
    if isinstance(m, Advertise):
        body = {"t": "A", "c": m.client, "cp": m.c_pk.hex(), "sp": m.s_pk.hex(), "sig": m.signature.hex()}
    else:
        body = {
            "t": "R",
            "c": m.client,
            "b": {str(k): v.hex() for k, v in m.b_shares.items()},
            "p": {str(k): v.hex() for k, v in m.pair_seeds.items()},
        }
    return b"J" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_message(data: bytes) -> Advertise | MaskedInput | Reveal:
    try:
        if data[:1] == b"M":
            (n,) = struct.unpack(">I", data[1:5])
            head = json.loads(data[5 : 5 + n])
            y = np.frombuffer(data[5 + n :], dtype="<u8").astype(np.uint64)
            return MaskedInput(int(head["c"]), y, {int(k): bytes.fromhex(v) for k, v in head["s"].items()})
        if data[:1] != b"J":
            raise ValueError("unknown message tag")
        body = json.loads(data[1:])
        if body["t"] == "A":
            return Advertise(
                int(body["c"]), bytes.fromhex(body["cp"]), bytes.fromhex(body["sp"]), bytes.fromhex(body["sig"])
            )
        if body["t"] == "R":
            return Reveal(
                int(body["c"]),
                {int(k): bytes.fromhex(v) for k, v in body["b"].items()},
                {int(k): bytes.fromhex(v) for k, v in body["p"].items()},
            )
        raise ValueError("unknown message type")
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise TamperedMessage(f"malformed protocol message ({type(exc).__name__})") from None


def decode_masked(data: bytes) -> MaskedInput:
    """A masked input from transport; any other message is refused as tampering."""
    m = decode_message(data)
    if not isinstance(m, MaskedInput):
        raise TamperedMessage("expected a masked input")
    return m


def decode_reveal(data: bytes) -> Reveal:
    """An unmasking answer from transport; any other message is refused as tampering."""
    m = decode_message(data)
    if not isinstance(m, Reveal):
        raise TamperedMessage("expected an unmasking answer")
    return m


def decode_advertise(data: bytes) -> Advertise:
    """Advertised keys from transport or a roster; any other message is refused as tampering."""
    m = decode_message(data)
    if not isinstance(m, Advertise):
        raise TamperedMessage("the roster carries something other than advertised keys")
    return m


def decode_roster(text: str) -> dict[int, Advertise]:
    """The run's key roster as the server sends it (JSON: client id -> hex-encoded advertisement)."""
    return {int(k): decode_advertise(bytes.fromhex(v)) for k, v in json.loads(text).items()}
