"""De-identifying a table by a dataset's schema needs the right to see that declaration: anyone else is
refused whether or not the dataset exists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.errors import PolicyDenied
from tests.dp.conftest import adult_workspace


def test_a_dataset_schema_is_not_lent_to_a_principal_who_may_not_see_it(tmp_path: Path) -> None:
    ws = adult_workspace(Workspace.init(tmp_path / "ws"), 50)
    try:
        ws.identity.add(OWNER, "nobody", "service")
        frame = pd.DataFrame({"age": [30, 40, 50, 60], "income": ["<=50K", ">50K", "<=50K", ">50K"]})
        words = set()
        for name in ("adult", "no_such_dataset"):
            with pytest.raises(PolicyDenied) as exc:
                ws.session("nobody", "analytics").deidentify_table(frame, schema=name, quasi=["age"], k=2)
            words.add(str(exc.value).replace(name, "D"))
        assert len(words) == 1
    finally:
        ws.close()
