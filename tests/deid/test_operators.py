"""Operators: reversible ones invert exactly (overlapping detections included); keyed ones are
consistent per key; detokenising needs the policy and is recorded."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complai.app.workspace import Workspace
from complai.deid.operators import Anonymizer, Keys
from complai.deid.recognizers import Finding
from complai.errors import InvalidInput, PolicyDenied

KEYS = Keys.from_workspace_key(b"\x01" * 32)


@st.composite
def text_with_findings(draw: st.DrawFn) -> tuple[str, list[Finding]]:
    text = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200))
    spans = draw(st.lists(st.tuples(st.integers(0, len(text)), st.integers(1, 30)), max_size=12))
    entities = ["PERSON", "CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS"]
    findings = [
        Finding(s, min(len(text), s + n), draw(st.sampled_from(entities)), draw(st.floats(0.1, 1.0)))
        for s, n in spans
        if s < len(text)
    ]
    return text, findings  # findings overlap freely


@given(text_with_findings())
@settings(max_examples=300, deadline=None)
def test_tokenize_round_trips_exactly_with_overlaps(case: tuple[str, list[Finding]]) -> None:
    text, findings = case
    a = Anonymizer(KEYS)
    out, changes = a.anonymize(text, findings, default="tokenize")
    restored, n = a.detokenize(out)
    if "[[tok:" not in text:  # a text that already holds token-shaped strings is out of scope
        assert restored == text
        assert n == len(changes)


def test_tokens_are_deterministic_bound_to_entity_and_key() -> None:
    a, b = Anonymizer(KEYS), Anonymizer(Keys.from_workspace_key(b"\x02" * 32))
    assert a.token("PERSON", "Jane Doe") == a.token("PERSON", "Jane Doe")
    assert a.token("PERSON", "Jane Doe") != a.token("CREDIT_CARD", "Jane Doe")
    forged = a.token("PERSON", "Jane Doe").replace("PERSON", "CREDIT_CARD")
    assert a.detokenize(forged) == (forged, 0)  # the entity type is bound: a moved token does not open
    other = b.token("PERSON", "Jane Doe")
    assert a.detokenize(other) == (other, 0)  # another workspace's token stays as it is


def test_keyed_pseudonyms_are_consistent_across_documents() -> None:
    a = Anonymizer(KEYS)
    doc1, _ = a.anonymize("Mail jane@example.org now", [Finding(5, 21, "EMAIL_ADDRESS")], default="hash")
    doc2, _ = a.anonymize("jane@example.org wrote", [Finding(0, 16, "EMAIL_ADDRESS")], default="hash")
    assert doc1.split()[1] == doc2.split()[0]
    assert Anonymizer(Keys.from_workspace_key(os.urandom(32))).pseudonym("EMAIL_ADDRESS", "jane@example.org") != (
        a.pseudonym("EMAIL_ADDRESS", "jane@example.org")
    )


def test_date_shift_keeps_format_and_intervals_per_subject() -> None:
    a = Anonymizer(KEYS)
    text = "opened 2024-01-10, closed 2024-03-01"
    findings = [Finding(7, 17, "DATE_TIME"), Finding(26, 36, "DATE_TIME")]
    out, _ = a.anonymize(text, findings, default="date_shift", subject="C-1")
    d1, d2 = (datetime.strptime(x, "%Y-%m-%d") for x in (out[7:17], out[26:36]))
    assert ((d2 - d1).days == 51 and out[7:17] != "2024-01-10") or a.date_offset("C-1") == 0
    assert -180 <= a.date_offset("C-2") <= 180
    assert a.apply("generalize", "DATE_TIME", "Sep 16, 1989") == "1989"


def test_mask_and_unknown_operator() -> None:
    a = Anonymizer(KEYS)
    assert a.apply("mask", "CREDIT_CARD", "5555 5555 5555 4444") == "**** **** **** 4444"
    assert a.apply("mask", "PERSON", "Jane Doe") == "**** ***"
    with pytest.raises(InvalidInput, match="unknown operator"):
        a.anonymize("x", [], default="shred")


def test_detokenize_needs_the_policy_and_is_recorded(ws: Workspace) -> None:
    owner = ws.session("owner", "subject_request")
    [(text, _)] = owner.deidentify_text(["card 5555 5555 5555 4444"], default="tokenize", regex_only=True)
    assert "5555" not in text
    ws.identity.add("owner", "ana", "service")
    with pytest.raises(PolicyDenied):
        ws.session("ana", "subject_request").detokenize(text)
    assert owner.detokenize(text) == "card 5555 5555 5555 4444"
    kinds = ws.ledger.count_by_kind()
    assert kinds["deid.text"] == 1 and kinds["deid.detokenized"] == 1 and kinds["access.denied"] == 1
    ws.policy.add("owner", "ana", "*", "detokenize", "subject_request")
    assert ws.session("ana", "subject_request").detokenize(text) == "card 5555 5555 5555 4444"
