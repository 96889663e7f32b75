"""What a model card tells its reader: intended use and limitations, the majority-class warning,
utility per group of each sensitive attribute (with small groups withheld), Hugging Face metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import binom

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.dp.training import (
    MIN_GROUP_SIZE,
    ModelCard,
    TrainingSpec,
    card_markdown,
    fairness,
    majority_warning,
)
from complai.errors import InvalidInput
from complai.events import decode_event
from complai.vault.schema import DatasetSchema, load_schema
from tests.cli.test_cli import run

N = 3000
# group a: the label is the sign of x (learnable); group b: the label is a fair coin, independent of
# everything the model sees; c, d, e: small groups (about 15 held-out subjects each, 45 together)
GROUPS = {"a": 0.55, "b": 0.40, "c": 0.0167, "d": 0.0167, "e": 0.0166}


def _schema(deidentify: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "loans",
        "subject_column": "sid",
        "jurisdiction": "EU",
        "retention": "P3650D",
        "purposes": {"train_ai_system": "gdpr.art9.research", "research": "gdpr.art9.research"},
        "deidentify": deidentify or {},
        "fields": [
            {"name": "sid", "type": "string", "category": "user.unique_id", "identifier": "direct", "nullable": False},
            {"name": "x", "type": "float", "category": "user.financial.income", "min": -1, "max": 1},
            {
                "name": "grp",
                "type": "category",
                "category": "user.demographic.race_ethnicity",
                "sensitive": True,
                "values": list(GROUPS),
            },
            {"name": "y", "type": "category", "category": "user.financial.income", "values": ["0", "1"]},
        ],
    }


def _frame(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, N)
    grp = rng.choice(list(GROUPS), size=N, p=list(GROUPS.values()))
    coin = rng.integers(0, 2, N)
    y = np.where(grp == "a", (x > 0).astype(int), coin)
    return pd.DataFrame({"sid": [f"s{i:05d}" for i in range(N)], "x": x, "grp": grp, "y": y.astype(str)})


def _loans(ws: Workspace, deidentify: dict[str, Any] | None = None) -> None:
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(_schema(deidentify), ws.taxonomy))
    admin.ingest("loans", _frame())
    admin.set_budget("loans", 10.0, 1e-3)


def _entries(ws: Workspace) -> list[bytes]:
    return [ws.ledger.entry(i).data for i in range(ws.ledger.head().size)]


SMALL = {"label": "y", "features": ["x"], "model": "logreg", "private": False, "epochs": 4, "batch_size": 128}


def test_fairness_section_shows_the_planted_gap(sqlite_ws: Workspace) -> None:
    _loans(sqlite_ws)
    card = sqlite_ws.session(OWNER, "train_ai_system").train("loans", test_fraction=0.3, learning_rate=0.1, **SMALL)
    assert isinstance(card, ModelCard)
    section = card["fairness"]
    assert section["min_group_size"] == MIN_GROUP_SIZE == 30
    assert "held-out subjects of the same dataset" in section["evaluated_on"]
    grp = section["attributes"]["grp"]
    # not a feature of this model, yet read (and recorded) for the evaluation
    assert grp["status"] == "computed" and grp["model_input"] is False
    rows = {r["group"]: r for r in grp["groups"]}
    assert set(rows) == {"a", "b"}  # c, d and e have fewer than 30 held-out subjects each
    assert grp["groups_not_reported"] == 3
    left_out = card["data"]["test_subjects"] - sum(r["size"] for r in rows.values())
    assert left_out >= MIN_GROUP_SIZE  # what the withheld groups add up to is not a small group
    # b's held-out labels are fair coins independent of the model: its correct count is Binomial(n, 1/2)
    n_b = rows["b"]["size"]
    lo, hi = binom.ppf(1e-6, n_b, 0.5) / n_b, binom.isf(1e-6, n_b, 0.5) / n_b
    assert lo <= rows["b"]["accuracy"] <= hi
    # a's label is a threshold of the model's only input: a logistic model separates it but for points
    # at the boundary (b's coins are symmetric in x, so they do not move it)
    assert rows["a"]["accuracy"] >= 0.9
    assert grp["accuracy_gap"] == pytest.approx(rows["a"]["accuracy"] - rows["b"]["accuracy"])
    assert grp["accuracy_gap"] >= 0.9 - hi
    assert 0 <= rows["a"]["auc"] <= 1 and rows["a"]["auc"] >= 0.9
    md = card_markdown(card)
    assert "## Fairness" in md and "| a |" in md and "| b |" in md and "| c |" not in md
    assert "3 group(s) not reported" in md and "not a model input" in md
    # the governed read recorded the sensitive column it took for the evaluation
    reads = [e for e in map(decode_event, _entries(sqlite_ws)) if e.kind == "vault.read"]
    assert sorted(reads[-1].columns) == ["grp", "x", "y"]
    stored = sqlite_ws.session(OWNER, "audit").model(card["model_id"])["card"]
    assert isinstance(stored, ModelCard) and stored["fairness"] == card["fairness"]


def test_a_sensitive_attribute_the_purpose_pseudonymises_is_named_not_measured(sqlite_ws: Workspace) -> None:
    _loans(sqlite_ws, {"research": {"pseudonymize": ["grp"]}})
    card = sqlite_ws.session(OWNER, "research").train("loans", **SMALL)
    grp = card["fairness"]["attributes"]["grp"]
    assert grp["status"] == "not computed" and "groups" not in grp
    assert "pseudonymised" in grp["reason"]
    assert "Not computed: pseudonymised" in card_markdown(card)


def _section(sizes: dict[str, int], correct: dict[str, int]) -> dict[str, Any]:
    """fairness() on hand-made predictions: per group, `correct` of `sizes` right (label 1 always)."""
    keys, right = [], []
    for g, n in sizes.items():
        keys += [g] * n
        right += [True] * correct[g] + [False] * (n - correct[g])
    y = np.ones(len(keys), dtype=np.int64)
    logits = np.where(np.array(right)[:, None], [[0.0, 1.0]], [[1.0, 0.0]])
    schema = DatasetSchema.model_validate(_schema())
    spec = TrainingSpec.parse({"dataset": "loans", "label": "y", "private": False})
    return fairness(schema, spec, logits, y, pd.DataFrame({"grp": keys}), {}, ["grp"])["attributes"]["grp"]


def test_small_groups_are_withheld_with_what_would_reveal_them() -> None:
    # d alone (10) would be left out: its size and accuracy would follow by subtraction from the
    # totals, so the smallest reported group (c, 40) is withheld with it
    grp = _section({"a": 100, "b": 60, "c": 40, "d": 10}, {"a": 90, "b": 30, "c": 20, "d": 10})
    assert [(r["group"], r["size"], r["accuracy"]) for r in grp["groups"]] == [("a", 100, 0.9), ("b", 60, 0.5)]
    assert grp["groups_not_reported"] == 2
    assert grp["accuracy_gap"] == pytest.approx(0.4)
    # left-out groups that already add up to the minimum withhold nothing more
    grp = _section({"a": 100, "b": 20, "c": 15}, {"a": 75, "b": 20, "c": 0})
    assert [(r["group"], r["accuracy"]) for r in grp["groups"]] == [("a", 0.75)]
    assert grp["groups_not_reported"] == 2 and grp["accuracy_gap"] is None
    # a one-class group has no AUC (null), not a made-up one
    assert grp["groups"][0]["auc"] != grp["groups"][0]["auc"]


def test_majority_warning() -> None:
    labels = ["no"] * 58 + ["yes"] * 42
    text = majority_warning(0.42, labels)
    assert text is not None and "worse than always predicting the majority class (0.42 vs 0.58)" in text
    assert majority_warning(0.58, labels) is None and majority_warning(0.9, labels) is None
    # digits enough to tell the two apart
    assert "(0.755 vs 0.757)" in str(majority_warning(0.755, [1] * 757 + [0] * 243))
    with pytest.raises(InvalidInput):
        majority_warning(0.5, [])


def test_intended_use_limitations_and_hugging_face_metadata(sqlite_ws: Workspace) -> None:
    _loans(sqlite_ws)
    s = sqlite_ws.session(OWNER, "train_ai_system")
    card = s.train(
        "loans",
        intended_use="Ranking loan applications for manual review; never an automated decision.",
        limitations=["Trained on one lender's 2024 applicants.", "Not evaluated on applicants under 21."],
        **SMALL,
    )
    assert card["intended_use"].startswith("Ranking loan applications")
    assert card["limitations"][1] == "Not evaluated on applicants under 21."
    assert not any("intended use" in w for w in card["warnings"])
    md = card_markdown(card)
    assert md.startswith("---\n")
    front, body = md[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["tags"] == ["complai", "not-differentially-private"]
    assert meta["datasets"] == ["loans"] and meta["pipeline_tag"] == "tabular-classification"
    [result] = meta["model-index"][0]["results"]
    assert result["task"]["type"] == "tabular-classification" and result["dataset"]["type"] == "loans"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"accuracy": card["utility"]["accuracy"], "roc_auc": card["utility"]["auc"]}
    assert meta["metrics"] == ["accuracy", "roc_auc"]
    assert "## Intended use\nRanking loan applications" in body
    assert "- Not evaluated on applicants under 21." in body
    html = card._repr_html_()
    assert "Ranking loan applications" in html and "Fairness" in html and "<script" not in html

    private = s.train("loans", label="y", features=["x"], target_epsilon=2.0, delta=1e-5, epochs=1, batch_size=256)
    meta = yaml.safe_load(card_markdown(private)[4:].split("\n---\n", 1)[0])
    assert "differential-privacy" in meta["tags"]
    # no intended use declared: the card says so among its warnings, and the CLI prints them
    assert private["warnings"][-1].startswith("no intended use declared")
    warnings = card_markdown(private).split("## Warnings\n", 1)[1].split("\n\n", 1)[0]
    assert "- **no intended use declared" in warnings


def test_model_show_prints_the_warnings(sqlite_ws: Workspace) -> None:
    _loans(sqlite_ws)
    card = sqlite_ws.session(OWNER, "train_ai_system").train("loans", **SMALL)
    out = run("--workspace", str(sqlite_ws.path), "model", "show", card["model_id"])
    assert out.returncode == 0, out.stderr
    assert "WARNING: no intended use declared" in out.stdout


@pytest.mark.parametrize("bad", [{"intended_use": ""}, {"limitations": "one string"}, {"limitations": [""]}])
def test_bad_intended_use_or_limitations_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="training spec"):
        TrainingSpec.parse({"dataset": "d", "label": "y", "private": False, **bad})
