"""Federated engine pieces: partitions, clipping, DP-FedAvg accounting."""

from __future__ import annotations

import numpy as np
import pytest

from complai.errors import InvalidInput
from complai.federated import engine


def test_iid_partition_is_an_even_split_of_every_row() -> None:
    labels = np.r_[np.zeros(70, int), np.ones(30, int)]
    parts = engine.partition(labels, 4, "iid", 0.5, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert [len(p) for p in parts] == [25, 25, 25, 25]


def test_dirichlet_partition_skews_labels_and_covers_every_row() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.25).astype(int)
    skewed = engine.partition(labels, 5, "dirichlet", 0.1, 1)
    even = engine.partition(labels, 5, "dirichlet", 1000.0, 1)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(5000))

    def spread(parts: list[np.ndarray]) -> float:
        return float(np.std([labels[p].mean() for p in parts]))

    # alpha 1000 gives every organisation about the global share; alpha 0.1 far from it
    assert spread(even) < 0.02 < 0.1 < spread(skewed)
    with pytest.raises(InvalidInput):
        engine.partition(labels[:3], 5, "iid", 1.0, 0)


def test_clip_bounds_the_norm_and_keeps_direction() -> None:
    v = np.array([3.0, 4.0])
    clipped, did = engine.clip(v, 1.0)
    assert did and np.linalg.norm(clipped) == pytest.approx(1.0) and clipped[1] / clipped[0] == pytest.approx(4 / 3)
    assert engine.clip(v, 10.0) == (v, False) or engine.clip(v, 10.0)[1] is False


def test_dp_epsilon_uses_the_training_accountant() -> None:
    from opacus.accountants import RDPAccountant

    spec = engine.FederatedSpec.parse({"dp": "central", "noise_multiplier": 1.2, "delta": 1e-5})
    acc = RDPAccountant()
    acc.history = [(1.2, 0.5, 10)]
    assert engine.dp_epsilon(spec, 10, 0.5) == acc.get_epsilon(1e-5)
    local = spec.model_copy(update={"dp": "local"})
    assert engine.dp_epsilon(local, 10, 0.5) > engine.dp_epsilon(spec, 10, 0.5)  # no amplification
    assert engine.dp_epsilon(spec.model_copy(update={"dp": "none"}), 10, 0.5) is None
    with pytest.raises(InvalidInput, match="noise_multiplier"):
        engine.FederatedSpec.parse({"dp": "central", "noise_multiplier": 0})


def test_local_dp_noise_has_the_stated_scale() -> None:
    spec = engine.FederatedSpec.parse({"dp": "local", "noise_multiplier": 0.5, "clip_norm": 2.0})
    noisy = engine.privatise_local(np.zeros(200_000), spec, np.random.default_rng(11))
    # sample standard deviation of 200k normals: within 1 % of sigma * C = 1.0 (6 standard errors)
    assert abs(noisy.std() - 1.0) < 0.01 and abs(noisy.mean()) < 0.01
