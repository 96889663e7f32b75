"""The quickstart's output: progress on stderr, the results and where to look next on stdout (run here
on its first steps; the whole run is in test_cli)."""

from __future__ import annotations

from pathlib import Path

import pytest

from complai import quickstart


def test_progress_on_stderr_results_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(quickstart, "STEPS", quickstart.STEPS[:3])  # workspace, data, dataset
    monkeypatch.setenv("COLUMNS", "200")
    summary = quickstart.run_quickstart(tmp_path / "qs")
    out, err = capsys.readouterr()
    titles = [title for title, _ in quickstart.STEPS]
    assert [line.split("✓ ", 1)[1] for line in err.splitlines() if "✓" in line] == titles
    for title, detail in ((s["step"], s["result"]) for s in summary["steps"]):
        assert title in out and detail[:30] in out and detail[:30] not in err
    assert f"Workspace: {tmp_path / 'qs'}" in out
    assert "Workspace:" not in err


def test_quiet_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(quickstart, "STEPS", quickstart.STEPS[:1])
    summary = quickstart.run_quickstart(tmp_path / "qs", quiet=True)
    assert capsys.readouterr() == ("", "") and summary["steps"][0]["step"] == "Create workspace"
