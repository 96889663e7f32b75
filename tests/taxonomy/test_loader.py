from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from complai.errors import InvalidInput
from complai.taxonomy import load_taxonomy
from complai.taxonomy.loader import KINDS, parse_terms


def test_bundled_taxonomy_has_the_documented_vocabulary() -> None:
    t = load_taxonomy()
    for key in ("user.contact.email", "user.financial.account", "user.health"):
        t.category(key)
    for key in ("credit_scoring", "train_ai_system", "marketing", "fraud_detection"):
        t.purpose(key)
    for key in ("customer", "patient", "employee"):
        t.get("data_subjects", key)
    gdpr = [k for k in t.keys("legal_bases") if k.startswith("gdpr.") and not k.startswith("gdpr.art9")]
    assert len(gdpr) == 6  # the six lawful bases of Art. 6(1)
    assert {"EU", "US-CA", "CN"} <= set(t.keys("jurisdictions"))


def test_special_categories_inherit() -> None:
    t = load_taxonomy()
    assert t.is_special("user.health.diagnosis")
    assert t.is_special("user.demographic.race_ethnicity")
    assert not t.is_special("user.contact.email")


def test_unknown_key_is_a_clear_error_with_suggestion() -> None:
    with pytest.raises(InvalidInput, match=r"unknown data category 'user\.contact\.emial' \(did you mean"):
        load_taxonomy().category("user.contact.emial")
    with pytest.raises(InvalidInput, match="unknown purpose"):
        load_taxonomy().purpose("mind_reading")


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"key": "a", "name": "A", "colour": "red"}], "unknown attribute"),
        ([{"key": "a.b", "name": "AB"}], "before \\(or without\\) its parent"),
        ([{"key": "a", "name": "A"}, {"key": "a", "name": "again"}], "duplicate key"),
        ([{"key": "a b", "name": "A"}], "malformed key"),
        ([{"name": "no key"}], "needs 'key' and 'name'"),
    ],
)
def test_parser_rejects_malformed_documents(items: list[dict[str, str]], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_terms("data_categories", {"kind": "data_categories", "items": items}, "test.yaml")


def test_loading_from_a_directory_validates_every_file(tmp_path: Path) -> None:
    for kind in KINDS:
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump({"kind": kind, "items": [{"key": "x", "name": "X"}]}))
    assert load_taxonomy(tmp_path).keys("data_uses") == ["x"]
    (tmp_path / "data_uses.yaml").write_text("kind: data_uses\nitems: [{key: x, name: X, extra: 1}]\n")
    with pytest.raises(InvalidInput, match="unknown attribute"):
        load_taxonomy(tmp_path)
