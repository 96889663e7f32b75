"""A federated simulation on a team's own dataset: the spec checked against the dataset's schema before
anything is created, only subjects with live consent partitioned (one governed read), each round
reported to a progress callback with the total, and the majority-class baseline beside the accuracy."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from complai.access.identity import OWNER
from complai.app.federation import simulate
from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.events import decode_event
from complai.federated import engine, strategy
from complai.federated.strategy import RoundRunner
from tests.procs import own_processes

SCHEMA = {
    "name": "customers",
    "subject_type": "customer",
    "jurisdiction": "EU",
    "retention": "P3650D",
    "subject_column": "cid",
    "purposes": {"federated_training": "gdpr.consent", "analytics": "gdpr.consent"},
    "deidentify": {"federated_training": {"drop_direct_identifiers": True}},
    "fields": [
        {"name": "cid", "type": "string", "category": "user.unique_id", "identifier": "direct", "nullable": False},
        {"name": "age", "type": "integer", "category": "user.demographic.age", "min": 18, "max": 90},
        {"name": "plan", "type": "category", "category": "user.behavior", "values": ["basic", "plus", "premium"]},
        {"name": "monthly_spend", "type": "float", "category": "user.behavior", "min": 0, "max": 500},
        {"name": "churn", "type": "category", "category": "user.derived", "values": ["stays", "leaves"]},
    ],
}
ROWS = 240
SPEC = {
    "dataset": "customers",
    "label": "churn",
    "features": ["age", "plan", "monthly_spend"],
    "organisations": 2,
    "rounds": 2,
    "batch_size": 32,
    "secure_aggregation": False,
    "seed": 5,
}


def _customers() -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROWS customers whose churn follows their plan and spend, and consents to federated training
    for the customers with an even number (half of them), to analytics for everybody."""
    rng = np.random.default_rng(42)
    plan = rng.choice(["basic", "plus", "premium"], ROWS)
    spend = np.round(rng.uniform(5, 400, ROWS), 2)
    leaves = (plan == "basic") & (spend < 200) | (rng.random(ROWS) < 0.05)
    people = pd.DataFrame(
        {
            "cid": [f"C{i:04d}" for i in range(ROWS)],
            "age": rng.integers(18, 90, ROWS),
            "plan": plan,
            "monthly_spend": spend,
            "churn": np.where(leaves, "leaves", "stays"),
        }
    )
    consents = pd.concat(
        [
            pd.DataFrame({"subject": people["cid"][::2], "purpose": "federated_training"}),
            pd.DataFrame({"subject": people["cid"], "purpose": "analytics"}),
        ],
        ignore_index=True,
    )
    return people, consents


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("team") / "ws"
    people, consents = _customers()
    with Workspace.init(path) as ws:
        admin = ws.session(OWNER, "administration")
        admin.create_dataset(admin.parse_schema(SCHEMA))
        admin.ingest("customers", people, consents)
    yield path


@pytest.fixture(scope="module")
def ray_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cplray-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _events(path: Path | str, kind: str) -> list[Any]:
    with Workspace.open(path) as ws:
        out = [decode_event(ws.ledger.entry(i).data) for i in range(ws.ledger.head().size)]
    return [e for e in out if e.kind == kind]


