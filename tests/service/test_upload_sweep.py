"""An upload whose server was killed before its ingest ended is removed when a worker starts (or takes
the next upload): its process is gone. A live process's upload folder is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.service.api.data import OWNER_FILE, _process_id, sweep_uploads
from complai.service.app import create_app
from tests.service.conftest import settings_for


def folder_owned_by(root: Path, name: str, owner: str) -> Path:
    folder = root / name
    folder.mkdir(mode=0o700, parents=True)
    (folder / OWNER_FILE).write_text(owner)
    (folder / "file").write_text("customer_id,income\nC-1,100\n")
    return folder


def dead_process_id() -> str:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        named = _process_id(child.pid)
    finally:
        child.kill()
        child.wait()
    assert named is not None
    return named


def test_a_dead_servers_upload_goes_when_a_worker_starts(ws: Workspace) -> None:
    root = Path(ws.path) / "uploads"
    dead = folder_owned_by(root, "ingest-dead", dead_process_id())
    mine = _process_id(os.getpid())
    assert mine is not None
    live = folder_owned_by(root, "ingest-live", mine)
    with TestClient(create_app(settings_for(ws), workspace=ws)):
        assert not dead.exists()
        assert live.exists()
    sweep_uploads(Path(ws.path))
    assert live.exists() and not dead.exists()
