"""A training spec is checked whole (sizes, ranges, a memory estimate, delta against the budget) before
any data is read: a refused spec leaves the ledger, the budget and the models as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.dp.training import TrainingSpec
from complai.errors import BudgetExhausted, InvalidInput
from tests.dp.conftest import adult_workspace

BASE: dict[str, Any] = {"label": "income", "epochs": 1, "batch_size": 64, "target_epsilon": 1.0}

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("negative hidden", {"model": "mlp", "hidden": [-5, 0]}, "hidden"),
    ("huge hidden", {"model": "mlp", "hidden": [1e8, 1e8]}, "hidden"),
    ("too many parameters", {"model": "mlp", "hidden": [4096, 4096, 4096, 4096]}, "parameters"),
    ("tiny epsilon", {"target_epsilon": 1e-300}, "target_epsilon"),
    ("infinite epsilon", {"target_epsilon": float("inf")}, "target_epsilon"),
    ("infinite learning rate", {"learning_rate": float("inf")}, "learning_rate"),
    ("nan clipping norm", {"max_grad_norm": float("nan")}, "max_grad_norm"),
    ("huge batch", {"batch_size": 10**12}, "batch_size"),
    ("delta above the budget's", {"delta": 0.01}, "delta"),
]


@pytest.fixture(scope="module")
def adult(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "ws"
    w = adult_workspace(Workspace.init(path), 300, epsilon=10.0, delta=1e-3)
    w.close()
    return path


@pytest.mark.parametrize(("case", "extra", "names"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_spec_leaves_the_ledger_unchanged(adult: Path, case: str, extra: dict[str, Any], names: str) -> None:
    ws = Workspace.open(adult)
    try:
        s = ws.session(OWNER, "train_ai_system")
        size = ws.ledger.head().size
        spent = ws.budgets.get("adult").epsilon_spent
        with pytest.raises((InvalidInput, BudgetExhausted)) as err:
            s.train("adult", **{**BASE, **extra})
        assert names in str(err.value)
        assert "\n" not in str(err.value)
        assert ws.ledger.head().size == size
        assert ws.budgets.get("adult").epsilon_spent == spent
        assert ws.models.list() == []
    finally:
        ws.close()


@pytest.mark.parametrize(("case", "extra", "names"), REFUSED[:-1], ids=[c[0] for c in REFUSED[:-1]])
def test_spec_alone_refuses_without_a_workspace(case: str, extra: dict[str, Any], names: str) -> None:
    """Everything that needs no schema is refused by the spec itself (the parameter count needs the
    schema's feature width: the preflight checks it)."""
    if case == "too many parameters":
        TrainingSpec.parse({"dataset": "adult", **BASE, **extra})
        return
    with pytest.raises(InvalidInput, match=names):
        TrainingSpec.parse({"dataset": "adult", **BASE, **extra})


def test_yaml_floats_in_hidden_are_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: adult\nlabel: income\ntarget_epsilon: 1\nmodel: mlp\nhidden: [1.0e+8, 1.0e+8]\n")
    with pytest.raises(InvalidInput, match="hidden"):
        TrainingSpec.load(spec)


def test_bad_or_deeply_nested_yaml_is_a_one_line_refusal(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    for text, says in (("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"), ("a: [b\n", "not valid YAML")):
        spec.write_text(text)
        with pytest.raises(InvalidInput, match=says):
            TrainingSpec.load(spec)


def test_delta_not_below_one_over_n_is_refused_before_the_read(tmp_path: Path) -> None:
    ws = adult_workspace(Workspace.init(tmp_path / "ws"), 300, epsilon=10.0, delta=0.5)
    try:
        size = ws.ledger.head().size
        with pytest.raises(InvalidInput, match="below 1/N") as err:
            ws.session(OWNER, "train_ai_system").train("adult", **{**BASE, "delta": 0.01})
        assert "300" not in str(err.value) and "240" not in str(err.value)  # no count of subjects
        assert ws.ledger.head().size == size
    finally:
        ws.close()


def test_a_default_delta_the_budget_cannot_cover_is_refused_before_the_read(tmp_path: Path) -> None:
    """With no delta in the spec the run picks min(1e-5, 0.1/N); a budget whose delta is smaller is
    refused before the governed read, not after it."""
    ws = adult_workspace(Workspace.init(tmp_path / "ws"), 300, epsilon=10.0, delta=1e-7)
    try:
        size = ws.ledger.head().size
        with pytest.raises(BudgetExhausted, match="delta"):
            ws.session(OWNER, "train_ai_system").train("adult", **BASE)
        assert ws.ledger.head().size == size
        assert ws.budgets.get("adult").epsilon_spent == 0
    finally:
        ws.close()


def test_delta_refusals_do_not_tell_the_number_of_subjects(tmp_path: Path) -> None:
    """A principal who may only train must not learn N by a binary search on delta: datasets of 300 and
    301 subjects refuse the same deltas with the same words (the check uses N rounded up to 512)."""
    answers = []
    for rows in (300, 301):
        ws = adult_workspace(Workspace.init(tmp_path / f"ws{rows}"), rows, epsilon=0.5, delta=0.5)
        try:
            ws.identity.add(OWNER, "trainer", "service")
            ws.policy.add(OWNER, "trainer", "adult", "train", "train_ai_system")
            session = ws.session("trainer", "train_ai_system")
            seen = []
            for delta in (1 / 299, 1 / 300, 1 / 300.5, 1 / 301, 1 / 302, 1 / 511, 1 / 513):
                # target_epsilon above the budget: a delta that passes is then refused on the budget
                with pytest.raises((InvalidInput, BudgetExhausted)) as err:
                    session.train("adult", **{**BASE, "target_epsilon": 5.0, "delta": delta})
                seen.append((type(err.value).__name__, str(err.value)))
            answers.append(seen)
        finally:
            ws.close()
    assert answers[0] == answers[1]
    assert [kind for kind, _ in answers[0]] == ["InvalidInput"] * 6 + ["BudgetExhausted"]
