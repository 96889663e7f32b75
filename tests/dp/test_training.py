"""DP-SGD training: budget first, cards whose epsilon recomputes, governed data, erasure flags."""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.dp.budget import BudgetState
from complai.dp.features import TabularFeatures
from complai.dp.training import MODEL_FILE, recompute_epsilon, split_subjects
from complai.errors import BudgetExhausted, IntegrityError, InvalidInput, PolicyDenied
from complai.events import decode_event
from complai.store.tables import dp_spends, model_subjects, models
from tests.dp.conftest import adult_workspace

SMALL = {"label": "income", "epochs": 2, "batch_size": 64}


def _events(ws: Workspace, kind: str) -> list:
    out = []
    for i in range(ws.ledger.head().size):
        e = decode_event(ws.ledger.entry(i).data)
        if e.kind == kind:
            out.append(e)
    return out


def test_approximate_spends_compose_by_adding_epsilon_and_delta() -> None:
    class Row:
        dataset, principal, epsilon, delta, rho_total = "d", "*", 5.0, 1e-4, 0.0
        rho_spent, eps_spent, approx_eps_spent, approx_delta_spent = 0.0, 0.5, 0.0, 0.0

    s = BudgetState.of(Row(), rho=0.01, approx=(1.2, 4e-5))
    # basic composition: 0.5 (pure) + 1.2 (approx) + zCDP converted at the delta the approx spend left
    zcdp = 0.01 + 2 * math.sqrt(0.01 * math.log(1 / 6e-5))
    assert s.epsilon_spent == pytest.approx(0.5 + 1.2 + zcdp)
    assert s.delta_left == pytest.approx(6e-5)
    assert BudgetState.of(Row(), rho=0.01, approx=(0.1, 1e-4)).epsilon_spent == math.inf


def test_card_epsilon_recomputes_from_its_parameters(ws: Workspace) -> None:
    adult_workspace(ws, 600)
    s = ws.session(OWNER, "train_ai_system")
    before = ws.budgets.get("adult").epsilon_spent
    card = s.train("adult", model="logreg", target_epsilon=1.0, delta=1e-4, **SMALL)
    p = card["privacy"]
    assert p["accountant"] == "prv" and p["sampling"] == "poisson"
    assert recompute_epsilon(card) == p["epsilon"]  # exactly, by a fresh Opacus accountant
    assert p["epsilon"] <= 1.0
    assert p["steps"] == SMALL["epochs"] * round(1 / p["sample_rate"])
    # the budget holds exactly the planned (epsilon, delta) of the run
    after = ws.budgets.get("adult")
    assert after.approx_eps_spent - 0 == pytest.approx(p["epsilon"], rel=1e-12)
    assert after.approx_delta_spent == pytest.approx(1e-4) and after.epsilon_spent > before
    # the ledger binds the stored card and weights
    trained = _events(ws, "model.trained")[-1]
    directory = ws.models.directory(card["model_id"])
    assert trained.card_digest == "sha256:" + hashlib.sha256((directory / "card.json").read_bytes()).hexdigest()
    assert trained.model_digest == "sha256:" + hashlib.sha256((directory / MODEL_FILE).read_bytes()).hexdigest()
    assert trained.epsilon == p["epsilon"] and trained.noise_multiplier == p["noise_multiplier"]
    spent = _events(ws, "dp.spent")[-1]
    assert spent.mechanism == "dp-sgd" and spent.epsilon == pytest.approx(p["epsilon"]) and spent.delta == 1e-4
    md = (directory / "card.md").read_text()
    assert f"{p['noise_multiplier']:.6g}" in md and card["model_id"] in md


def test_rdp_accountant_also_recomputes(sqlite_ws: Workspace) -> None:
    adult_workspace(sqlite_ws, 400)
    card = sqlite_ws.session(OWNER, "train_ai_system").train(
        "adult", model="mlp", hidden=[16], target_epsilon=2.0, delta=1e-4, accountant="rdp", clipping="hooks", **SMALL
    )
    assert recompute_epsilon(card) == card["privacy"]["epsilon"] <= 2.0


def test_overspending_is_refused_before_reading_or_stepping(sqlite_ws: Workspace, monkeypatch) -> None:
    import torch

    ws = adult_workspace(sqlite_ws, 400, epsilon=0.5, delta=1e-3)
    s = ws.session(OWNER, "train_ai_system")
    size = ws.ledger.head().size
    with pytest.raises(BudgetExhausted, match="exhausted"):
        s.train("adult", model="logreg", target_epsilon=1.0, delta=1e-4, **SMALL)
    assert ws.ledger.head().size == size  # not even the read happened
    # a reservation that fails after the preflight (another run took the budget meanwhile): no step taken
    steps = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    monkeypatch.setattr(ws.models, "preflight", lambda *a, **k: None)
    with pytest.raises(BudgetExhausted):
        s.train("adult", model="logreg", target_epsilon=1.0, delta=1e-4, **SMALL)
    assert steps == []
    with ws.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(models)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(dp_spends)).scalar_one() == 0
    assert ws.budgets.get("adult").epsilon_spent == 0
    assert list(ws.models.root.glob("*")) == [] if ws.models.root.exists() else True


