"""Descriptions of the workspace follow the policy: status and key state for those who oversee it,
schemas for those who may act on the dataset, exact counts only for those who may see exact data."""

from __future__ import annotations

import pytest

from complai.app.workspace import Workspace
from complai.errors import PolicyDenied


@pytest.fixture
def people(customers: Workspace) -> Workspace:
    for name in ("nobody", "dp_analyst", "reader", "aud"):
        customers.identity.add("owner", name, "service")
    customers.identity.grant_role("owner", "aud", "auditor")
    customers.policy.add("owner", "dp_analyst", "customers", "query_dp", "credit_scoring")
    customers.policy.add("owner", "reader", "customers", "read", "marketing")
    return customers


def test_a_principal_without_rights_learns_nothing_not_even_whether_a_dataset_exists(people: Workspace) -> None:
    s = people.session("nobody", "administration")
    with pytest.raises(PolicyDenied) as real:
        s.describe_datasets("customers")
    with pytest.raises(PolicyDenied) as missing:
        s.describe_datasets("no_such_dataset")
    assert str(real.value).replace("customers", "X") == str(missing.value).replace("no_such_dataset", "X")
    assert s.describe_datasets() == []
    with pytest.raises(PolicyDenied):
        s.status()
    with pytest.raises(PolicyDenied):
        s.key_status()


def test_a_dp_analyst_sees_the_schema_but_no_exact_count(people: Workspace) -> None:
    (doc,) = people.session("dp_analyst", "administration").describe_datasets("customers")
    assert [f["name"] for f in doc["fields"]][:2] == ["customer_id", "full_name"]
    assert "records" not in doc and "subjects" not in doc
    (listed,) = people.session("dp_analyst", "administration").describe_datasets()
    assert "records" not in listed


def test_exact_counts_for_readers_and_auditors(people: Workspace) -> None:
    for who in ("reader", "aud", "owner"):
        (doc,) = people.session(who, "administration").describe_datasets("customers")
        assert (doc["records"], doc["subjects"]) == (4, 4), who
    assert people.session("aud", "administration").status().datasets == 1
    assert people.session("aud", "security").key_status()
