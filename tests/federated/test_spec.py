"""A federated spec is checked whole before anything starts: one line, exit 2, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from complai.errors import InvalidInput
from complai.federated.engine import FederatedSpec

BAD: list[tuple[dict[str, Any], str]] = [
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"clip_norm": float("inf")}, "clip_norm"),
    ({"noise_multiplier": float("inf"), "dp": "central"}, "noise_multiplier"),
    ({"alpha": float("inf")}, "alpha"),
    ({"model": "mlp", "hidden": [-5, 0]}, "hidden"),
    ({"model": "mlp", "hidden": [100_000_000]}, "hidden"),
    ({"batch_size": 10**12}, "batch_size"),
    ({"timeout_s": float("inf")}, "timeout_s"),
    ({"seed": -1}, "seed"),
]


@pytest.mark.parametrize(("extra", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_values_are_refused_by_the_spec(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field) as err:
        FederatedSpec.parse(extra)
    assert "\n" not in str(err.value)


def test_simulate_with_an_infinite_learning_rate_is_one_line_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("organisations: 2\nrounds: 1\nlearning_rate: .inf\n")
    root = tmp_path / "root"
    r = subprocess.run(
        [sys.executable, "-m", "complai.cli.main", "federated", "simulate", str(spec), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "learning_rate" in r.stderr and "Traceback" not in r.stderr
    assert not root.exists()


def test_federation_root_is_not_a_link_nor_inside_the_workspace_keys(tmp_path: Path) -> None:
    from complai.app.workspace import Workspace
    from tests.cli.test_output_files import cli

    ws = tmp_path / "ws"
    Workspace.init(ws).close()
    spec = tmp_path / "spec.yaml"
    spec.write_text("organisations: 2\nrounds: 1\n")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    before = sorted(p.name for p in (ws / "keys").iterdir())
    for root in (ws / "keys" / "fed", link):
        for command in ("simulate", "prepare"):
            assert cli(ws, "federated", command, str(spec), "--root", str(root)) == 2
    assert sorted(p.name for p in (ws / "keys").iterdir()) == before
    assert list((tmp_path / "elsewhere").iterdir()) == []
