"""A sharing agreement edited at rest is refused at its next use, before anything is read, sealed or
counted: its recipient key replaced (the package would open for someone else), its limit raised, its
uses reset or its revocation undone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from complai.app.workspace import Workspace
from complai.crypto.sealing import generate_keypair
from complai.errors import IntegrityError
from complai.store.tables import agreements


@pytest.mark.parametrize(
    "edit",
    [
        {"recipient_key": "11" * 32},
        {"deid_json": '{"drop_direct_identifiers": false, "pseudonymize_subjects": false}'},
        {"max_uses": 5},
        {"uses": 0},
        {"fields_json": '["customer_id", "full_name", "income"]'},
    ],
)
def test_an_agreement_edited_at_rest_is_refused(customers: Workspace, tmp_path: Path, edit: dict[str, Any]) -> None:
    public = generate_keypair(tmp_path / "bank.key")
    a = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], max_uses=2, recipient_jurisdiction="EU"
    )
    customers.agreements.export("owner", a.id, tmp_path / "p1.pkg")
    before = customers.ledger.head().size
    with customers.store.write() as conn:
        conn.execute(update(agreements).where(agreements.c.id == a.id).values(**edit))
    with pytest.raises(IntegrityError, match="was changed at rest"):
        customers.agreements.export("owner", a.id, tmp_path / "p2.pkg")
    assert not (tmp_path / "p2.pkg").exists()
    assert customers.ledger.head().size == before
