"""Stored models are bound to the ledger's model.trained entry: editing the weights, card.json, card.md
or the registry row at rest makes `model show`, `model card` and loading refuse (IntegrityError), and
DP-1 and the reconciliation fail naming the model."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from complai.access.identity import OWNER
from complai.app.ops.compliance import compliance_services
from complai.app.workspace import Workspace
from complai.compliance import engine
from complai.compliance.reconcile import reconcile_models
from complai.errors import IntegrityError
from complai.store.tables import model_subjects, models
from tests.cli.test_cli import run
from tests.dp.conftest import adult_workspace

SPEC = {
    "label": "income",
    "model": "logreg",
    "epochs": 1,
    "batch_size": 64,
    "target_epsilon": 0.99,
    "delta": 1e-4,
    "accountant": "rdp",
}


def _train(ws: Workspace) -> str:
    adult_workspace(ws, 300)
    return str(ws.session(OWNER, "train_ai_system").train("adult", **SPEC)["model_id"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("model-integrity") / "ws"
    ws = Workspace.init(path)
    try:
        model_id = _train(ws)
    finally:
        ws.close()
    return path, model_id


@pytest.fixture
def copy(trained: tuple[Path, str], tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    """A fresh copy of the trained workspace (SQLite), so each test edits its own."""
    path = tmp_path / "ws"
    shutil.copytree(trained[0], path)
    ws = Workspace.open(path)
    try:
        yield ws, trained[1]
    finally:
        ws.close()


def _edit_card_epsilon(ws: Workspace, model_id: str) -> None:
    path = ws.models.directory(model_id) / "card.json"
    card = json.loads(path.read_bytes())
    text = path.read_text()
    old = json.dumps(card["privacy"]["epsilon"])
    assert text.count(f'"epsilon":{old}') == 1
    path.write_text(text.replace(f'"epsilon":{old}', '"epsilon":0.11'))


def _assert_refused_everywhere(ws: Workspace, model_id: str, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        ws.session(OWNER, "audit").model(model_id)
    with pytest.raises(IntegrityError, match=message):
        ws.models.load(model_id)
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    finding = engine.model_privacy(ctx)
    assert finding.status == engine.FAIL
    assert any(i["item"] == f"model {model_id}" and message in i["problem"] for i in finding.items), finding.items
    assert any(line.startswith(f"model {model_id}: ") and message in line for line in reconcile_models(ctx))


def test_an_intact_model_shows_and_passes(copy: tuple[Workspace, str]) -> None:
    ws, model_id = copy
    assert ws.session(OWNER, "audit").model(model_id)["card"]["privacy"]["epsilon"] <= 0.99
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    assert engine.model_privacy(ctx).status == engine.PASS
    assert reconcile_models(ctx) == []


def test_edited_card_json_is_refused(ws: Workspace) -> None:
    """On each backend: card.json's epsilon 0.99 -> 0.11."""
    model_id = _train(ws)
    _edit_card_epsilon(ws, model_id)
    _assert_refused_everywhere(ws, model_id, "card.json: its contents do not match")


def test_edited_weights_are_refused(copy: tuple[Workspace, str]) -> None:
    ws, model_id = copy
    path = ws.models.directory(model_id) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    _assert_refused_everywhere(ws, model_id, "model.safetensors: its contents do not match")


def _registry_epsilon(ws: Workspace, model_id: str) -> None:
    with ws.store.write() as conn:
        conn.execute(update(models).where(models.c.id == model_id).values(epsilon=0.11))


def _card_everywhere(ws: Workspace, model_id: str) -> None:
    """The card rewritten consistently in the file, the registry's card and its digest: only the ledger
    still has the original digest."""
    _edit_card_epsilon(ws, model_id)
    body = (ws.models.directory(model_id) / "card.json").read_bytes()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    with ws.store.write() as conn:
        conn.execute(
            update(models).where(models.c.id == model_id).values(card=body.decode(), card_digest=digest, epsilon=0.11)
        )


