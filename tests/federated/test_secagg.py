"""Secure aggregation as a pure protocol: exact sums under dropouts at every stage, clear aborts,
rejected tampering, and a server view of each client that does not depend on its update."""

from __future__ import annotations

import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from complai.errors import InvalidInput
from complai.federated.secagg.primitives import Quantizer, TamperedMessage, recover_secret, share_secret
from complai.federated.secagg.protocol import (
    Client,
    Config,
    MaskedInput,
    SecAggAbort,
    Server,
    decode_message,
    encode_message,
    run_round,
)

STAGES = ["advertise", "share", "masked", "reveal"]


def _updates(cfg: Config, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-cfg.bound, cfg.bound, cfg.dimension) for c in cfg.clients}


def _check(result, updates) -> None:
    expected = sum(updates[c] for c in result.survivors)
    assert np.abs(result.total - expected).max() <= result.error_bound


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("dropped", [0, 1, 3])
def test_sum_survives_dropouts_at_every_stage(stage: str, dropped: int) -> None:
    cfg = Config.create("r", list(range(1, 10)), 257, bound=2.0)  # 9 clients, everyone a neighbour
    ups = _updates(cfg)
    gone = set(random.Random(dropped).sample(list(cfg.clients), dropped))
    result = run_round(cfg, ups, {stage: gone})
    _check(result, ups)
    if stage == "reveal":  # they sent their masked inputs: their updates are in the sum
        assert result.survivors == list(cfg.clients)
    else:
        assert set(result.survivors) == set(cfg.clients) - gone


@pytest.mark.parametrize("stage", STAGES)
def test_sparse_neighbourhoods_with_a_third_dropping(stage: str) -> None:
    cfg = Config.create("r", list(range(100, 130)), 64, bound=1.0, neighbours=12, threshold=7, graph_seed=3)
    graph = cfg.graph()
    assert all(len(v) == 12 for v in graph.values())
    assert all(u in graph[v] for u in graph for v in graph[u])  # symmetric
    ups = _updates(cfg, 1)
    # every third client in the graph's own order: each keeps 8 of its 12 neighbours
    gone = set(cfg.order()[::3])
    _check(run_round(cfg, ups, {stage: gone}), ups)


def test_too_many_dropouts_abort_with_a_clear_error() -> None:
    cfg = Config.create("r7", list(range(1, 10)), 8, bound=1.0)
    with pytest.raises(SecAggAbort, match=r"round r7 aborted: only 4 clients sent masked inputs"):
        run_round(cfg, _updates(cfg), {"masked": {1, 2, 3, 4, 5}})
    with pytest.raises(SecAggAbort, match=r"of the 5 shares needed \(too many dropouts\)"):
        run_round(cfg, _updates(cfg), {"masked": {1, 2, 3}, "reveal": {4, 5}})


def test_tampered_messages_are_rejected() -> None:
    cfg = Config.create("r", [1, 2, 3, 4], 16, bound=1.0)
    clients = {c: Client(cfg, c) for c in cfg.clients}
    server = Server(cfg)
    rosters = server.collect_advertise([c.advertise() for c in clients.values()])
    inbox = server.collect_shares([clients[c].share(rosters[c]) for c in rosters])
    blob = bytearray(inbox[2][1])
    blob[-1] ^= 1
    with pytest.raises(TamperedMessage, match="failed authentication"):
        clients[2].masked_input(np.zeros(16), {**inbox[2], 1: bytes(blob)})
    # a share replayed to the wrong recipient fails too (the key and the binding differ)
    with pytest.raises(TamperedMessage):
        clients[3].masked_input(np.zeros(16), {**inbox[3], 1: inbox[2][1]})
    with pytest.raises(TamperedMessage, match="malformed"):
        decode_message(b"J{not json")
    # the server may not call a client both survived and dropped
    masked = [clients[c].masked_input(np.zeros(16), inbox[c]) for c in (1, 2, 4)]
    survivors, dropped = server.collect_masked(masked)
    with pytest.raises(SecAggAbort, match="both survived and dropped"):
        clients[1].reveal(survivors, [*dropped, 2])


def test_signed_keys_stop_a_server_substituting_them() -> None:
    ids = {c: Ed25519PrivateKey.generate() for c in (1, 2, 3)}
    pub = {c: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for c, k in ids.items()}
    cfg = Config.create("r", [1, 2, 3], 4, bound=1.0, identities=pub)
    ups = _updates(cfg)
    _check(run_round(cfg, ups, identities=ids), ups)
    clients = {c: Client(cfg, c, ids[c]) for c in cfg.clients}
    server = Server(cfg)
    rosters = server.collect_advertise([c.advertise() for c in clients.values()])
    impostor = Client(cfg, 2)  # the server's own keys, unsigned by client 2's identity
    forged = {**rosters[1], 2: impostor.advertise()}
    with pytest.raises(TamperedMessage, match="not signed by its identity"):
        clients[1].share(forged)


