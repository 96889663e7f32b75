"""DPIA actions are authorised before the dataset is looked up: a principal who may not act on it learns
nothing about whether it exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.errors import NotFound, PolicyDenied
from tests.dp.conftest import adult_workspace


def test_a_refused_dpia_action_does_not_say_whether_the_dataset_exists(tmp_path: Path) -> None:
    ws = adult_workspace(Workspace.init(tmp_path / "ws"), 50)
    try:
        ws.identity.add(OWNER, "nobody", "service")
        for action in ("dpia_status", "dpia_generate"):
            words = set()
            for name in ("adult", "no_such_dataset"):
                with pytest.raises(PolicyDenied) as exc:
                    getattr(ws.session("nobody", "audit"), action)(name)
                words.add(str(exc.value).replace(name, "D"))
            assert len(words) == 1
        with pytest.raises(NotFound):  # those allowed still learn that it does not exist
            ws.session(OWNER, "audit").dpia_status("no_such_dataset")
    finally:
        ws.close()
