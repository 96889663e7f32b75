"""A workspace holding the first rows of the bundled Adult data, with consents and a privacy budget."""

from __future__ import annotations

from pathlib import Path

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.datasets.adult import adult_schema_path, load_adult
from complai.datasets.consents import adult_consents
from complai.vault.schema import load_schema


def adult_workspace(ws: Workspace, rows: int, epsilon: float = 10.0, delta: float = 1e-3) -> Workspace:
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(adult_schema_path(), ws.taxonomy))
    df = load_adult("train").head(rows).drop(columns=["split"], errors="ignore")
    admin.ingest("adult", df, adult_consents(df["subject_id"], now=ws.clock.now()))
    admin.set_budget("adult", epsilon, delta)
    return ws


def open_adult(path: Path, rows: int, **kw: float) -> Workspace:
    return adult_workspace(Workspace.init(path), rows, **kw)
