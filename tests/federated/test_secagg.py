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
    RunConfig,
    SecAggAbort,
    Server,
    decode_message,
    encode_message,
    run_round,
    setup,
)

STAGES = ["setup", "masked", "reveal"]


def _updates(cfg: Config, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-cfg.run.bound, cfg.run.bound, cfg.dimension) for c in cfg.clients}


def _check(result, updates) -> None:
    expected = sum(updates[c] for c in result.survivors)
    assert np.abs(result.total - expected).max() <= result.error_bound


def _round(ids: list[int], dim: int, stage: str, gone: set[int], **kw: int):
    run = RunConfig("run", 2.0)
    clients, roster = setup(run, ids, drop=gone if stage == "setup" else set())
    cfg = Config.create(run, 1, sorted(roster), dim, **kw)
    ups = _updates(cfg)
    drop = {stage: gone} if stage != "setup" else {}
    return run_round(cfg, clients, roster, ups, drop), ups, cfg


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("dropped", [0, 1, 3])
def test_sum_survives_dropouts_at_every_stage(stage: str, dropped: int) -> None:
    ids = list(range(1, 10))  # 9 clients, everyone a neighbour
    gone = set(random.Random(dropped).sample(ids, dropped))
    result, ups, _ = _round(ids, 257, stage, gone)
    _check(result, ups)
    if stage == "reveal":  # they sent their masked inputs: their updates are in the sum
        assert result.survivors == ids
    else:
        assert set(result.survivors) == set(ids) - gone


@pytest.mark.parametrize("stage", STAGES)
def test_sparse_neighbourhoods_with_a_third_dropping(stage: str) -> None:
    ids = list(range(100, 130))
    run = RunConfig("run", 1.0)
    clients, roster = setup(run, ids)
    cfg = Config.create(run, 4, ids, 64, neighbours=12, threshold=7, graph_seed=3)
    graph = cfg.graph()
    assert all(len(v) == 12 for v in graph.values())
    assert all(u in graph[v] for u in graph for v in graph[u])  # symmetric
    ups = _updates(cfg, 1)
    # every third client around the graph's circle: each keeps 8 of its 12 neighbours
    gone = set(cfg.order()[::3])
    if stage == "setup":
        clients, roster = setup(run, ids, drop=gone)
        cfg = Config.create(run, 4, sorted(roster), 64, neighbours=12, threshold=7, graph_seed=3)
        _check(run_round(cfg, clients, roster, _updates(cfg, 1)), _updates(cfg, 1))
    else:
        _check(run_round(cfg, clients, roster, ups, {stage: gone}), ups)


def test_too_many_dropouts_abort_with_a_clear_error() -> None:
    run = RunConfig("run", 1.0)
    clients, roster = setup(run, list(range(1, 10)))
    cfg = Config.create(run, 7, list(range(1, 10)), 8)
    with pytest.raises(SecAggAbort, match=r"round 7 aborted: only 4 clients sent masked inputs"):
        run_round(cfg, clients, roster, _updates(cfg), {"masked": {1, 2, 3, 4, 5}})
    cfg = Config.create(run, 8, list(range(1, 10)), 8)
    # dropouts at both stages: a silent survivor with dropped neighbours leaves masks nobody can remove
    with pytest.raises(SecAggAbort, match=r"too many dropouts"):
        run_round(cfg, clients, roster, _updates(cfg), {"masked": {1}, "reveal": {2}})
    cfg = Config.create(run, 9, list(range(1, 10)), 8)
    with pytest.raises(SecAggAbort, match=r"of the 5 shares needed \(too many dropouts\)"):
        run_round(cfg, clients, roster, _updates(cfg), {"reveal": {1, 2, 3, 4, 5}})


def _started(n: int = 4, dim: int = 16):
    run = RunConfig("run", 1.0)
    clients, roster = setup(run, list(range(1, n + 1)))
    cfg = Config.create(run, 1, list(range(1, n + 1)), dim)
    server = Server(cfg, roster)
    masked = [clients[c].masked_input(cfg, np.zeros(dim)) for c in cfg.clients]
    return run, clients, roster, cfg, server, masked


def test_tampered_messages_are_rejected() -> None:
    run, clients, roster, cfg, server, masked = _started()
    survivors, dropped, inbox = server.collect_masked(masked)
    blob = bytearray(inbox[2][1])
    blob[-1] ^= 1
    with pytest.raises(TamperedMessage, match="failed authentication"):
        clients[2].reveal(cfg, survivors, dropped, {**inbox[2], 1: bytes(blob)})
    # a share replayed to another recipient fails (other channel key and binding)
    with pytest.raises(TamperedMessage):
        clients[3].reveal(cfg, survivors, dropped, {**inbox[3], 1: inbox[2][1]})
    with pytest.raises(TamperedMessage, match="malformed"):
        decode_message(b"J{not json")
    with pytest.raises(TamperedMessage, match="unexpected masked input"):
        server.collect_masked([masked[0]])
    # a share from a past round is refused in a new one
    cfg2 = Config.create(run, 2, list(cfg.clients), 16, graph_seed=cfg.graph_seed)
    server2 = Server(cfg2, roster)
    s2, d2, inbox2 = server2.collect_masked([clients[c].masked_input(cfg2, np.zeros(16)) for c in cfg2.clients])
    with pytest.raises(TamperedMessage):
        clients[2].reveal(cfg2, s2, d2, {**inbox2[2], 1: inbox[2][1]})


