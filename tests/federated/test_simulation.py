"""Federated training in Flower's simulation: three organisations as workspaces, governed reads, secure
aggregation equal to plain FedAvg, what left each organisation in its ledger, DP accounting, and no
process left behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from complai.events import decode_event
from complai.federated import engine
from complai.federated.simulate import simulate
from complai.workspace import Workspace

BASE = {"organisations": 3, "rounds": 2, "rows": 1500, "local_epochs": 1, "batch_size": 64, "seed": 3}


def _events(path: str, kind: str) -> list:
    with Workspace.open(path) as ws:
        out = [decode_event(ws.ledger.entry(i).data) for i in range(ws.ledger.head().size)]
    return [e for e in out if e.kind == kind]


def _ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if "raylet" in line or "gcs_server" in line]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("fl")
    secure = simulate(engine.FederatedSpec.parse({**BASE, "secure_aggregation": True}), base / "secure")
    plain = simulate(engine.FederatedSpec.parse({**BASE, "secure_aggregation": False}), base / "plain")
    dp = simulate(
        engine.FederatedSpec.parse({**BASE, "dp": "central", "noise_multiplier": 0.8, "clip_norm": 1.0}),
        base / "dp",
    )
    return {"secure": secure, "plain": plain, "dp": dp}


def test_secure_aggregation_gives_the_plain_fedavg_model(runs: dict) -> None:
    w_secure = np.load(runs["secure"]["weights_path"])
    w_plain = np.load(runs["plain"]["weights_path"])
    # per round the sum's error is at most 3 * clip_norm / (2^32 - 1); divided by 3 survivors; two rounds
    # (the second round starts from slightly different weights, so allow a small multiple)
    bound = 2 * engine.FederatedSpec().clip_norm / (2**32 - 1) * 10
    assert np.abs(w_secure - w_plain).max() <= bound
    assert [h["survivors"] for h in runs["secure"]["history"]] == [3, 3]
    assert runs["secure"]["history"][-1]["accuracy"] > 0.7


def test_ledgers_record_what_left_each_organisation_and_each_round(runs: dict) -> None:
    layout = runs["secure"]["layout"]
    rounds = _events(layout["server"], "federated.round")
    assert [(e.round, e.secure_aggregation, e.survivors) for e in rounds] == [(1, True, 3), (2, True, 3)]
    for org in layout["organisations"]:
        sent = _events(org, "federated.update_sent")
        assert [e.round for e in sent] == [1, 2] and all(e.secure_aggregation for e in sent)
        reads = _events(org, "vault.read")
        assert reads and all(e.purpose == "federated_training" for e in reads)
        # consent is enforced: the reads saw fewer rows than the organisation holds
        assert all(e.rows < e.records_in_dataset for e in reads)


def test_dp_fedavg_epsilon_recomputes_from_the_recorded_parameters(runs: dict) -> None:
    rounds = _events(runs["dp"]["layout"]["server"], "federated.round")
    assert [e.dp for e in rounds] == ["central", "central"]
    for e in rounds:
        assert e.epsilon == engine.recompute_epsilon(e, "rdp")
    assert rounds[1].epsilon > rounds[0].epsilon
    assert runs["dp"]["history"][-1]["epsilon"] == rounds[-1].epsilon


def test_no_process_is_left_running(runs: dict) -> None:
    assert runs and _ray_processes() == []


def test_a_non_empty_root_is_refused(tmp_path: Path) -> None:
    from complai.errors import InvalidInput

    (tmp_path / "x").write_text("")
    with pytest.raises(InvalidInput, match="not empty"):
        simulate(engine.FederatedSpec.parse(BASE), tmp_path)
