"""Sharing: only the recipient opens the package; tampering, expiry, exhaustion and revocation refuse."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from complai.access.packages import open_package
from complai.app.workspace import Workspace
from complai.crypto.sealing import generate_keypair
from complai.errors import IntegrityError, InvalidInput, PolicyDenied
from tests.vault.conftest import PEOPLE


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, bytes]:
    public = generate_keypair(tmp_path / "bank.key")
    return tmp_path / "bank.key", public


def test_share_round_trip(customers: Workspace, keys: tuple[Path, bytes], tmp_path: Path) -> None:
    key_file, public = keys
    a = customers.agreements.create(
        "owner",
        "partner-bank",
        public,
        "customers",
        "credit_scoring",
        ["customer_id", "income", "segment"],
        max_uses=2,
        recipient_jurisdiction="EU",
    )
    res = customers.agreements.export("owner", a.id, tmp_path / "p1.pkg")
    assert res["rows"] == 4 and res["use"] == 1
    blob = (tmp_path / "p1.pkg").read_bytes()
    for _, name, _email, income, _ in PEOPLE:
        assert name.encode() not in blob and str(income).encode() not in blob
    opened = open_package(tmp_path / "p1.pkg", key_file, tmp_path / "out", log_key=customers.ledger.verifier.encode())
    assert opened["verified_against_pinned_key"]
    data = pd.read_csv(tmp_path / "out" / "data.csv")
    assert list(data.columns) == ["customer_id", "income", "segment"]
    assert sorted(data["income"]) == sorted(p[3] for p in PEOPLE)
    assert not set(data["customer_id"]) & {p[0] for p in PEOPLE}  # subject ids pseudonymised
    assert data["customer_id"].str.startswith("sh_").all()
    # consent filtering applies: withdraw one subject's consent, the next use carries 3 rows
    customers.vault.withdraw_consent("C-1003", "credit_scoring", actor="owner")
    assert customers.agreements.export("owner", a.id, tmp_path / "p2.pkg")["rows"] == 3
    with pytest.raises(PolicyDenied, match="used 2 of 2"):
        customers.agreements.export("owner", a.id, tmp_path / "p3.pkg")
    assert not (tmp_path / "p3.pkg").exists()
    assert customers.ledger.count_by_kind()["data.shared"] == 2


def test_only_the_recipient_can_open(customers: Workspace, keys: tuple[Path, bytes], tmp_path: Path) -> None:
    _, public = keys
    generate_keypair(tmp_path / "other.key")
    a = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
    )
    customers.agreements.export("owner", a.id, tmp_path / "p.pkg")
    with pytest.raises(InvalidInput, match="another recipient"):
        open_package(tmp_path / "p.pkg", tmp_path / "other.key", tmp_path / "o")


def test_tampered_package_is_refused(customers: Workspace, keys: tuple[Path, bytes], tmp_path: Path) -> None:
    key_file, public = keys
    a = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
    )
    customers.agreements.export("owner", a.id, tmp_path / "p.pkg")
    blob = bytearray((tmp_path / "p.pkg").read_bytes())
    blob[-30] ^= 0x40
    (tmp_path / "t.pkg").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        open_package(tmp_path / "t.pkg", key_file, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_expired_and_revoked_agreements_refuse(
    customers: Workspace, keys: tuple[Path, bytes], tmp_path: Path, clock
) -> None:  # type: ignore[no-untyped-def]
    _, public = keys
    a = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], expires="P7D", recipient_jurisdiction="EU"
    )
    clock.advance(timedelta(days=8))
    with pytest.raises(PolicyDenied, match="expired"):
        customers.agreements.export("owner", a.id, tmp_path / "p.pkg")
    b = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
    )
    customers.agreements.revoke("owner", b.id)
    with pytest.raises(PolicyDenied, match="revoked"):
        customers.agreements.export("owner", b.id, tmp_path / "p.pkg")
    assert customers.ledger.count_by_kind().get("data.shared", 0) == 0


def test_agreement_rules(customers: Workspace, keys: tuple[Path, bytes]) -> None:
    _, public = keys
    with pytest.raises(InvalidInput, match="direct identifiers"):
        customers.agreements.create(
            "owner", "bank", public, "customers", "credit_scoring", ["email", "income"], recipient_jurisdiction="EU"
        )
    with pytest.raises(InvalidInput, match="not allowed for dataset"):
        customers.agreements.create(
            "owner", "bank", public, "customers", "research", ["income"], recipient_jurisdiction="EU"
        )
    customers.identity.add("owner", "intern", "human")
    with pytest.raises(PolicyDenied):
        customers.agreements.create(
            "intern", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
        )


def test_an_agreement_must_name_its_recipients_jurisdiction(customers: Workspace, keys: tuple[Path, bytes]) -> None:
    _, public = keys
    size = customers.ledger.head().size
    with pytest.raises(InvalidInput, match="must name its recipient's jurisdiction"):
        customers.agreements.create("owner", "bank", public, "customers", "credit_scoring", ["income"])
    with pytest.raises(InvalidInput, match="must name its recipient's jurisdiction"):
        customers.session("owner", "credit_scoring").create_agreement("bank", public, "customers", ["income"])
    assert customers.agreements.list() == [] and customers.ledger.head().size == size
    # the same recipient in the dataset's own jurisdiction needs no transfer mechanism; elsewhere it does
    a = customers.agreements.create(
        "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="EU"
    )
    assert [x.id for x in customers.agreements.list()] == [a.id]
    with pytest.raises(InvalidInput, match="is a transfer"):
        customers.agreements.create(
            "owner", "bank", public, "customers", "credit_scoring", ["income"], recipient_jurisdiction="CN"
        )
