"""A DP answer in a notebook: `to_pandas()` holds exactly the released noisy values, its `.attrs` only
the public parameters; the HTML rendering states epsilon and shows no exact value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from complai.app.workspace import Workspace
from complai.dp.queries import PUBLIC_FIELDS, Aggregate, Noisy, run
from complai.vault.schema import load_schema
from tests.vault.conftest import SCHEMA, consents_frame, people_frame

# 1,000 values whose exact sum and mean are distinctive numbers: neither can appear in a rendering
# by chance (the sum's noise has scale 2 x 100 / 0.1 = 2,000, its display a step of 0.01)
VALUES = np.full(1000, 9.87654321)
EXACT_SUM, EXACT_MEAN = f"{VALUES.sum():.6g}", f"{VALUES.mean():.6g}"


def test_grouped_answer_as_a_dataframe() -> None:
    frame = pd.DataFrame({"g": ["a", "b", "c"] * 300 + ["a"] * 100, "v": VALUES})
    ans = run(
        frame,
        [Aggregate("count"), Aggregate("sum", "v")],
        {"v": (0, 100)},
        set(),
        1.0,
        group_by="g",
        group_keys=["a", "b", "c"],
    )
    df = ans.to_pandas()
    assert list(df.columns) == ["count(*)", "sum(v)"]
    assert df.index.name == "group" and list(df.index) == ["a", "b", "c"]
    for label in df.columns:
        for g in df.index:
            assert type(ans.values[label][g]) is Noisy
            assert df.loc[g, label] == ans.values[label][g]  # the released value itself, nothing recomputed
    assert df.attrs == ans.public() and set(df.attrs) == PUBLIC_FIELDS - {"selection"}  # keys declared: no selection
    assert df.attrs["epsilon"] == 1.0 and df.attrs["mechanism"] == "laplace (pure DP)"
    with_bounds = ans.to_pandas(error_bounds=True)
    assert list(with_bounds.columns) == ["count(*)", "count(*) ±95%", "sum(v)", "sum(v) ±95%"]
    assert with_bounds.loc["b", "sum(v) ±95%"] == ans.accuracy["sum(v)"]["b"]


def test_ungrouped_answer_is_one_row_and_renders_without_exact_values() -> None:
    frame = pd.DataFrame({"v": VALUES})
    ans = run(frame, [Aggregate("sum", "v"), Aggregate("mean", "v")], {"v": (0, 100)}, set(), 0.1, delta=1e-6)
    df = ans.to_pandas()
    assert df.shape == (1, 2) and df.iloc[0]["sum(v)"] == ans.values["sum(v)"]
    assert df.attrs["delta"] == 1e-6 and df.attrs["rho"] == ans.rho
    html = ans._repr_html_()
    assert "epsilon 0.1" in html and "delta 1e-06" in html and "gaussian" in html
    assert f"{ans.values['sum(v)']:.6g}" in html and f"{ans.accuracy['sum(v)']:.6g}" in html
    assert EXACT_SUM not in html and EXACT_MEAN not in html


@pytest.fixture
def dp_ws(ws: Workspace) -> Workspace:
    schema = {**SCHEMA, "purposes": {**SCHEMA["purposes"], "analytics": "gdpr.legitimate_interests"}}
    ws.catalog.register(load_schema(schema, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    ws.session("owner", "administration").set_budget("customers", 1.0, 1e-6)
    return ws


def test_session_answer_to_pandas(dp_ws: Workspace) -> None:
    ans = dp_ws.session("owner", "analytics").dp_query("SELECT segment, COUNT(*) FROM customers GROUP BY segment", 0.5)
    df = ans.to_pandas()
    assert sorted(df.index) == ["premium", "retail"]
    assert {g: df.loc[g, "count(*)"] for g in df.index} == ans.values["count(*)"]
    assert "<table" in ans._repr_html_() and "epsilon 0.5" in ans._repr_html_()
