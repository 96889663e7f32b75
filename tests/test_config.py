from __future__ import annotations

from pathlib import Path

import pytest

from complai.config import Settings, load_settings, pipl_request_days
from complai.errors import InvalidInput, WorkspaceError


def test_round_trip(tmp_path: Path) -> None:
    s = Settings(path=tmp_path, workspace_id="abc", created="2026-01-01T00:00:00Z", ledger_origin="o/1")
    s.write()
    loaded = load_settings(tmp_path)
    assert (loaded.workspace_id, loaded.created, loaded.ledger_origin) == ("abc", "2026-01-01T00:00:00Z", "o/1")
    assert loaded.resolved_database_url().endswith("complai.db")


def test_env_overrides_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Settings(path=tmp_path, workspace_id="abc", created="x").write()
    monkeypatch.setenv("COMPLAI_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings(tmp_path).resolved_database_url() == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[workspace]\nid = 1\n", "id and created are required"),
        ("[workspace]\nid='a'\ncreated='b'\n[surprise]\nx=1\n", "unknown section"),
        ("[workspace]\nid='a'\ncreated='b'\nformat=99\n", "newer complai"),
        ("[workspace]\nid='a'\ncreated='b'\n[keys]\nprovider='hsm'\n", "unsupported key provider"),
    ],
)
def test_corrupt_settings_are_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "complai.toml").write_text(content)
    with pytest.raises(WorkspaceError, match=message):
        load_settings(tmp_path)


def test_pipl_request_days_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPLAI_PIPL_REQUEST_DAYS", raising=False)
    assert pipl_request_days() is None
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", "")
    assert pipl_request_days() is None
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", " 30 ")
    assert pipl_request_days() == 30
    monkeypatch.setenv("COMPLAI_PIPL_REQUEST_DAYS", "two weeks")
    with pytest.raises(InvalidInput, match="whole number of days"):
        pipl_request_days()
