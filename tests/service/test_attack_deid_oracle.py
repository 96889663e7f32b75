"""Attack: the de-identification routes as a guess oracle for the pseudonyms a governed read shows.

`support` reads tickets for customer support, where customer ids and emails are keyed pseudonyms,
emails in notes hashed, in memos tokenised and dates shifted. Any token holder (`support` itself, or
`nobody`, who may do nothing) sends every guess through /deid/table and /deid/text: none of what comes
back matches what the governed read showed, so no pseudonym is reversed and no guess confirmed."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.deid.operators import Anonymizer
from complai.errors import PolicyDenied
from tests.deid.test_adhoc_domain import DAY, PSEUDONYM, SUPPORT, TICKETS, TOKEN, N, email, tickets
from tests.service.api_helpers import kinds_since, size
from tests.service.conftest import bearer

API = "/api/v1"


def governed_and_tokens(
    client: TestClient, ws: Workspace, token_for: Callable[..., str]
) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    admin = ws.session("owner", "administration")
    admin.create_dataset(admin.parse_schema(TICKETS))
    ws.session("owner", SUPPORT).ingest("tickets", tickets())
    tokens = {name: bearer(token_for(name)) for name in ("support", "nobody")}
    ws.policy.add("owner", "support", "tickets", "read", SUPPORT)
    r = client.get(f"{API}/datasets/tickets/records?purpose={SUPPORT}&limit=100", headers=tokens["support"])
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert len(rows) == N and all(PSEUDONYM.fullmatch(row["customer_id"]) for row in rows)
    return rows, tokens


def test_table_route_reverses_no_pseudonym(client: TestClient, ws: Workspace, token_for: Callable[..., str]) -> None:
    rows, tokens = governed_and_tokens(client, ws, token_for)
    shown = {row["customer_id"] for row in rows} | {row["email"] for row in rows}
    guesses = [f"K-{i:04d}" for i in range(1, 1000)] + [email(i) for i in range(1, N + 1)]
    body = {"rows": [{"email": g, "q": 0} for g in guesses], "quasi": ["q"], "k": 2}
    for who, h in tokens.items():
        for purpose in ("analytics", SUPPORT):
            r = client.post(
                f"{API}/deid/table?purpose={purpose}", headers=h, json={**body, "direct_identifiers": "pseudonymize"}
            )
            assert r.status_code == 200, r.text
            made = [row["email"] for row in r.json()["rows"]]
            assert len(set(made)) == len(guesses) and all(PSEUDONYM.fullmatch(p) for p in made)
            assert not set(made) & shown, (who, purpose)
    # with the dataset's declaration (support may see it): declared columns, still not the governed keys
    table = [{"customer_id": f"K-{i:04d}", "email": email(i), "q": 0} for i in range(1, N + 1)]
    r = client.post(
        f"{API}/deid/table?purpose={SUPPORT}",
        headers=tokens["support"],
        json={"rows": table, "quasi": ["q"], "k": 2, "direct_identifiers": "pseudonymize", "dataset": "tickets"},
    )
    assert r.status_code == 200, r.text
    assert not {v for row in r.json()["rows"] for v in (row["customer_id"], row["email"])} & shown
    # nobody may not borrow the declaration: refused and recorded, as before
    before = size(ws)
    r = client.post(
        f"{API}/deid/table?purpose={SUPPORT}",
        headers=tokens["nobody"],
        json={"rows": table, "quasi": ["q"], "k": 2, "dataset": "tickets"},
    )
    assert r.status_code == 403 and kinds_since(ws, before) == ["access.denied"]
    # the governed read shows the same pseudonyms as before the attempts
    again = client.get(f"{API}/datasets/tickets/records?purpose={SUPPORT}&limit=100", headers=tokens["support"])
    assert [row["customer_id"] for row in again.json()["rows"]] == [row["customer_id"] for row in rows]


def test_text_route_hashes_and_tokens_match_nothing_governed(
    client: TestClient, ws: Workspace, token_for: Callable[..., str]
) -> None:
    rows, tokens = governed_and_tokens(client, ws, token_for)
    hashes = {p for row in rows for p in PSEUDONYM.findall(row["note"])}
    shown_tokens = {t for row in rows for t in TOKEN.findall(row["memo"])}
    assert len(hashes) == N and len(shown_tokens) == N
    frame = tickets()
    for who, h in tokens.items():
        for default, column, pattern, shown in (
            ("hash", "note", PSEUDONYM, hashes),
            ("tokenize", "memo", TOKEN, shown_tokens),
        ):
            body = {"texts": frame[column].tolist(), "default": default, "regex_only": True}
            r = client.post(f"{API}/deid/text?purpose={SUPPORT}", headers=h, json=body)
            assert r.status_code == 200, r.text
            made = {m for res in r.json()["results"] for m in pattern.findall(res["text"])}
            assert len(made) == N and not made & shown, (who, default)
    # a token is no oracle across calls either: the same guess tokenises differently each time
    body = {"texts": [f"mail {email(3)}"], "default": "tokenize", "regex_only": True}
    first, second = (
        client.post(f"{API}/deid/text?purpose={SUPPORT}", headers=tokens["nobody"], json=body).json()["results"][0][
            "text"
        ]
        for _ in range(2)
    )
    assert first != second and email(3) not in first


def test_text_route_date_offsets_are_not_the_governed_ones(
    client: TestClient, ws: Workspace, token_for: Callable[..., str]
) -> None:
    """A subject's offset from /deid/text is not its governed one. Offsets lie in [-180, 180], so an
    unrelated key agrees on a subject's offset with probability 1/361: over 30 subjects at most 4
    agreements (P(more) < 1e-7)."""
    rows, tokens = governed_and_tokens(client, ws, token_for)
    governed = Anonymizer(ws.deid_keys)
    expected = date.fromordinal(date.fromisoformat(DAY).toordinal() + governed.date_offset("")).isoformat()
    assert {row["opened"] for row in rows} == {expected}  # the governed read shifted by the governed offset
    agree = 0
    for subject in ["", "K-0054", *(f"K-{i:04d}" for i in range(1, 29))]:
        body = {"texts": [DAY], "default": "date_shift", "regex_only": True, "subject": subject}
        r = client.post(f"{API}/deid/text?purpose=analytics", headers=tokens["nobody"], json=body)
        assert r.status_code == 200, r.text
        text = r.json()["results"][0]["text"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", text), text
        offset = (date.fromisoformat(text) - date.fromisoformat(DAY)).days
        agree += offset == governed.date_offset(subject)
    assert agree <= 4, agree


def test_tokens_from_the_route_open_only_by_detokenize(
    client: TestClient, ws: Workspace, token_for: Callable[..., str]
) -> None:
    """The service has no detokenize route; a token made through /deid/text opens by a session's
    detokenize (which the policy must allow), never for nobody (refused and recorded)."""
    _, tokens = governed_and_tokens(client, ws, token_for)
    body = {"texts": [f"mail {email(5)}"], "default": "tokenize", "regex_only": True}
    made = client.post(f"{API}/deid/text?purpose={SUPPORT}", headers=tokens["nobody"], json=body).json()["results"]
    text = made[0]["text"]
    assert email(5) not in text
    assert ws.session("owner", "subject_request").detokenize(text) == f"mail {email(5)}"
    before = size(ws)
    with pytest.raises(PolicyDenied):
        ws.session("nobody", "subject_request").detokenize(text)
    assert kinds_since(ws, before) == ["access.denied"]
