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


def test_a_model_audit_needs_the_right_to_read_the_dataset(copy: tuple[Workspace, str]) -> None:  # noqa: F811
    """The attacks report exact counts and rates over the training data: training on the dataset is not
    enough to run them; reading it for the model's purpose is."""
    ws, model_id = copy
    dataset, purpose = "adult", "train_ai_system"  # what the fixture trained the model on
    sec = ws.session(OWNER, "security")
    sec.add_principal("trainer", "service")
    sec.add_rule("trainer", dataset, "train", purpose)
    before = ws.ledger.head().size
    with pytest.raises(PolicyDenied, match="read"):
        ws.session("trainer", purpose).audit_model(model_id, shadows=0)
    after = [e.kind for e in ws.ledger.entries(start=before)]
    assert after == ["access.denied"]
    sec.add_rule("trainer", dataset, "read", purpose)
    report = ws.session("trainer", purpose).audit_model(model_id, shadows=0)
    assert report["model_id"] == model_id