def test_bad_specs_are_refused(sqlite_ws: Workspace) -> None:
    adult_workspace(sqlite_ws, 300, delta=0.5)
    s = sqlite_ws.session(OWNER, "train_ai_system")
    with pytest.raises(InvalidInput, match="target_epsilon"):
        s.train("adult", label="income")
    with pytest.raises(InvalidInput, match="no field"):
        s.train("adult", label="salary", target_epsilon=1)
    with pytest.raises(InvalidInput, match="below 1/N"):
        s.train("adult", target_epsilon=1, delta=0.01, **SMALL)
    size = sqlite_ws.ledger.head().size
    with pytest.raises(InvalidInput, match="must be a boolean or a category"):
        s.train("adult", label="age", target_epsilon=1)
    with pytest.raises(InvalidInput, match="cannot also be a feature"):
        s.train("adult", label="income", features=["age", "income"], target_epsilon=1)
    assert sqlite_ws.ledger.head().size == size  # refused before any read
    with pytest.raises(InvalidInput, match="needs the text field"):
        s.train("adult", model="bert", target_epsilon=1, **SMALL)
    with pytest.raises(InvalidInput, match="not allowed"):
        sqlite_ws.session(OWNER, "marketing").train("adult", target_epsilon=1, **SMALL)
    sqlite_ws.identity.add(OWNER, "ana", "service")
    with pytest.raises(PolicyDenied):  # deny by default: no role, no training
        sqlite_ws.session("ana", "train_ai_system").train("adult", target_epsilon=1, **SMALL)


def test_features_come_from_the_schema_not_the_data(sqlite_ws: Workspace) -> None:
    adult_workspace(sqlite_ws, 50)
    schema = sqlite_ws.catalog.get("adult").schema
    f = TabularFeatures(schema, ["age", "sex", "workclass"])
    a = pd.DataFrame({"age": [17, 90, 200, None], "sex": ["Male", "Female", "x", None], "workclass": ["Private"] * 4})
    x = f.transform(a)
    # each row's encoding is the same alone as among others: nothing is fitted across rows
    for i in range(len(a)):
        assert np.array_equal(f.transform(a.iloc[[i]]), x[[i]])
    assert x[:, 0].tolist() == [0.0, 1.0, 1.0, 0.5]  # declared bounds 17..90, clipped, missing at mid-range
    assert x[2, 1 + 2] == 1.0 and x[3, 1 + 2] == 1.0  # undeclared and missing share the extra slot
    from complai.vault.schema import DatasetSchema

    undeclared = DatasetSchema.model_validate(
        {**schema.model_dump(), "fields": [{**fl.model_dump(), "values": None} for fl in schema.fields]}
    )
    with pytest.raises(InvalidInput, match="declared"):
        TabularFeatures(undeclared, ["sex"])


def test_training_reads_only_consented_subjects_and_erasure_flags_models(sqlite_ws: Workspace) -> None:
    ws = adult_workspace(sqlite_ws, 500)
    s = ws.session(OWNER, "train_ai_system")
    eligible = s.read("adult", columns=["subject_id", "income"])
    card = s.train("adult", model="logreg", target_epsilon=1.0, delta=1e-4, **SMALL)
    # a private card states no count of subjects, only the public bound (500 subjects ingested -> 512)
    assert "training_subjects" not in card["data"] and card["privacy"]["size_bound"] == 512
    read = _events(ws, "vault.read")[-1]
    assert read.purpose == "train_ai_system" and read.rows == len(eligible) < 500
    frame, _, _, _ = ws.vault.fetch("adult", "train_ai_system", ["subject_id"], pseudonym_column="p")
    consenting = set(frame["p"])
    assert len(consenting) == len(eligible)
    members = ws.models.training_subjects(card["model_id"])
    # exactly the consenting subjects the keyed split did not hold out
    assert members == consenting - split_subjects(sorted(consenting), 0.2, 0)
    # erase one training subject: the model is flagged, the link forgotten, the next run excludes them
    subject = ws.session(OWNER, "subject_request")
    victim = frame[frame["p"].isin(members)].iloc[0]
    subject.erase_subject(victim["subject_id"])
    info = ws.models.get(card["model_id"])
    assert info["flagged"] and "erased" in info["flag_reason"]
    assert victim["p"] not in ws.models.training_subjects(card["model_id"])
    again = s.train("adult", model="logreg", target_epsilon=1.0, delta=1e-4, **SMALL)
    assert victim["p"] not in ws.models.training_subjects(again["model_id"])
    assert ws.models.training_subjects(again["model_id"]) == members - {victim["p"]}
    assert not ws.models.get(again["model_id"])["flagged"]
    with ws.store.read() as conn:
        n = conn.execute(select(func.count()).select_from(model_subjects)).scalar_one()
    assert n == 2 * (len(members) - 1)


def test_stored_model_reloads_and_tampering_is_detected(sqlite_ws: Workspace) -> None:
    import torch

    from complai.dp.training import predict

    ws = adult_workspace(sqlite_ws, 300)
    card = ws.session(OWNER, "train_ai_system").train("adult", model="mlp", hidden=[8], private=False, **SMALL)
    n = card["data"]["training_subjects"]
    assert card["privacy"] == {"private": False, "sample_rate": 64 / n, "steps": 2 * math.ceil(n / 64), "epochs": 2}
    module, stored = ws.models.load(card["model_id"])
    assert stored == json.loads(json.dumps(card))
    x = torch.zeros(3, card["architecture"]["inputs"])
    assert predict(module, torch.utils.data.TensorDataset(x, torch.zeros(3, dtype=torch.long))).shape == (3, 2)
    path = ws.models.directory(card["model_id"]) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="do not match"):
        ws.models.load(card["model_id"])


def test_training_threads_follow_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """OMP_NUM_THREADS, when it is a positive whole number, is how many threads training uses; otherwise
    one per core up to 8."""
    import torch

    from complai.dp.training import _threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        _threads()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
        _threads()
        assert torch.get_num_threads() == max(1, min(os.cpu_count() or 1, 8))
    finally:
        torch.set_num_threads(before)
