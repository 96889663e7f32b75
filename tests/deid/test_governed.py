"""De-identified governed reads: what the dataset requires for a purpose always applies; callers can
add protections, not remove them; the read event says what was done."""

from __future__ import annotations

import copy

import pytest
from pycanon import anonymity

from complai.app.workspace import Workspace
from complai.errors import InvalidInput
from complai.events import decode_event
from complai.vault.schema import load_schema
from tests.vault.conftest import PEOPLE, SCHEMA, consents_frame, people_frame


@pytest.fixture
def minimised(ws: Workspace) -> Workspace:
    schema = copy.deepcopy(SCHEMA)
    schema["fields"][3]["identifier"] = "quasi"  # income
    schema["fields"][4]["identifier"] = "quasi"  # segment
    schema["deidentify"] = {"marketing": {"drop_direct_identifiers": True, "pseudonymize": ["customer_id"]}}
    ws.catalog.register(load_schema(schema, ws.taxonomy), actor="owner")
    ws.vault.ingest("customers", people_frame(), actor="owner", consents_data=consents_frame())
    return ws


def test_declared_deidentification_applies(minimised: Workspace) -> None:
    s = minimised.session("owner", "marketing")
    frame = s.read("customers")
    assert "full_name" not in frame.columns and "email" not in frame.columns
    assert frame["customer_id"].str.startswith("<ID_").all()
    assert not set(frame["customer_id"]) & {p[0] for p in PEOPLE}
    event = decode_event(minimised.ledger.entry(s.last_seq).data)  # type: ignore[arg-type]
    assert event.deidentification["dropped"] == ["full_name", "email"]  # type: ignore[attr-defined]
    # the same subject gets the same pseudonym in a later read
    assert set(frame["customer_id"]) == set(s.read("customers")["customer_id"])
    # another purpose without a declaration reads identified data
    assert "email" in minimised.session("owner", "credit_scoring").read("customers").columns


def test_callers_add_protections_but_cannot_remove_them(minimised: Workspace) -> None:
    frame = minimised.session("owner", "marketing").read("customers", deidentify={"drop_direct_identifiers": False})
    assert "email" not in frame.columns  # the dataset's requirement stays
    frame = minimised.session("owner", "credit_scoring").read("customers", deidentify={"k": 2})
    quasi = ["income", "segment"]
    assert anonymity.k_anonymity(frame.reset_index(drop=True), quasi) >= 2
    assert len(frame) == 4


def test_invalid_declarations_are_refused(ws: Workspace) -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["deidentify"] = {"research": {"drop_direct_identifiers": True}}
    with pytest.raises(InvalidInput, match="does not allow"):
        load_schema(schema, ws.taxonomy)
    schema["deidentify"] = {"marketing": {"pseudonymize": ["shoe_size"]}}
    with pytest.raises(InvalidInput, match="no field"):
        load_schema(schema, ws.taxonomy)
    schema["deidentify"] = {"marketing": {"text": {"email": "shred"}}}
    with pytest.raises(InvalidInput):
        load_schema(schema, ws.taxonomy)
