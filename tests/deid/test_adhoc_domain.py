"""De-identifying what a caller holds (no dataset) uses keys of its own domain: no pseudonym, hash,
token or date offset it gives can be matched against what a governed read shows, so the ad-hoc
operators are no oracle for guesses about governed pseudonyms. Governed reads keep their pseudonyms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import date

import pandas as pd
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from complai.app.workspace import Workspace
from complai.deid.operators import Anonymizer, Keys
from complai.errors import PolicyDenied

SUPPORT = "customer_support"
PSEUDONYM = re.compile(r"<[A-Z_]+_[0-9a-f]{12}>")
TOKEN = re.compile(r"\[\[tok:[A-Z_]+:[A-Za-z0-9_-]+\]\]")
DAY = "2020-01-01"
N = 40

TICKETS = {
    "name": "tickets",
    "subject_column": "customer_id",
    "jurisdiction": "EU",
    "retention": "P30D",
    "purposes": {SUPPORT: "gdpr.contract", "marketing": "gdpr.consent"},
    "fields": [
        {"name": "customer_id", "type": "string", "category": "user.unique_id", "identifier": "direct"},
        {"name": "email", "type": "string", "category": "user.contact.email", "identifier": "direct"},
        {"name": "note", "type": "string", "category": "user.behavior"},
        {"name": "memo", "type": "string", "category": "user.behavior"},
        {"name": "opened", "type": "string", "category": "user.behavior"},
    ],
    # what support sees: ids and emails as keyed pseudonyms, emails in notes hashed, in memos
    # tokenised, dates shifted
    "deidentify": {
        SUPPORT: {
            "pseudonymize": ["customer_id", "email"],
            "text": {"note": "hash", "memo": "tokenize", "opened": "date_shift"},
        }
    },
}


def email(i: int) -> str:
    return f"user{i:04d}@example.org"


def tickets(n: int = N) -> pd.DataFrame:
    ids = [f"K-{i:04d}" for i in range(1, n + 1)]
    return pd.DataFrame(
        {
            "customer_id": ids,
            "email": [email(i) for i in range(1, n + 1)],
            "note": [f"Write to {email(i)} today" for i in range(1, n + 1)],
            "memo": [f"Reply to {email(i)}" for i in range(1, n + 1)],
            "opened": [DAY] * n,
        }
    )


def with_tickets(ws: Workspace, n: int = N) -> Workspace:
    """The tickets dataset, ingested by the owner; `support` may read it for customer support and
    `nobody` may do nothing at all."""
    admin = ws.session("owner", "administration")
    admin.create_dataset(admin.parse_schema(TICKETS))
    ws.session("owner", SUPPORT).ingest("tickets", tickets(n))
    for name in ("support", "nobody"):
        ws.identity.add("owner", name, "service")
    ws.policy.add("owner", "support", "tickets", "read", SUPPORT)
    return ws


def shifted(day: str, offset: int) -> str:
    return date.fromordinal(date.fromisoformat(day).toordinal() + offset).isoformat()


def days_between(a: str, b: str) -> int:
    return (date.fromisoformat(b) - date.fromisoformat(a)).days


@pytest.fixture
def governed(ws: Workspace) -> pd.DataFrame:
    with_tickets(ws)
    return ws.session("support", SUPPORT).read("tickets")


def test_the_governed_read_is_what_the_attack_starts_from(governed: pd.DataFrame) -> None:
    assert len(governed) == N and governed["customer_id"].str.fullmatch(PSEUDONYM).all()
    assert governed["email"].str.fullmatch(PSEUDONYM).all()
    assert all(len(PSEUDONYM.findall(v)) == 1 for v in governed["note"])
    assert all(len(TOKEN.findall(v)) == 1 for v in governed["memo"])


def test_table_pseudonyms_reverse_no_governed_pseudonym(ws: Workspace, governed: pd.DataFrame) -> None:
    """The attack: every guess pseudonymised ad hoc, as `support` or as `nobody`, for any purpose."""
    guesses = [f"K-{i:04d}" for i in range(1, N + 1)] + [email(i) for i in range(1, N + 1)]
    frame = pd.DataFrame({"email": guesses, "q": 0})
    shown = set(governed["customer_id"]) | set(governed["email"])
    for principal in ("support", "nobody", "owner"):
        for purpose in (SUPPORT, "analytics"):
            out, report = ws.session(principal, purpose).deidentify_table(
                frame, quasi=["q"], k=2, direct_identifiers="pseudonymize"
            )
            assert report.direct_identifiers["pseudonymized"] == ["email"]
            assert out["email"].str.fullmatch(PSEUDONYM).all() and out["email"].nunique() == len(guesses)
            assert not set(out["email"]) & shown, (principal, purpose)
    # the governed pseudonyms themselves are what they were: a second read shows the same ones
    again = ws.session("support", SUPPORT).read("tickets")
    assert again["customer_id"].tolist() == governed["customer_id"].tolist()


def test_table_pseudonyms_by_a_dataset_schema_are_ad_hoc_too(ws: Workspace, governed: pd.DataFrame) -> None:
    """Naming the dataset lends its declaration (to those who may see it), never its governed keys."""
    frame = tickets()[["customer_id", "email"]].assign(q=0)
    out, _ = ws.session("support", SUPPORT).deidentify_table(
        frame, "tickets", quasi=["q"], k=2, direct_identifiers="pseudonymize"
    )
    assert out["customer_id"].str.fullmatch(PSEUDONYM).all()
    assert not set(out["customer_id"]) & set(governed["customer_id"])
    assert not set(out["email"]) & set(governed["email"])


def test_ad_hoc_pseudonyms_are_stable_per_principal_and_purpose(ws: Workspace) -> None:
    frame = pd.DataFrame({"email": ["a@example.org", "b@example.org", "a@example.org", "b@example.org"], "q": 0})
    ws.identity.add("owner", "ana", "service")

    def run(principal: str, purpose: str) -> list[str]:
        out, _ = ws.session(principal, purpose).deidentify_table(
            frame, quasi=["q"], k=2, direct_identifiers="pseudonymize"
        )
        return list(out["email"])

    first = run("ana", "analytics")
    assert first[0] == first[2] != first[1] == first[3]  # consistent within one call
    assert run("ana", "analytics") == first  # and across calls of the same principal and purpose
    assert not set(run("ana", "research")) & set(first)
    assert not set(run("owner", "analytics")) & set(first)


def test_text_hashes_match_no_governed_hash(ws: Workspace, governed: pd.DataFrame) -> None:
    shown = {p for v in governed["note"] for p in PSEUDONYM.findall(v)}
    notes = tickets()["note"].tolist()
    for principal in ("support", "nobody"):
        session = ws.session(principal, SUPPORT)
        results = session.deidentify_text(notes, default="hash", regex_only=True)
        made = [PSEUDONYM.findall(text) for text, _ in results]
        assert all(len(m) == 1 for m in made)
        assert not {p for m in made for p in m} & shown, principal
        # the same principal and purpose hash alike in a later call
        assert [t for t, _ in session.deidentify_text(notes, default="hash", regex_only=True)] == [
            t for t, _ in results
        ]


def test_tokens_match_no_governed_token_nor_each_other_across_calls(ws: Workspace, governed: pd.DataFrame) -> None:
    shown = {t for v in governed["memo"] for t in TOKEN.findall(v)}
    memos = tickets()["memo"].tolist()
    session = ws.session("nobody", SUPPORT)
    first = [TOKEN.findall(text) for text, _ in session.deidentify_text(memos, default="tokenize", regex_only=True)]
    second = [TOKEN.findall(text) for text, _ in session.deidentify_text(memos, default="tokenize", regex_only=True)]
    made = {t for m in first for t in m}
    assert len(made) == N and not made & shown
    # a guess tokenised in a later call does not confirm an earlier token of the same value
    assert not made & {t for m in second for t in m}
    # within one call the same value gets the same token
    [(text, _)] = session.deidentify_text([f"{email(1)} and {email(1)}"], default="tokenize", regex_only=True)
    one, two = TOKEN.findall(text)
    assert one == two


def test_date_offsets_are_not_the_governed_ones(ws: Workspace, governed: pd.DataFrame) -> None:
    """Governed reads shift dates by the workspace's offset (here for subject ""); the ad-hoc offset of
    a subject is another. Offsets lie in [-180, 180], so an unrelated key agrees on a subject's offset
    with probability 1/361: over 100 subjects at most 5 agreements (P(more) < 1e-6)."""
    governed_offsets = Anonymizer(ws.deid_keys)
    # the governed read did shift by the governed key's offset for subject ""
    assert set(governed["opened"]) == {shifted(DAY, governed_offsets.date_offset(""))}
    session = ws.session("nobody", SUPPORT)
    agree = 0
    subjects = [""] + [f"K-{i:04d}" for i in range(1, 100)]
    for subject in subjects:
        [(text, _)] = session.deidentify_text([f"opened {DAY}"], default="date_shift", regex_only=True, subject=subject)
        offset = days_between(DAY, text.removeprefix("opened "))
        assert -180 <= offset <= 180
        agree += offset == governed_offsets.date_offset(subject)
    assert agree <= 5, agree
    # the ad-hoc offset of a subject is stable for the principal and purpose: intervals survive
    [(text, _)] = session.deidentify_text(
        ["opened 2020-01-01, closed 2020-03-01"], default="date_shift", regex_only=True, subject="K-0054"
    )
    a, b = re.findall(r"\d{4}-\d{2}-\d{2}", text)
    assert days_between(a, b) == 60


def test_detokenize_opens_tokens_only_in_their_own_domain(ws: Workspace, governed: pd.DataFrame) -> None:
    ws.identity.add("owner", "ana", "service")
    [(made, _)] = ws.session("nobody", SUPPORT).deidentify_text(
        [f"mail {email(7)}"], default="tokenize", regex_only=True
    )
    assert email(7) not in made
    with pytest.raises(PolicyDenied):
        ws.session("nobody", SUPPORT).detokenize(made)
    assert ws.session("owner", SUPPORT).detokenize(made) == f"mail {email(7)}"
    ws.policy.add("owner", "ana", "*", "detokenize", "subject_request")
    # whoever may detokenize opens it, for the purpose it is allowed (the CLI's defaults differ)
    assert ws.session("ana", "subject_request").detokenize(made) == f"mail {email(7)}"
    # the tokens a governed read shows open as before, in their own domain
    memo = governed["memo"].iloc[0]
    assert ws.session("ana", "subject_request").detokenize(memo) == f"Reply to {email(1)}"
    # a token made under the governed key with an ad-hoc token's shape (a nonce in front) opens nowhere
    blob = TOKEN.findall(made)[0].split(":")[2].rstrip("]")
    raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    nonce = raw[:16]
    sealed = nonce + AESSIV(ws.deid_keys.token).encrypt(email(7).encode(), [b"EMAIL_ADDRESS", nonce])
    forged = f"[[tok:EMAIL_ADDRESS:{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}]]"
    assert ws.session("ana", "subject_request").detokenize(forged) == forged


# --- the key domains themselves (pure) ------------------------------------------------------------------

KEY = bytes(range(32))


def test_governed_pseudonyms_are_unchanged() -> None:
    """Known answer, computed here from the specification (HKDF-SHA256 of the workspace key with info
    complai/deid/pseudonym, then HMAC-SHA256 of label NUL value): the governed domain is as it was."""
    pk = HKDF(hashes.SHA256(), 32, salt=None, info=b"complai/deid/pseudonym").derive(KEY)
    expected = "<ID_" + hmac.digest(pk, b"ID\x00K-0001", hashlib.sha256).hex()[:12] + ">"
    assert Anonymizer(Keys.from_workspace_key(KEY)).pseudonym("ID", "K-0001") == expected


def test_domains_never_share_a_key() -> None:
    governed = Keys.from_workspace_key(KEY)
    domains = [governed, governed.adhoc("ana", "analytics"), governed.adhoc("bob", "analytics")]
    domains += [governed.adhoc("ana", "research"), governed.adhoc("a", "naanalytics"), governed.adhoc("an", "a")]
    for kind in ("pseudonym", "date_shift"):
        keys = [getattr(d, kind) for d in domains]
        assert len(set(keys)) == len(keys), kind
    # one ad-hoc token key (each call binds its tokens to a nonce), apart from the governed one
    assert governed.adhoc("ana", "analytics").token == governed.adhoc("bob", "research").token != governed.token


def test_tokens_open_only_under_their_domain() -> None:
    keys = Keys.from_workspace_key(KEY)
    governed = Anonymizer(keys)
    adhoc = Anonymizer.adhoc(keys, "ana", "analytics")
    g, a = governed.token("PERSON", "Jane Doe"), adhoc.token("PERSON", "Jane Doe")
    assert g != a
    assert governed.detokenize(a) == (a, 0) and adhoc.detokenize(g) == (g, 0)
    assert adhoc.detokenize(f"{g} {a}", governed) == ("Jane Doe Jane Doe", 2)  # each under its own key
    assert Anonymizer.adhoc(Keys.from_workspace_key(bytes(32)), "ana", "analytics").detokenize(a) == (a, 0)
    # a later call (another nonce, principal, purpose) opens it, but makes another token of the value
    later = Anonymizer.adhoc(keys, "bob", "research")
    assert later.detokenize(a) == ("Jane Doe", 1) and later.token("PERSON", "Jane Doe") != a
    moved = a.replace("PERSON", "CREDIT_CARD")
    assert later.detokenize(moved) == (moved, 0)
    # the nonce is bound: another call's nonce in front of this ciphertext does not open
    blob = a.split(":")[2].rstrip("]")
    raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    swapped = "[[tok:PERSON:" + base64.urlsafe_b64encode(bytes(16) + raw[16:]).decode().rstrip("=") + "]]"
    assert later.detokenize(swapped) == (swapped, 0)