def _card_md(ws: Workspace, model_id: str) -> None:
    path = ws.models.directory(model_id) / "card.md"
    text = path.read_text()
    start = text.index("- (epsilon, delta) = (") + len("- (epsilon, delta) = (")
    path.write_text(text[:start] + "0.11" + text[text.index(",", start) :])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_registry_epsilon, "registry epsilon 0.11 is not the"),
        (_card_everywhere, "registry digests are not the ones"),
        (_card_md, "card.md does not state the card's privacy parameters"),
    ],
    ids=["registry epsilon", "card, registry and digest together", "card.md"],
)
def test_other_edits_are_refused(
    copy: tuple[Workspace, str], edit: Callable[[Workspace, str], None], message: str
) -> None:
    ws, model_id = copy
    edit(ws, model_id)
    _assert_refused_everywhere(ws, model_id, message)


def test_a_model_deleted_from_the_registry_is_named(copy: tuple[Workspace, str]) -> None:
    ws, model_id = copy
    with ws.store.write() as conn:
        conn.execute(delete(model_subjects))
        conn.execute(delete(models))
    ctx = engine.AuditContext(compliance_services(ws.services), ws.clock.now())
    assert engine.model_privacy(ctx).status == engine.FAIL
    assert [line for line in reconcile_models(ctx) if "missing from the registry" in line] == [
        f"model {model_id}: trained at ledger entry {_trained_seq(ws, model_id)} but missing from the registry"
    ]


def _trained_seq(ws: Workspace, model_id: str) -> int:
    for e in ws.ledger.entries(kind="model.trained"):
        if json.loads(e.data)["model_id"] == model_id:
            return e.seq
    raise AssertionError("no model.trained entry")


def test_cli_show_and_card_refuse_an_edited_card(copy: tuple[Workspace, str]) -> None:
    ws, model_id = copy
    w = ["--workspace", str(ws.path)]
    _edit_card_epsilon(ws, model_id)
    for args in (["model", "show", model_id], ["model", "card", model_id]):
        r = run(*w, *args)
        assert r.returncode == 1 and "card.json: its contents do not match" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "0.11" not in r.stdout


def test_a_restored_backup_keeps_its_models_verifiable(copy: tuple[Workspace, str], tmp_path: Path) -> None:
    from complai.app.backup import create_backup
    from complai.vault.backup import load_backup_key, new_backup_key

    ws, model_id = copy
    new_backup_key(tmp_path / "backup.key")
    key = load_backup_key(tmp_path / "backup.key")
    create_backup(ws.services, tmp_path / "b.bak", key, OWNER)
    Workspace.restore_backup(tmp_path / "b.bak", tmp_path / "restored", key, OWNER)
    with Workspace.open(tmp_path / "restored") as restored:
        shown = restored.session(OWNER, "audit").model(model_id)
        assert shown["model_id"] == model_id
        restored.models.load(model_id)
        finding = engine.model_privacy(
            engine.AuditContext(compliance_services(restored.services), restored.clock.now())
        )
        assert finding.status != engine.FAIL, finding.items
        weights = restored.models.directory(model_id) / "model.safetensors"
        assert oct(weights.stat().st_mode & 0o777) == "0o600"


def test_a_model_audit_is_authorised_before_the_model_is_looked_up(copy: tuple[Workspace, str]) -> None:
    from complai.errors import NotFound, PolicyDenied

    ws, model_id = copy
    for name in ("nobody", "trainer", "aud"):
        ws.identity.add(OWNER, name, "service")
    ws.identity.grant_role(OWNER, "aud", "auditor")
    ws.policy.add(OWNER, "trainer", "adult", "train", "train_ai_system")
    words = set()
    for mid in (model_id, "m-0000000000"):
        with pytest.raises(PolicyDenied) as exc:
            ws.session("nobody", "audit").model_purpose(mid)
        words.add(str(exc.value).replace(mid, "M"))
    assert len(words) == 1  # the same refusal whether or not the model exists
    assert ws.session("trainer", "audit").model_purpose(model_id) == "train_ai_system"
    with pytest.raises(NotFound):
        ws.session("aud", "audit").model_purpose("m-0000000000")
