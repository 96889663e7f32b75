"""Options at their extremes and outputs under a careless umask: NaN, infinities and out-of-range
numbers are one-line refusals that record nothing; what complai creates is private whatever the umask;
a federation that could not be prepared whole leaves nothing behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from complai.app.workspace import Workspace
from tests.cli.test_output_files import cli, ledger_size


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("extremes") / "ws"
    Workspace.init(path).close()
    return path


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--epsilon-cap", "nan", "--format", "json"],
        ["audit", "--epsilon-cap", "-inf", "--format", "json"],
        ["audit", "--epsilon-cap", "0", "--format", "json"],
        ["audit", "--format", ""],
        ["audit", "--format", " , "],
    ],
)
def test_an_audit_with_a_meaningless_cap_or_no_format_is_refused(ws: Path, tmp_path: Path, args: list[str]) -> None:
    before = ledger_size(ws)
    assert cli(ws, *args, "--out", str(tmp_path / "report")) == 2
    assert ledger_size(ws) == before
    assert not (tmp_path / "report").exists()


def test_federated_ports_and_timeouts_out_of_range_are_refused(ws: Path, tmp_path: Path) -> None:
    spec = tmp_path / "fl.yaml"
    spec.write_text("organisations: 2\nrows: 200\nrounds: 1\n")
    argv = ["--root-certificates", str(spec), "--key", str(spec)]
    for port in ("70000", "-1"):
        assert cli(ws, "federated", "client", "--workspace", str(ws), "--superlink", "h:1", *argv, "--port", port) == 2
    for timeout in ("nan", "-1", "inf"):
        assert cli(ws, "federated", "server", str(spec), "--root", str(tmp_path / "r"), "--timeout", timeout) == 2
    assert not (tmp_path / "r").exists()


def test_a_failed_federated_prepare_leaves_nothing(ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import complai.app.federation as simulate

    real = simulate.prepare_organisations

    def dies_half_way(root: Path, spec: object) -> dict[str, object]:
        Workspace.init(root / "server").close()
        raise OSError(28, "No space left on device")

    spec = tmp_path / "fl.yaml"
    spec.write_text("organisations: 2\nrows: 200\nrounds: 1\n")
    monkeypatch.setattr(simulate, "prepare_organisations", dies_half_way)
    assert cli(ws, "federated", "prepare", str(spec), "--root", str(tmp_path / "fed")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fl.yaml"]
    monkeypatch.setattr(simulate, "prepare_organisations", real)


def test_federated_prepare_under_umask_000_is_private(ws: Path, tmp_path: Path, open_umask: None) -> None:
    spec = tmp_path / "fl.yaml"
    spec.write_text("organisations: 2\nrows: 200\nrounds: 1\n")
    root = tmp_path / "fed"
    assert cli(ws, "federated", "prepare", str(spec), "--root", str(root)) == 0
    assert sorted(p.name for p in root.iterdir()) == ["org-0", "org-1", "server"]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "org-0" / "complai.toml").stat().st_mode) == 0o644
    w = Workspace.open(root / "org-1")
    try:
        assert w.vault.counts()["records"] > 0
    finally:
        w.close()


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_table_release_and_its_report_may_not_share_a_file(ws: Path, tmp_path: Path, force: list[str]) -> None:
    source = tmp_path / "people.csv"
    source.write_text("customer_id,segment,income\nC-1,retail,1\nC-2,retail,2\nC-3,premium,3\n")
    target = tmp_path / "release.csv"
    before = ledger_size(ws)
    argv = ["deid", "table", str(source), "--quasi", "segment", "--k", "1", "--out", str(target)]
    assert cli(ws, *argv, "--report", str(tmp_path / "." / "release.csv"), *force) == 2
    assert not target.exists() and ledger_size(ws) == before


def test_ledger_exports_and_witness_state_keep_their_modes_under_umask_000(
    ws: Path, tmp_path: Path, open_umask: None
) -> None:
    assert cli(ws, "ledger", "export", str(tmp_path / "export")) == 0
    for p in (tmp_path / "export").rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    (tmp_path / "wit").mkdir(mode=0o777)
    assert cli(ws, "ledger", "witness", "init", str(tmp_path / "wit"), "--name", "w.example/1") == 0
    for p in (tmp_path / "wit").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