def test_contradictory_or_too_small_survivor_sets_are_refused() -> None:
    _, clients, _, cfg, server, masked = _started(5)
    survivors, dropped, inbox = server.collect_masked(masked)
    with pytest.raises(SecAggAbort, match="both survived and dropped"):
        clients[1].reveal(cfg, survivors, [2], inbox[1])
    with pytest.raises(SecAggAbort, match="below the threshold"):
        clients[1].reveal(cfg, [1, 2], [3, 4, 5], {2: inbox[1][2]})
    assert clients[1].reveal(cfg, survivors, dropped, inbox[1]).b_shares
    with pytest.raises(SecAggAbort, match="already answered"):
        clients[1].reveal(cfg, survivors, dropped, inbox[1])


def test_signed_keys_stop_a_server_substituting_them() -> None:
    ids = {c: Ed25519PrivateKey.generate() for c in (1, 2, 3)}
    pub = {c: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for c, k in ids.items()}
    run = RunConfig("run", 1.0, pub)
    clients, roster = setup(run, [1, 2, 3], identities=ids)
    cfg = Config.create(run, 1, [1, 2, 3], 4)
    ups = _updates(cfg)
    _check(run_round(cfg, clients, roster, ups), ups)
    impostor = Client(run, 2)  # the server's own keys, unsigned by client 2's identity
    fresh = Client(run, 1, ids[1])
    with pytest.raises(TamperedMessage, match="not signed by its identity"):
        fresh.accept_roster({1: fresh.advertise(), 2: impostor.advertise(), 3: roster[3]})


def test_server_view_of_a_client_does_not_depend_on_its_update() -> None:
    """Client 1's masked input over 400 rounds with update 0 and 400 with +bound everywhere: the top
    byte of each word is uniform either way (chi-square) and the two samples agree."""
    rng = random.Random(2024)

    def view(x: float) -> np.ndarray:
        run = RunConfig(f"run-{x}", 1.0)
        clients, _ = setup(run, [1, 2, 3], random_bytes=rng.randbytes)
        tops = []
        for i in range(400):
            cfg = Config.create(run, i, [1, 2, 3], 32, graph_seed=i)
            y = clients[1].masked_input(cfg, np.full(32, x)).y
            tops.append((y >> np.uint64(56)).astype(np.int64))
        return np.concatenate(tops)

    zero, high = view(0.0), view(1.0)
    for sample in (zero, high):
        assert chisquare(np.bincount(sample, minlength=256)).pvalue > 1e-3
    from scipy.stats import chi2_contingency

    table = np.vstack([np.bincount(zero, minlength=256), np.bincount(high, minlength=256)])
    assert chi2_contingency(table).pvalue > 1e-3


def test_messages_and_client_state_round_trip() -> None:
    run = RunConfig("run", 1.0)
    clients, roster = setup(run, [1, 2, 3])
    roster = {c: decode_message(encode_message(a)) for c, a in roster.items()}
    clients = {c: Client.from_state(run, clients[c].export_state()) for c in clients}
    cfg = Config.from_json(Config.create(run, 1, [1, 2, 3], 5).to_json())
    ups = _updates(cfg)
    server = Server(cfg, roster)  # type: ignore[arg-type]
    masked = [decode_message(encode_message(clients[c].masked_input(cfg, ups[c]))) for c in cfg.clients]
    clients = {c: Client.from_state(run, clients[c].export_state()) for c in clients}
    survivors, dropped, inbox = server.collect_masked(masked)  # type: ignore[arg-type]
    reveals = [decode_message(encode_message(clients[c].reveal(cfg, survivors, dropped, inbox[c]))) for c in survivors]
    _check(server.finish(reveals), ups)  # type: ignore[arg-type]
    with pytest.raises(TamperedMessage):
        server.collect_masked([MaskedInput(9, np.zeros(5, dtype=np.uint64), {})])


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
        Config.create(RunConfig("r", 1.0), 1, [1, 2, 3], 4, threshold=1)
    with pytest.raises(InvalidInput):
        RunConfig("r", 0.0)


def test_shamir_shares_recover_from_any_threshold() -> None:
    secret = bytes(range(32))
    shares = share_secret(secret, 3, 5)
    for pick in ([0, 1, 2], [4, 2, 0], [1, 3, 4]):
        assert recover_secret({i: shares[i] for i in pick}, 3) == secret
    assert recover_secret({0: shares[0], 1: shares[1]}, 2) != secret


def test_the_configured_dropout_share_sets_the_threshold() -> None:
    run = RunConfig("run", 1.0)
    ids = list(range(1, 41))
    cfg = Config.create(run, 1, ids, 4, neighbours=20, max_dropout=0.25)
    assert cfg.threshold == 15  # 20 - ceil(0.25 * 20)
    assert Config.create(run, 1, ids, 4, neighbours=20, max_dropout=0.45).threshold == 11  # floor k/2 + 1
    with pytest.raises(InvalidInput):
        Config.create(run, 1, ids, 4, max_dropout=0.5)
    clients, roster = setup(run, ids)
    cfg = Config.create(run, 2, ids, 16, neighbours=20, max_dropout=0.25, graph_seed=5)
    ups = _updates(cfg)
    order = cfg.order()
    gone = {order[i] for i in range(0, 40, 8)}  # one in eight: at most 3 of any 20 neighbours
    _check(run_round(cfg, clients, roster, ups, {"masked": gone}), ups)
