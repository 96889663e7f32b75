from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from complai.app.workspace import Workspace
from complai.vault.backup import load_backup_key, new_backup_key
from complai.vault.schema import load_schema

SCHEMA: dict[str, Any] = {
    "name": "customers",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {
        "credit_scoring": "gdpr.consent",
        "marketing": "gdpr.consent",
        "fraud_detection": "gdpr.legitimate_interests",
        "customer_support": "gdpr.contract",
    },
    "fields": [
        {
            "name": "customer_id",
            "type": "string",
            "category": "user.unique_id",
            "identifier": "direct",
            "nullable": False,
        },
        {"name": "full_name", "type": "string", "category": "user.name", "identifier": "direct"},
        {"name": "email", "type": "string", "category": "user.contact.email", "identifier": "direct"},
        {"name": "income", "type": "integer", "category": "user.financial.income", "min": 0, "max": 10_000_000},
        {"name": "segment", "type": "category", "category": "user.behavior", "values": ["retail", "premium"]},
    ],
}

PEOPLE = [
    ("C-1001", "Margarethe Vandersloot", "margarethe.vandersloot@example.org", 731_337, "premium"),
    ("C-1002", "Bartholomew Quigley", "bart.quigley@example.net", 48_250, "retail"),
    ("C-1003", "Xiomara Castellanos", "xiomara.c@example.com", 612_987, "retail"),
    ("C-1004", "Thaddeus Okonkwo", "t.okonkwo@example.org", 95_111, "premium"),
]


def people_frame() -> pd.DataFrame:
    return pd.DataFrame(PEOPLE, columns=["customer_id", "full_name", "email", "income", "segment"])


def consents_frame() -> pd.DataFrame:
    rows = [(cid, "credit_scoring") for cid, *_ in PEOPLE] + [("C-1001", "marketing"), ("C-1002", "marketing")]
    return pd.DataFrame(rows, columns=["subject", "purpose"])


@pytest.fixture
def customers(ws: Workspace) -> Workspace:
    ws.catalog.register(load_schema(SCHEMA, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    return ws


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """A fresh backup key (its file, 0600, is tmp_path/backup.key)."""
    new_backup_key(tmp_path / "backup.key")
    return load_backup_key(tmp_path / "backup.key")
