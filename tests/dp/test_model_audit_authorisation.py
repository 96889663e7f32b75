"""A model audit is authorised before anything about the model is said: a principal who may not train on
the model's dataset for its purpose learns neither the purpose nor whether the model exists."""

from __future__ import annotations

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.errors import PolicyDenied
from tests.dp.test_model_integrity import copy, trained  # noqa: F401 (fixtures)


def test_an_unauthorised_model_audit_names_nothing(copy: tuple[Workspace, str]) -> None:  # noqa: F811
    ws, model_id = copy
    ws.identity.add(OWNER, "nobody", "service")
    words = set()
    for mid in (model_id, "m-0000000000"):
        with pytest.raises(PolicyDenied) as exc:
            ws.session("nobody", "audit").audit_model(mid, shadows=2)
        assert "train_ai_system" not in str(exc.value)
        words.add(str(exc.value).replace(mid, "M"))
    assert len(words) == 1  # the same refusal whether or not the model exists