def test_server_view_of_a_client_does_not_depend_on_its_update() -> None:
    """Client 1's masked input, over 400 rounds with update 0 and 400 with update +bound everywhere:
    the top byte of each word is uniform either way (chi-square) and the two samples agree."""
    rng = random.Random(2024)

    def view(x: float) -> np.ndarray:
        tops = []
        for i in range(400):
            cfg = Config.create(f"r{i}", [1, 2, 3], 32, bound=1.0, graph_seed=i)
            clients = {c: Client(cfg, c, random_bytes=rng.randbytes) for c in cfg.clients}
            server = Server(cfg)
            rosters = server.collect_advertise([c.advertise() for c in clients.values()])
            inbox = server.collect_shares([clients[c].share(rosters[c]) for c in rosters])
            y = clients[1].masked_input(np.full(32, x), inbox[1]).y
            tops.append((y >> np.uint64(56)).astype(np.int64))
        return np.concatenate(tops)

    zero, high = view(0.0), view(1.0)
    for sample in (zero, high):
        counts = np.bincount(sample, minlength=256)
        assert chisquare(counts).pvalue > 1e-3
    table = np.vstack([np.bincount(zero, minlength=256), np.bincount(high, minlength=256)])
    from scipy.stats import chi2_contingency

    assert chi2_contingency(table).pvalue > 1e-3


def test_messages_round_trip_through_bytes() -> None:
    cfg = Config.create("r", [1, 2, 3], 5, bound=1.0)
    clients = {c: Client(cfg, c) for c in cfg.clients}
    server = Server(cfg)
    adverts = [decode_message(encode_message(c.advertise())) for c in clients.values()]
    rosters = server.collect_advertise(adverts)
    shares = [decode_message(encode_message(clients[c].share(rosters[c]))) for c in rosters]
    inbox = server.collect_shares(shares)
    ups = _updates(cfg)
    masked = [decode_message(encode_message(clients[c].masked_input(ups[c], inbox[c]))) for c in inbox]
    survivors, dropped = server.collect_masked(masked)
    reveals = [decode_message(encode_message(clients[c].reveal(survivors, dropped))) for c in survivors]
    _check(server.finish(reveals), ups)
    with pytest.raises(TamperedMessage):
        server.collect_masked([MaskedInput(9, np.zeros(5, dtype=np.uint64))])


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 1e6), st.integers(1, 1000), st.integers(0, 2**32 - 1))
def test_quantisation_error_is_within_the_stated_bound(bound: float, clients: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = Quantizer(bound)
    xs = rng.uniform(-bound, bound, (clients, 8))
    total = np.zeros(8, dtype=np.uint64)
    for x in xs:
        total += q.encode(x)[0]
    assert np.abs(q.decode(total, clients) - xs.sum(0)).max() <= q.error_bound(clients) * (1 + 1e-9) + 1e-9 * bound


def test_quantisation_clips_and_refuses_non_finite() -> None:
    q = Quantizer(1.0)
    words, clipped = q.encode(np.array([-5.0, 0.0, 5.0]))
    assert clipped == 2 and q.decode(words, 1).tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=q.step)
    with pytest.raises(InvalidInput):
        q.encode(np.array([np.nan]))
    with pytest.raises(InvalidInput):
        Config.create("r", [1, 2, 3], 4, bound=1.0, threshold=1)


def test_shamir_shares_recover_from_any_threshold() -> None:
    secret = bytes(range(32))
    shares = share_secret(secret, 3, 5)
    for pick in ([0, 1, 2], [4, 2, 0], [1, 3, 4]):
        assert recover_secret({i: shares[i] for i in pick}, 3) == secret
    assert recover_secret({0: shares[0], 1: shares[1]}, 2) != secret


def test_client_state_survives_export_between_stages() -> None:
    cfg = Config.create("r", [1, 2, 3, 4], 6, bound=1.0)
    ups = _updates(cfg)
    clients = {c: Client(cfg, c) for c in cfg.clients}
    server = Server(cfg)
    rosters = server.collect_advertise([c.advertise() for c in clients.values()])
    clients = {c: Client.from_state(cfg, clients[c].export_state()) for c in clients}
    inbox = server.collect_shares([clients[c].share(rosters[c]) for c in rosters])
    clients = {c: Client.from_state(cfg, clients[c].export_state()) for c in clients}
    survivors, dropped = server.collect_masked([clients[c].masked_input(ups[c], inbox[c]) for c in (1, 2, 3)])
    clients = {c: Client.from_state(cfg, clients[c].export_state()) for c in clients}
    _check(server.finish([clients[c].reveal(survivors, dropped) for c in survivors]), ups)