@pytest.fixture(scope="module")
def run(source: Path, ray_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fed") / "root"
    calls: list[tuple[int, int]] = []
    with Workspace.open(source) as ws:
        out = simulate(
            engine.FederatedSpec.parse(SPEC),
            root,
            ray_dir,
            source=ws.session(OWNER, "federated_training"),
            on_round=lambda summary, total: calls.append((summary["round"], total)),
        )
    return {**out, "calls": calls}


def test_only_consented_subjects_are_partitioned_by_one_governed_read(run: dict[str, Any], source: Path) -> None:
    people, _ = _customers()
    consented = ROWS // 2  # every customer with an even number
    assert sum(run["layout"]["rows"]) == consented
    reads = _events(source, "vault.read")
    assert len(reads) == 1
    read = reads[0]
    assert (read.purpose, read.dataset, read.rows, read.records_in_dataset) == (
        "federated_training",
        "customers",
        consented,
        ROWS,
    )
    # the organisations hold the partition only: subjects by pseudonym, the features and the label
    leaves = 0
    for org in run["layout"]["organisations"]:
        with Workspace.open(org) as ws:
            frame = ws.session(OWNER, "federated_training").read("customers")
            schema = ws.session(OWNER, "administration").dataset_schema("customers")
        assert sorted(f.name for f in schema.fields) == ["age", "churn", "cid", "monthly_spend", "plan"]
        assert not set(frame["cid"]) & set(people["cid"]) if "cid" in frame else True
        leaves += int((frame["churn"] == "leaves").sum())
        # every record an organisation holds is readable for the purpose: its subjects' consent came along
        org_reads = _events(org, "vault.read")
        assert org_reads and all(e.rows == e.records_in_dataset for e in org_reads)
    assert leaves == int((people["churn"][::2] == "leaves").sum())


def test_the_summary_reports_the_majority_baseline_and_each_round_its_progress(run: dict[str, Any]) -> None:
    assert run["calls"] == [(1, 2), (2, 2)]
    assert [h["round"] for h in run["history"]] == [1, 2]
    last = run["history"][-1]
    assert run["accuracy"] == last["accuracy"] and run["majority_accuracy"] == last["majority"]
    # the baseline is a share of a whole number of held-out rows: some class is at least half of them
    assert 0.5 <= last["majority"] <= 1.0
    expected_warning = last["accuracy"] < last["majority"]
    assert (run["warning"] is not None) == expected_warning
    # the baseline never reaches a ledger: the server's rounds carry no label counts
    rounds = _events(run["layout"]["server"], "federated.round")
    assert [e.round for e in rounds] == [1, 2]
    assert all("majority" not in json.dumps(e.model_dump(mode="json")) for e in rounds)


def test_no_process_is_left_running(run: dict[str, Any], ray_dir: Path) -> None:
    assert run and own_processes([ray_dir]) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ["age", "tenure"]}, "no field 'tenure'"),
        ({"label": "monthly_spend"}, "label monthly_spend must be a boolean or a category"),
        ({"features": ["cid", "age"]}, "direct identifier"),
        ({"purpose": "analytics"}, "purpose"),
    ],
)
def test_a_spec_that_does_not_fit_the_dataset_is_refused_before_anything_is_created(
    source: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    root = tmp_path / "root"
    spec = engine.FederatedSpec.parse({**SPEC, **change})
    with Workspace.open(source) as ws:
        before = ws.ledger.head().size
        with pytest.raises(InvalidInput, match=message) as err:
            simulate(spec, root, source=ws.session(OWNER, "federated_training"))
        after = ws.ledger.head().size
    assert "\n" not in str(err.value)
    assert not root.exists()
    # nothing was read: a refusal before the read records no vault.read
    assert after == before


def test_the_cli_refuses_a_missing_feature_in_one_line_and_creates_nothing(source: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    spec = tmp_path / "fl.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "features": ["age", "tenure"]}))
    root = tmp_path / "root"
    cli = [sys.executable, "-m", "complai.cli.main", "--workspace", str(source), "federated", "simulate"]
    r = subprocess.run(
        [*cli, str(spec), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "tenure" in r.stderr and "Traceback" not in r.stderr
    assert not root.exists()


class Evaluating:
    """strategy.Transport to organisations in this process with a real model shape and fixed held-out
    results: each answers an evaluation with `correct` of `counts` (its held-out rows per class)."""

    def __init__(self, results: dict[int, tuple[int, list[int]]]) -> None:
        self.results = results

    def node_ids(self) -> list[int]:
        return list(self.results)

    def exchange(self, stage: str, payloads: Mapping[int, strategy.Payload]) -> dict[int, Mapping[str, Any]]:
        out: dict[int, Mapping[str, Any]] = {}
        for n, p in payloads.items():
            if stage == "query.describe":
                out[n] = {"arch": json.dumps({"architecture": "logreg", "inputs": 3, "classes": 2})}
            elif stage == "train.plain":
                size = len(np.frombuffer(p["weights"], dtype="<f8"))  # type: ignore[arg-type]
                out[n] = {"update": np.zeros(size).astype("<f8").tobytes()}
            elif stage == "evaluate":
                correct, counts = self.results[n]
                out[n] = {"correct": correct, "total": sum(counts), "counts": json.dumps(counts)}
        return out


def test_the_runner_reports_the_majority_of_the_union_of_held_out_rows_and_warns_below_it() -> None:
    # organisation 1 holds 30 of class 0 and 10 of class 1, organisation 2 holds 5 and 15: the union has
    # 35 of class 0 among 60, a majority baseline of 35/60; 30 correct answers of 60 is below it
    transport = Evaluating({1: (20, [30, 10]), 2: (10, [5, 15])})
    spec = engine.FederatedSpec.parse({"organisations": 2, "rounds": 3, "secure_aggregation": False})
    calls: list[tuple[int, int, float | None]] = []
    out = RoundRunner(
        transport, spec, "run-m", on_round=lambda s, t: calls.append((s["round"], t, s["majority"]))
    ).run()
    assert calls == [(1, 3, 35 / 60), (2, 3, 35 / 60), (3, 3, 35 / 60)]
    assert out["accuracy"] == 0.5 and out["majority_accuracy"] == 35 / 60
    assert out["warning"] is not None and "0.50 vs 0.58" in out["warning"]
    better = RoundRunner(Evaluating({1: (40, [30, 10]), 2: (18, [5, 15])}), spec, "run-n").run()
    assert better["accuracy"] == 58 / 60 and better["warning"] is None


def test_majority_accuracy_and_its_warning() -> None:
    assert engine.majority_accuracy([3, 1]) == 0.75
    assert engine.majority_accuracy([0, 0]) is None
    # 76 of 100 held-out rows in the first class: 0.415 is below the baseline, 0.8 above it
    assert "0.41 vs 0.76" in str(engine.below_majority(0.415, [76, 24]))
    assert engine.below_majority(0.8, [76, 24]) is None
    assert engine.below_majority(None, [76, 24]) is None
    assert engine.below_majority(0.1, [0, 0]) is None


def test_a_deployed_run_reports_its_rounds_from_the_server_ledger(tmp_path: Path) -> None:
    from complai.app.federation import round_watcher

    server = tmp_path / "server"
    spec = engine.FederatedSpec.parse({"organisations": 2, "rounds": 2})
    seen: list[tuple[int, int, int, float | None]] = []
    watch = round_watcher(server, spec, lambda s, total: seen.append((s["round"], total, s["survivors"], s["epsilon"])))
    with Workspace.init(server) as ws:
        session = ws.session(OWNER, spec.purpose)
        for run_id, r, survivors in [("run-7", 1, 2), ("run-8", 1, 1), ("run-7", 2, 1)]:
            session.record_federated_round(
                run_id=run_id,
                round=r,
                sampled=2,
                survivors=survivors,
                dropped=2 - survivors,
                secure_aggregation=True,
                dp="central",
                noise_multiplier=1.0,
                clip_norm=1.0,
                sample_rate=1.0,
                epsilon=0.5 * r,
                delta=1e-5,
                aggregate_digest="sha256:" + "0" * 64,
            )
            if r == 1 and run_id == "run-7":
                watch("run-7")
    watch("run-7")
    watch("run-7")  # nothing new: nothing reported twice
    assert seen == [(1, 2, 2, 0.5), (2, 2, 1, 1.0)]
