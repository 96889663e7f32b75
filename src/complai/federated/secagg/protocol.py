"""Secure aggregation (Bonawitz et al. 2017, with the sparse neighbourhoods of Bell et al. 2020): the
server learns the sum of the clients' vectors and nothing else about any one of them, even when
clients drop out mid-round. A pure state machine: no I/O, no transport; `flower.py` carries it.

One round, four stages:

1. advertise: each client sends two X25519 public keys (c for share transport, s for masks), signed
   with its Ed25519 identity key when the configuration lists identities;
2. share: each client draws a self-mask seed b, Shamir-shares b and its s private key among its k
   neighbours (threshold t), and seals each neighbour's pair of shares under a key agreed from the c
   keys (AES-GCM, bound to round, sender and recipient);
3. masked input: each client sends y = q(x) + PRG(b) + sum over neighbours v that shared of
   +-PRG(s_uv) mod 2^64, where q is fixed-point quantisation and s_uv the pair's agreed seed (the
   lower id adds, the higher subtracts), PRG = AES-256-CTR keyed through HKDF;
4. unmask: given who sent masked inputs (S) and who shared but did not (D), each surviving client
   reveals its shares of b for neighbours in S and of the s key for neighbours in D, never both for
   one client; the server rebuilds those secrets from t shares each, removes the self-masks of S and
   the pair masks that S's members shared with D, and decodes the sum.

Neighbourhoods: a random circulant (Harary) graph over the clients, k neighbours each, so a client's
work grows with k = O(log n), not n; k = n - 1 (everyone) for small rounds. A round tolerates any
dropouts that leave every client with at least t responding neighbours; otherwise it aborts with
SecAggAbort naming how short it fell (it never silently drops clients' data or skips the round).
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
    """The round cannot complete securely (too many dropouts, tampering, inconsistent server claims)."""

    exit_code = 1


# --- configuration and the neighbourhood graph ------------------------------------------------------


def default_neighbours(n: int) -> int:
    """Everyone for up to 32 clients; beyond, an even k of about 6 log2 n (42 at 100, 60 at 1,000)."""
    if n <= 33:
        return n - 1
    k = 6 * math.ceil(math.log2(n))
    return min(n - 1, k + (k % 2))


@dataclass(frozen=True)
class Config:
    round_id: str
    clients: tuple[int, ...]
    dimension: int
    bound: float
    neighbours: int
    threshold: int
    graph_seed: int
    identities: dict[int, bytes] = field(default_factory=dict)  # client -> Ed25519 public key (raw)

    @classmethod
    def create(
        cls,
        round_id: str,
        clients: list[int],
        dimension: int,
        bound: float,
        neighbours: int | None = None,
        threshold: int | None = None,
        graph_seed: int | None = None,
        identities: dict[int, bytes] | None = None,
    ) -> Config:
        ids = tuple(sorted(set(clients)))
        n = len(ids)
        if n < 2 or n != len(clients):
            raise InvalidInput("secure aggregation needs at least two distinct clients")
        if dimension < 1:
            raise InvalidInput("dimension must be positive")
        k = default_neighbours(n) if neighbours is None else neighbours
        if not 1 <= k <= n - 1:
            raise InvalidInput(f"neighbours must be between 1 and {n - 1}")
        t = k // 2 + 1 if threshold is None else threshold
        if not k // 2 + 1 <= t <= k:
            # t > k/2: the server can never hold t shares of both a client's b and its s key
            raise InvalidInput(f"threshold must be between {k // 2 + 1} and {k}")
        Quantizer(bound)
        seed = int.from_bytes(os.urandom(8), "big") if graph_seed is None else graph_seed
        return cls(round_id, ids, dimension, float(bound), k, t, seed, dict(identities or {}))

    def order(self) -> list[int]:
        """The clients around the circle the neighbourhood graph is drawn on (a seeded shuffle)."""
        order = list(self.clients)
        random.Random(self.graph_seed).shuffle(order)
        return order

    def graph(self) -> dict[int, list[int]]:
        """Each client's neighbours: a circulant graph on a seeded random order (k/2 each side;
        k odd adds the opposite node when n is even)."""
        order = self.order()
        n, k = len(order), self.neighbours
        pos = {c: i for i, c in enumerate(order)}
        out: dict[int, set[int]] = {c: set() for c in order}
        for c in order:
            i = pos[c]
            for d in range(1, k // 2 + 1):
                for j in ((i + d) % n, (i - d) % n):
                    out[c].add(order[j])
            if k % 2:
                out[c].add(order[(i + n // 2) % n])
        return {c: sorted(v - {c}) for c, v in out.items()}

    def quantizer(self) -> Quantizer:
        return Quantizer(self.bound)

    def info(self, *parts: object) -> bytes:
        return "|".join(["complai-secagg-v1", self.round_id, *map(str, parts)]).encode()


# --- messages -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advertise:
    client: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class Shares:
    client: int
    sealed: dict[int, bytes]  # recipient -> AES-GCM blob


@dataclass(frozen=True)
class MaskedInput:
    client: int
    y: np.ndarray  # uint64 words


@dataclass(frozen=True)
class Reveal:
    client: int
    b_shares: dict[int, bytes]  # owner -> share of owner's self-mask seed
    s_shares: dict[int, bytes]  # owner -> share of owner's s private key


def _signed_bytes(cfg: Config, client: int, c_pk: bytes, s_pk: bytes) -> bytes:
    return cfg.info("advertise", client) + b"|" + c_pk + s_pk


def _verify_advertise(cfg: Config, m: Advertise) -> None:
    if len(m.c_pk) != 32 or len(m.s_pk) != 32:
        raise TamperedMessage(f"client {m.client}: malformed public keys")
    if cfg.identities:
        key = cfg.identities.get(m.client)
        if key is None:
            raise TamperedMessage(f"client {m.client} is not an enrolled identity")
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(m.signature, _signed_bytes(cfg, m.client, m.c_pk, m.s_pk))
        except (InvalidSignature, ValueError):
            raise TamperedMessage(f"client {m.client}: advertised keys are not signed by its identity") from None


# --- client -----------------------------------------------------------------------------------------


class Client:
    def __init__(
        self,
        cfg: Config,
        client: int,
        identity: Ed25519PrivateKey | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """`random_bytes` is the source of the client's keys and self-mask seed: the OS generator,
        replaceable only so that statistical tests can be reproduced."""
        if client not in cfg.clients:
            raise InvalidInput(f"client {client} is not in this round")
        self.cfg, self.id = cfg, client
        self.identity = identity
        self.neighbours = cfg.graph()[client]
        self._c_sk, self._c_pk = x25519_keypair(random_bytes(32))
        self._s_sk, self._s_pk = x25519_keypair(random_bytes(32))
        self._b = random_bytes(32)
        self.roster: dict[int, Advertise] = {}
        self.held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (share of s key, share of b)
        self.shared_with: list[int] = []
        self.revealed = False
        self._advert: Advertise | None = None

    # stage 1
    def advertise(self) -> Advertise:
        if self._advert is None:
            sig = b""
            if self.identity is not None:
                sig = self.identity.sign(_signed_bytes(self.cfg, self.id, self._c_pk, self._s_pk))
            self._advert = Advertise(self.id, self._c_pk, self._s_pk, sig)
        return self._advert

    # stage 2
    def share(self, roster: dict[int, Advertise]) -> Shares:
        """Seal shares of (s key, b) to each neighbour that advertised; needs at least t of them."""
        for cid, m in roster.items():
            if m.client != cid:
                raise TamperedMessage(f"roster entry {cid} carries client {m.client}")
            _verify_advertise(self.cfg, m)
        if roster.get(self.id) != self.advertise():
            raise TamperedMessage("the roster does not carry this client's own keys")
        live = [v for v in self.neighbours if v in roster]
        if len(live) + 1 < self.cfg.threshold:
            raise SecAggAbort(f"client {self.id}: only {len(live)} neighbours advertised keys")
        self.roster = roster
        holders = self.neighbours  # share index = position in the full neighbour list
        s_shares = share_secret(x25519_private_bytes(self._s_sk), self.cfg.threshold, len(holders))
        b_shares = share_secret(self._b, self.cfg.threshold, len(holders))
        sealed = {}
        for i, v in enumerate(holders):
            if v not in roster:
                continue
            key = agree(self._c_sk, roster[v].c_pk, self.cfg.info("seal", min(self.id, v), max(self.id, v)))
            body = struct.pack(">QQ", self.id, v) + s_shares[i] + b_shares[i]
            sealed[v] = seal(key, body, self.cfg.info("share", self.id, v))
        return Shares(self.id, sealed)

    # stage 3
    def masked_input(self, x: np.ndarray, inbox: dict[int, bytes]) -> MaskedInput:
        """Open the shares neighbours sealed to this client (any tampering aborts), then mask."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size != self.cfg.dimension:
            raise InvalidInput(f"update has {x.size} values, the round expects {self.cfg.dimension}")
        for u, blob in inbox.items():
            if u not in self.neighbours or u not in self.roster:
                raise TamperedMessage(f"client {self.id} received a share from non-neighbour {u}")
            key = agree(self._c_sk, self.roster[u].c_pk, self.cfg.info("seal", min(self.id, u), max(self.id, u)))
            body = open_sealed(key, blob, self.cfg.info("share", u, self.id))
            if len(body) != 16 + 64:
                raise TamperedMessage(f"share from {u} has the wrong length")
            src, dst = struct.unpack(">QQ", body[:16])
            if (src, dst) != (u, self.id):
                raise TamperedMessage(f"share from {u} is addressed to {src}->{dst}")
            self.held[u] = (body[16:48], body[48:80])
        self.shared_with = sorted(self.held)
        q, _ = self.cfg.quantizer().encode(x)
        y = q + expand(self._b, x.size, self.cfg.info("self", self.id))
        for v in self.shared_with:
            mask = expand(
                agree(self._s_sk, self.roster[v].s_pk, self.cfg.info("pair", min(self.id, v), max(self.id, v))),
                x.size,
                self.cfg.info("mask", min(self.id, v), max(self.id, v)),
            )
            y = y + mask if self.id < v else y - mask
        return MaskedInput(self.id, y)

    # --- state between stages (a transport may keep a client's state outside the process) ---------

    def export_state(self) -> bytes:
        """The client's private state between stages (keys, seed, roster, shares held), for storage
        on the client's own side only (Flower's per-node context state)."""
        body = {
            "id": self.id,
            "c": x25519_private_bytes(self._c_sk).hex(),
            "s": x25519_private_bytes(self._s_sk).hex(),
            "b": self._b.hex(),
            "roster": {str(k): encode_message(v).hex() for k, v in self.roster.items()},
            "held": {str(k): [a.hex(), b.hex()] for k, (a, b) in self.held.items()},
            "revealed": self.revealed,
            "sig": self.advertise().signature.hex(),
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_state(cls, cfg: Config, data: bytes) -> Client:
        body = json.loads(data)
        keys = iter([bytes.fromhex(body["c"]), bytes.fromhex(body["s"]), bytes.fromhex(body["b"])])
        client = cls(cfg, int(body["id"]), random_bytes=lambda n: next(keys))
        client.roster = {int(k): decode_message(bytes.fromhex(v)) for k, v in body["roster"].items()}  # type: ignore[misc]
        client.held = {int(k): (bytes.fromhex(a), bytes.fromhex(b)) for k, (a, b) in body["held"].items()}
        client.shared_with = sorted(client.held)
        client.revealed = bool(body["revealed"])
        client._advert = Advertise(client.id, client._c_pk, client._s_pk, bytes.fromhex(body["sig"]))
        return client

    # stage 4
    def reveal(self, survivors: list[int], dropped: list[int]) -> Reveal:
        """Shares of b for surviving neighbours, of the s key for dropped ones; refuses contradictions."""
        if self.revealed:
            raise SecAggAbort(f"client {self.id} already answered the unmasking request")
        s, d = set(survivors), set(dropped)
        if s & d:
            raise SecAggAbort("the server named clients both survived and dropped")
        if self.id not in s:
            raise SecAggAbort(f"client {self.id} is not listed among the survivors")
        known = set(self.held)
        mine_s = s & known
        if len(mine_s) + 1 < self.cfg.threshold:
            # answering would let a server that hides survivors unmask an individual input
            raise SecAggAbort(f"client {self.id}: only {len(mine_s)} neighbours survived, fewer than the threshold")
        self.revealed = True
        return Reveal(
            self.id,
            b_shares={u: self.held[u][1] for u in sorted(mine_s)},
            s_shares={u: self.held[u][0] for u in sorted(d & known)},
        )


# --- server -----------------------------------------------------------------------------------------


@dataclass
class Result:
    total: np.ndarray  # float64 sum of the survivors' (clipped) vectors
    survivors: list[int]
    dropped: list[int]
    error_bound: float


class Server:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.graph = cfg.graph()
        self.roster: dict[int, Advertise] = {}
        self.u2: list[int] = []
        self.masked: dict[int, np.ndarray] = {}

    def collect_advertise(self, msgs: list[Advertise]) -> dict[int, dict[int, Advertise]]:
        """Per client, the advertisements of itself and its neighbours (what it needs to share)."""
        for m in msgs:
            _verify_advertise(self.cfg, m)
            if m.client not in self.graph or m.client in self.roster:
                raise TamperedMessage(f"unexpected advertisement from {m.client}")
            self.roster[m.client] = m
        self._need(len(self.roster), "advertised keys")
        return {c: {v: self.roster[v] for v in [c, *self.graph[c]] if v in self.roster} for c in sorted(self.roster)}

    def collect_shares(self, msgs: list[Shares]) -> dict[int, dict[int, bytes]]:
        """Route each sealed share to its recipient."""
        inbox: dict[int, dict[int, bytes]] = {}
        for m in msgs:
            if m.client not in self.roster:
                raise TamperedMessage(f"shares from {m.client}, which did not advertise")
            for v, blob in m.sealed.items():
                if v not in self.graph[m.client]:
                    raise TamperedMessage(f"client {m.client} addressed a share to non-neighbour {v}")
                inbox.setdefault(v, {})[m.client] = blob
            self.u2.append(m.client)
        self.u2.sort()
        self._need(len(self.u2), "shared their keys")
        return {c: inbox.get(c, {}) for c in self.u2}

    def collect_masked(self, msgs: list[MaskedInput]) -> tuple[list[int], list[int]]:
        """Who survived (sent a masked input) and who dropped after sharing."""
        for m in msgs:
            if m.client not in self.u2 or m.client in self.masked:
                raise TamperedMessage(f"unexpected masked input from {m.client}")
            if m.y.dtype != np.uint64 or m.y.shape != (self.cfg.dimension,):
                raise TamperedMessage(f"masked input from {m.client} has the wrong shape or type")
            self.masked[m.client] = m.y
        survivors = sorted(self.masked)
        self._need(len(survivors), "sent masked inputs")
        return survivors, [c for c in self.u2 if c not in self.masked]

    def finish(self, reveals: list[Reveal]) -> Result:
        survivors = sorted(self.masked)
        dropped = [c for c in self.u2 if c not in self.masked]
        b_shares: dict[int, dict[int, bytes]] = {}
        s_shares: dict[int, dict[int, bytes]] = {}
        for r in reveals:
            if r.client not in self.masked:
                raise TamperedMessage(f"unmasking answer from {r.client}, which sent no masked input")
            for owner, share in r.b_shares.items():
                b_shares.setdefault(owner, {})[self.graph[owner].index(r.client)] = share
            for owner, share in r.s_shares.items():
                s_shares.setdefault(owner, {})[self.graph[owner].index(r.client)] = share
        t, dim = self.cfg.threshold, self.cfg.dimension
        total = np.zeros(dim, dtype=np.uint64)
        for c in survivors:
            total += self.masked[c]
        for u in survivors:
            have = b_shares.get(u, {})
            if len(have) < t:
                raise SecAggAbort(
                    f"round {self.cfg.round_id} aborted: client {u}'s self-mask has {len(have)} of the {t} shares "
                    "needed (too many dropouts)"
                )
            total -= expand(recover_secret(have, t), dim, self.cfg.info("self", u))
        for u in dropped:
            have = s_shares.get(u, {})
            if len(have) < t:
                raise SecAggAbort(
                    f"round {self.cfg.round_id} aborted: dropped client {u}'s mask key has {len(have)} of the {t} "
                    "shares needed (too many dropouts)"
                )
            s_key = recover_secret(have, t)
            for v in self.graph[u]:
                if v not in self.masked:
                    continue  # only survivors' inputs carry masks shared with u
                mask = expand(
                    agree(s_key, self.roster[v].s_pk, self.cfg.info("pair", min(u, v), max(u, v))),
                    dim,
                    self.cfg.info("mask", min(u, v), max(u, v)),
                )
                # v added +mask if v < u, -mask otherwise: undo it
                total = total - mask if v < u else total + mask
        q = self.cfg.quantizer()
        return Result(q.decode(total, len(survivors)), survivors, dropped, q.error_bound(len(survivors)))

    def _need(self, have: int, what: str) -> None:
        if have < max(2, self.cfg.threshold):
            raise SecAggAbort(
                f"round {self.cfg.round_id} aborted: only {have} clients {what}, "
                f"fewer than the threshold {self.cfg.threshold}"
            )


def run_round(
    cfg: Config,
    updates: dict[int, np.ndarray],
    drop: dict[str, set[int]] | None = None,
    identities: dict[int, Ed25519PrivateKey] | None = None,
) -> Result:
    """The whole protocol in one process (tests, simulation, benchmarks); `drop` names the clients
    that vanish before each stage: advertise, share, masked, reveal."""
    drop = drop or {}
    gone: set[int] = set()
    clients = {c: Client(cfg, c, (identities or {}).get(c)) for c in cfg.clients}
    server = Server(cfg)
    gone |= drop.get("advertise", set())
    rosters = server.collect_advertise([clients[c].advertise() for c in cfg.clients if c not in gone])
    gone |= drop.get("share", set())
    inbox = server.collect_shares([clients[c].share(rosters[c]) for c in rosters if c not in gone])
    gone |= drop.get("masked", set())
    survivors, dropped = server.collect_masked(
        [clients[c].masked_input(updates[c], inbox[c]) for c in inbox if c not in gone]
    )
    gone |= drop.get("reveal", set())
    return server.finish([clients[c].reveal(survivors, dropped) for c in survivors if c not in gone])


def encode_message(m: Advertise | Shares | MaskedInput | Reveal) -> bytes:
    """Canonical bytes for transport (JSON with hex; the masked vector as little-endian words)."""
    if isinstance(m, MaskedInput):
        return b"M" + struct.pack(">Q", m.client) + m.y.astype("<u8").tobytes()
    if isinstance(m, Advertise):
        body = {"t": "A", "c": m.client, "cp": m.c_pk.hex(), "sp": m.s_pk.hex(), "sig": m.signature.hex()}
    elif isinstance(m, Shares):
        body = {"t": "S", "c": m.client, "s": {str(k): v.hex() for k, v in m.sealed.items()}}
    else:
        body = {
            "t": "R",
            "c": m.client,
            "b": {str(k): v.hex() for k, v in m.b_shares.items()},
            "s": {str(k): v.hex() for k, v in m.s_shares.items()},
        }
    return b"J" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_message(data: bytes) -> Advertise | Shares | MaskedInput | Reveal:
    try:
        if data[:1] == b"M":
            (client,) = struct.unpack(">Q", data[1:9])
            return MaskedInput(client, np.frombuffer(data[9:], dtype="<u8").astype(np.uint64))
        if data[:1] != b"J":
            raise ValueError("unknown message tag")
        body = json.loads(data[1:])
        if body["t"] == "A":
            return Advertise(
                int(body["c"]), bytes.fromhex(body["cp"]), bytes.fromhex(body["sp"]), bytes.fromhex(body["sig"])
            )
        if body["t"] == "S":
            return Shares(int(body["c"]), {int(k): bytes.fromhex(v) for k, v in body["s"].items()})
        if body["t"] == "R":
            return Reveal(
                int(body["c"]),
                {int(k): bytes.fromhex(v) for k, v in body["b"].items()},
                {int(k): bytes.fromhex(v) for k, v in body["s"].items()},
            )
        raise ValueError("unknown message type")
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise TamperedMessage(f"malformed protocol message ({type(exc).__name__})") from None
