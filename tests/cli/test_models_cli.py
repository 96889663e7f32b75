"""`complai train`, `complai model list|show|card|audit` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from complai.app.workspace import Workspace
from tests.cli.test_cli import run
from tests.dp.conftest import adult_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models-cli") / "ws"
    adult_workspace(Workspace.init(path), 1200, epsilon=2.0, delta=1e-3).close()
    return path


def _spec(tmp: Path, **kw: object) -> str:
    spec = {"dataset": "adult", "label": "income", "model": "logreg", "target_epsilon": 1.0, "delta": 1e-4}
    spec.update(kw)
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_train_list_show_card_audit(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", str(ws)]
    r = run(*w, "train", _spec(tmp_path, epochs=2, batch_size=128), "--json")
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    model = card["model_id"]
    assert card["privacy"]["epsilon"] <= 1.0 and card["data"]["purpose"] == "train_ai_system"
    listed = json.loads(run(*w, "model", "list", "--json").stdout)
    assert [m["model_id"] for m in listed] == [model] and listed[0]["flagged"] is False
    shown = json.loads(run(*w, "model", "show", model, "--json").stdout)
    assert shown["card"]["model_digest"] == shown["model_digest"]
    md = run(*w, "model", "card", model)
    assert md.returncode == 0 and f"({model})" in md.stdout and "noise multiplier" in md.stdout
    r = run(*w, "model", "audit", model, "--shadows", "1", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["attacks"]) == {"loss", "lira"} and report["claimed_epsilon"] == card["privacy"]["epsilon"]
    assert Path(report["report_path"]).exists()
    r = run(*w, "model", "audit", model, "--shadows", "0")
    assert r.returncode == 0 and "empirical epsilon" in r.stdout


def test_refusals_are_one_line_and_change_nothing(ws: Path, tmp_path: Path) -> None:
    w = ["--workspace", str(ws)]
    before = json.loads(run(*w, "dp", "budget", "adult", "--json").stdout)[0]
    r = run(*w, "train", _spec(tmp_path, target_epsilon=5.0))
    assert r.returncode == 2 and "exhausted" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run(*w, "train", _spec(tmp_path, epochs=0))
    assert r.returncode == 2 and "training spec: epochs" in r.stderr
    r = run(*w, "train", _spec(tmp_path, model="bert"))
    assert r.returncode == 2 and "text field" in r.stderr
    (tmp_path / "bad.yaml").write_text("- a list")
    r = run(*w, "train", str(tmp_path / "bad.yaml"))
    assert r.returncode == 2 and "must be a mapping" in r.stderr
    r = run(*w, "model", "show", "m-000000000000")
    assert r.returncode == 2 and "no model" in r.stderr
    r = run(*w, "model", "card", "m-000000000000", "--format", "pdf")
    assert r.returncode == 2
    after = json.loads(run(*w, "dp", "budget", "adult", "--json").stdout)[0]
    assert after == before
