"""A private training run tells a principal who may train (but not read) nothing exact about the data:
on two neighbouring datasets (one consenting subject more) its card, its progress, its ledger entry and
its refusals are the same, but for what the DP guarantee covers (the weights, the noisy training)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.dp.training import WITHHELD, card_markdown, recompute_epsilon
from complai.errors import InvalidInput, PolicyDenied
from complai.events import decode_event
from complai.vault.schema import load_schema

TRAINER = "trainer"  # may train on adult for train_ai_system, and nothing else
ROWS = 300  # 299 and 300 subjects: the same size bound, 512
RUN = {"label": "income", "model": "logreg", "target_epsilon": 1.0, "epochs": 2, "batch_size": 16, "seed": 3}


@dataclass
class Pair:
    a: Workspace  # without the extra subject
    b: Workspace  # with it
    extra: str  # the subject id that makes the difference


def _workspace(path: Path, df: pd.DataFrame, consents: pd.DataFrame) -> Workspace:
    ws = Workspace.init(path)
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(adult_schema_path(), ws.taxonomy))
    admin.ingest("adult", df, consents)
    admin.set_budget("adult", 50.0, 1e-3)
    ws.session(OWNER, "security").add_principal(TRAINER, "human")
    admin.add_rule(TRAINER, "adult", "train", "train_ai_system")
    return ws


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    df = load_adult("train").head(ROWS).drop(columns=["split"], errors="ignore")
    consents = adult_consents(df["subject_id"], now=datetime.now(UTC))
    live = consents[(consents["purpose"] == "train_ai_system") & consents["withdrawn_at"].isna()]
    extra = str(live["subject"].iloc[-1])
    root = tmp_path_factory.mktemp("neighbours")
    a = _workspace(
        root / "a",
        df[df["subject_id"].astype(str) != extra].reset_index(drop=True),
        consents[consents["subject"].astype(str) != extra].reset_index(drop=True),
    )
    b = _workspace(root / "b", df, consents)
    try:
        yield Pair(a, b, extra)
    finally:
        a.close()
        b.close()


def _last(ws: Workspace, kind: str) -> dict[str, Any]:
    for i in reversed(range(ws.ledger.head().size)):
        e = decode_event(ws.ledger.entry(i).data)
        if e.kind == kind:
            return json.loads(ws.ledger.entry(i).data)
    raise AssertionError(f"no {kind} entry")


def _spent(ws: Workspace) -> float:
    return ws.budgets.get("adult").epsilon_spent


# what differs between any two runs whatever the data: identifiers, time, the weights (DP-protected)
VARYING = {"model_id", "created_at", "model_digest"}


def _public(card: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in json.loads(json.dumps(card)).items() if k not in VARYING}
    out["training"].pop("seconds")
    return out


def test_the_pair_differs_in_exactly_one_consenting_subject(pair: Pair) -> None:
    counts = [len(ws.session(OWNER, "train_ai_system").read("adult", columns=["income"])) for ws in (pair.a, pair.b)]
    assert counts[1] == counts[0] + 1  # the extra subject is read for this purpose: a real neighbour


def test_neighbouring_datasets_give_the_same_card_progress_and_ledger_entry(pair: Pair) -> None:
    cards, progress, events = [], [], []
    for ws in (pair.a, pair.b):
        told: list[tuple[int, int]] = []
        progress.append(told)
        session = ws.session(TRAINER, "train_ai_system")
        cards.append(session.train("adult", progress=lambda d, t, out=told: out.append((d, t)), **RUN))
        events.append(_last(ws, "model.trained"))
    a, b = cards
    # no count of subjects on the card; every field but the run's identity and the weights is the same
    assert "training_subjects" not in a["data"] and "test_subjects" not in a["data"]
    assert _public(a) == _public(b)
    p = a["privacy"]
    assert p["size_bound"] == 512 and p["sample_rate"] == 1 / 32  # 512 / 16: public parameters only
    assert p["steps"] == 2 * 32 and recompute_epsilon(a) == p["epsilon"] <= 1.0
    # the exact held-out evaluation is withheld from a principal who may not read the dataset
    assert a["utility"] == {"withheld": WITHHELD} and a["fairness"] is None
    assert a["training"]["final_loss"] is None and a["data"]["manifest_digest"] == "withheld"
    assert "test_records" not in json.dumps(a) and "accuracy" not in json.dumps(a["utility"])
    assert "training subjects" not in card_markdown(a)
    # progress is told in steps of the public plan: the same calls on both datasets
    assert progress[0] == progress[1] and progress[0][-1] == (64, 64)
    # the ledger entry: the same counts and privacy parameters
    same = ("subjects", "sample_rate", "steps", "noise_multiplier", "epsilon", "delta", "accountant")
    assert {k: events[0][k] for k in same} == {k: events[1][k] for k in same}
    assert events[0]["subjects"] == 512


def test_a_reader_gets_the_held_out_evaluation_without_counts(pair: Pair) -> None:
    card = pair.b.session(OWNER, "train_ai_system").train("adult", **RUN)
    u = card["utility"]
    assert 0.0 <= u["accuracy"] <= 1.0 and 0.0 < u["majority_accuracy"] <= 1.0
    assert "test_records" not in u and "training_subjects" not in card["data"]
    # the stored card is the full one, the same the reader got
    assert pair.b.session(OWNER, "audit").model(card["model_id"])["card"]["utility"] == u


def test_a_failed_split_names_no_count_and_spends_the_budget(pair: Pair) -> None:
    messages = []
    for ws in (pair.a, pair.b):
        before = _spent(ws)
        with pytest.raises(InvalidInput) as exc:
            # at this fraction no subject is held out (probability about 300 in a billion)
            ws.session(TRAINER, "train_ai_system").train("adult", **{**RUN, "test_fraction": 1e-9})
        messages.append(str(exc.value))
        assert _spent(ws) > before  # the reservation came before the split: a failure is not free
    assert messages[0] == messages[1]
    assert "too few labelled subjects" in messages[0]
    n = len(pair.a.session(OWNER, "train_ai_system").read("adult", columns=["income"]))
    assert not any(str(k) in messages[0] for k in (n, n + 1, n - n // 5, n // 5))


def test_a_run_without_dp_needs_read_rights(pair: Pair) -> None:
    with pytest.raises(PolicyDenied):
        pair.a.session(TRAINER, "train_ai_system").train(
            "adult", label="income", private=False, epochs=1, batch_size=16
        )
    card = pair.a.session(OWNER, "train_ai_system").train("adult", label="income", private=False, epochs=1)
    assert card["data"]["training_subjects"] > 0 and card["utility"]["test_records"] > 0
