"""Federated training in Flower's simulation: three organisations as workspaces, governed reads, secure
aggregation equal to plain FedAvg, what left each organisation in its ledger, DP accounting, and no
process left behind."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from complai.app.federation import simulate
from complai.app.workspace import Workspace
from complai.events import decode_event
from complai.federated import engine
from tests.procs import own_processes

BASE = {"organisations": 3, "rounds": 2, "rows": 1500, "local_epochs": 1, "batch_size": 64, "seed": 3}


def _events(path: str, kind: str) -> list:
    with Workspace.open(path) as ws:
        out = [decode_event(ws.ledger.entry(i).data) for i in range(ws.ledger.head().size)]
    return [e for e in out if e.kind == kind]


@pytest.fixture(scope="module")
def ray_dir() -> Iterator[Path]:
    """This module's own Ray directory (a short path: Ray's socket names must fit in 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cplray-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, ray_dir: Path) -> dict:
    base = tmp_path_factory.mktemp("fl")
    secure = simulate(engine.FederatedSpec.parse({**BASE, "secure_aggregation": True}), base / "secure", ray_dir)
    plain = simulate(engine.FederatedSpec.parse({**BASE, "secure_aggregation": False}), base / "plain", ray_dir)
    dp = simulate(
        engine.FederatedSpec.parse({**BASE, "dp": "central", "noise_multiplier": 0.8, "clip_norm": 1.0}),
        base / "dp",
        ray_dir,
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
        # consent was enforced when the bundled sample was partitioned: an organisation holds only
        # subjects who consented to federated training (about 60 % of the 1,500), and reads them all
        assert all(e.rows == e.records_in_dataset for e in reads)
    assert 0.5 * BASE["rows"] < sum(layout["rows"]) < 0.7 * BASE["rows"]


def test_dp_fedavg_epsilon_recomputes_from_the_recorded_parameters(runs: dict) -> None:
    rounds = _events(runs["dp"]["layout"]["server"], "federated.round")
    assert [e.dp for e in rounds] == ["central", "central"]
    for e in rounds:
        assert e.epsilon == engine.recompute_epsilon(e, "rdp")
    assert rounds[1].epsilon > rounds[0].epsilon
    assert runs["dp"]["history"][-1]["epsilon"] == rounds[-1].epsilon


def test_no_process_is_left_running(runs: dict, ray_dir: Path) -> None:
    # Ray's head processes name the run's own directory; their workers descend from them
    assert runs and list(ray_dir.glob("session_*")), "the runs did not use their own Ray directory"
    assert own_processes([ray_dir]) == []


def test_own_processes_finds_a_process_naming_its_directory(tmp_path: Path) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(60)", str(tmp_path)])
    try:
        assert any(line.startswith(f"{child.pid} ") for line in own_processes([tmp_path]))
        assert own_processes([tmp_path / "elsewhere"]) == []
    finally:
        child.kill()
        child.wait()
    assert own_processes([tmp_path]) == []


def test_a_non_empty_root_is_refused(tmp_path: Path) -> None:
    from complai.errors import InvalidInput

    (tmp_path / "x").write_text("")
    with pytest.raises(InvalidInput, match="not empty"):
        simulate(engine.FederatedSpec.parse(BASE), tmp_path)
