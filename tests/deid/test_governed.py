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


def test_a_caller_cannot_bring_back_a_dropped_identifier_as_a_pseudonym(minimised: Workspace) -> None:
    """marketing drops direct identifiers and pseudonymises customer_id only: a caller's `pseudonymize`
    naming email does not spare it from the drop (a pseudonym is the same in every dataset: a join key);
    on a purpose that declares nothing, a caller's own pseudonym of email still replaces the address."""
    s = minimised.session("owner", "marketing")
    done = s.read_governed("customers", deidentify={"pseudonymize": ["email", "customer_id"]})
    assert "email" not in done.frame.columns and "full_name" not in done.frame.columns
    assert done.deidentification is not None
    assert done.deidentification["dropped"] == ["full_name", "email"]
    assert done.deidentification["pseudonymized"] == ["customer_id"]
    frame = minimised.session("owner", "credit_scoring").read("customers", deidentify={"pseudonymize": ["email"]})
    assert frame["email"].str.startswith("<ID_").all()
    assert not set(frame["email"]) & {p[2] for p in PEOPLE}


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


def test_a_governed_read_says_what_it_did(minimised: Workspace) -> None:
    s = minimised.session("owner", "credit_scoring")
    plain = s.read_governed("customers")
    assert plain.deidentification is None and plain.achieved_k is None
    assert plain.ledger_seq == s.last_seq == minimised.ledger.head().size - 1
    done = s.read_governed("customers", deidentify={"k": 2})
    assert done.ledger_seq == plain.ledger_seq + 1
    event = decode_event(minimised.ledger.entry(done.ledger_seq).data)
    assert done.deidentification == event.deidentification  # type: ignore[attr-defined]
    assert done.achieved_k == done.deidentification["k_anonymity"]["achieved_k"] >= 2  # type: ignore[index]
    assert anonymity.k_anonymity(done.frame.reset_index(drop=True), ["income", "segment"]) >= done.achieved_k
    # the DataFrame read is the same read
    assert list(s.read("customers", deidentify={"k": 2}).columns) == list(done.frame.columns)


def test_a_dataset_schema_is_lent_only_to_those_the_policy_allows(minimised: Workspace) -> None:
    from complai.errors import PolicyDenied

    minimised.identity.add("owner", "ana", "service")
    minimised.policy.add("owner", "ana", "customers", "read", "credit_scoring", "allow")
    ana = minimised.session("ana", "credit_scoring")
    assert ana.dataset_schema("customers", "read").subject_column == "customer_id"
    assert ana.dataset_schema("customers").name == "customers"  # ana may read it: she may describe it
    size = minimised.ledger.head().size
    for action, name in (("ingest", "customers"), ("read", "no_such_dataset")):
        with pytest.raises(PolicyDenied):  # refused, whether or not the dataset exists
            ana.dataset_schema(name, action)
    assert [e.kind for e in minimised.ledger.entries(start=size)] == ["access.denied", "access.denied"]
    # a schema file is parsed against the taxonomy; registering it is what is authorised
    parsed = ana.parse_schema({**SCHEMA, "name": "other"})
    with pytest.raises(PolicyDenied):
        ana.create_dataset(parsed)
