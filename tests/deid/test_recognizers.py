"""Recognizers: validators against published examples; detection quality on a held-out corpus."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complai.datasets.customer_service import generate, luhn_check_digit
from complai.deid.analyzer import TextAnalyzer
from complai.deid.recognizers import Finding, card_brand, cn_resident_id_ok, find_patterns, iban_ok, luhn_ok, resolve

# examples from the IBAN registry and card-scheme test numbers (public)
VALID_IBANS = [
    "GB82 WEST 1234 5698 7654 32",
    "DE89 3704 0044 0532 0130 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91ABNA0417164300",
    "CH9300762011623852957",
    "NO9386011117947",
    "MT84MALT011000012345MTLCAST001S",
]


def _with_check(body: str) -> str:  # the corpus generator's own Luhn implementation, not the recognizer's
    return body + luhn_check_digit(body)


VALID_CARDS = {
    "4111111111111111": "visa",
    "4222222222222": "visa",
    _with_check("400000000000000000"): "visa",  # 19 digits
    "5555555555554444": "mastercard",
    "2221000000000009": "mastercard",
    _with_check("272099272099272"): "mastercard",
    "378282246310005": "amex",
    "6011111111111117": "discover",
    "6759649826438453": "maestro",
    _with_check("50180000000"): "maestro",  # 12 digits
    "3530111333300000": "jcb",
}


@pytest.mark.parametrize("value", VALID_IBANS)
def test_valid_ibans(value: str) -> None:
    assert iban_ok(value)
    assert [f.entity for f in find_patterns(f"pay to {value} today", ["IBAN_CODE"])] == ["IBAN_CODE"]


def test_invalid_ibans() -> None:
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")  # check digits off
    assert not iban_ok("DE89 3704 0044 0532 0130 0")  # wrong length for DE
    assert not iban_ok("XX89 3704 0044 0532 0130 00")  # no such country


def test_two_ibans_in_one_sentence() -> None:
    text = "from DE89 3704 0044 0532 0130 00 GB82 WEST 1234 5698 7654 32 and back"
    found = find_patterns(text, ["IBAN_CODE"])
    assert [text[f.start : f.end] for f in found] == ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"]


@pytest.mark.parametrize(("number", "brand"), sorted(VALID_CARDS.items()))
def test_cards_of_every_range(number: str, brand: str) -> None:
    assert luhn_ok(number) and card_brand(number) == brand
    assert [f.entity for f in find_patterns(f"card {number}.", ["CREDIT_CARD"])] == ["CREDIT_CARD"]


def test_card_rejections() -> None:
    assert not find_patterns("card 4111111111111112", ["CREDIT_CARD"])  # Luhn fails
    assert not find_patterns("order 1234567890123452", ["CREDIT_CARD"])  # Luhn ok, no brand starts with 1
    assert not find_patterns("card 4111 1111-1111 1111", ["CREDIT_CARD"])  # mixed separators


def test_china_resident_id_and_mobile() -> None:
    assert cn_resident_id_ok("11010519491231002X")  # the standard's worked example
    assert not cn_resident_id_ok("110105194912310021")
    assert not cn_resident_id_ok("11010519491331002X")  # month 13
    text = "身份证 11010519491231002X，手机 +86 13812345678"
    assert {f.entity for f in find_patterns(text, ["CN_RESIDENT_ID", "CN_MOBILE"])} == {"CN_RESIDENT_ID", "CN_MOBILE"}


def test_dates_with_abbreviated_months_and_resolution() -> None:
    text = "born Sep 16, 1989 and moved on 3 Feb 2001"
    assert [text[f.start : f.end] for f in find_patterns(text, ["DATE_TIME"])] == ["Sep 16, 1989", "3 Feb 2001"]
    overlapping = [Finding(0, 10, "A", 0.5), Finding(5, 15, "B", 0.9), Finding(16, 20, "C", 0.5)]
    assert resolve(overlapping) == [Finding(5, 15, "B", 0.9), Finding(16, 20, "C", 0.5)]


def score(analyzer: TextAnalyzer, seed: int, n: int) -> tuple[dict[str, tuple[float, float]], float]:
    msgs = generate(n, seed=seed)
    tp, fp, fn = Counter(), Counter(), Counter()
    for m, found in zip(msgs, analyzer.analyze_batch([m.text for m in msgs]), strict=True):
        got = {(f.start, f.end, f.entity) for f in found}
        want = set(m.spans)
        for g in got:
            (tp if g in want else fp)[g[2]] += 1
        for w in want - got:
            fn[w[2]] += 1
    per = {}
    for e in set(tp) | set(fn):
        per[e] = (tp[e] / max(1, tp[e] + fp[e]), tp[e] / max(1, tp[e] + fn[e]))
    t, f, n_ = sum(tp.values()), sum(fp.values()), sum(fn.values())
    p, r = t / (t + f), t / (t + n_)
    return per, 2 * p * r / (p + r)


# Floors from benchmarks/deid.py (tuned on seeds 7 and 11; this is seed 2027, never looked at while
# tuning): patterns measured at 1.00 there, PERSON P 0.93 / R 0.82, micro-F1 0.98. The floors leave
# room for sampling variation on 400 messages (about 150 names: a standard error near 0.03).
def test_detection_quality_on_a_held_out_corpus() -> None:
    per, micro = score(TextAnalyzer(), seed=2027, n=400)
    for entity, (p, r) in per.items():
        if entity == "PERSON":
            assert p >= 0.80 and r >= 0.70, (entity, p, r)
        else:
            assert p >= 0.97 and r >= 0.97, (entity, p, r)
    assert micro >= 0.95


def test_regex_only_mode_needs_no_spacy_and_finds_no_names() -> None:
    per, _ = score(TextAnalyzer(regex_only=True), seed=2027, n=200)
    assert per["PERSON"][1] == 0.0
    assert per["CREDIT_CARD"] == (1.0, 1.0)


# --- email addresses: every RFC 5322 atext character, RFC 6531 UTF-8 local parts and IDN domains -------

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
UTF8 = "äöüßéèçñøåłšžčőűğışαβγδλμπσωабвгдежзийклмнопрстуфхцчшщыэюя中文用户例子测试日本語한국어संपर्कडाटामेल"
TLDS = ["com", "org", "de", "co.uk", "museum", "xn--p1ai", "рф", "中国", "भारत", "δοκιμή"]
EMAILS = [
    "anna.müller3@example.com",
    "j.o'neill+bank@example.com",
    "用户@例子.广告",
    "संपर्क@डाटामेल.भारत",
    "Δοκιμή@παράδειγμα.δοκιμή",
    "jane@bücher.de",
    "user@xn--bcher-kva.de",
    "a!#$%&'*+/=?^_`{|}~-b@example.org",
    "{tom}@example.net",
    "o'brien@x.ie",
    # obsolete and rarer RFC 5322 forms: every one is replaced whole, nothing of the local part is left
    "trailing.@example.com",
    "john..doe@example.com",
    ".leading@example.com",
    '"quoted local"@example.com',
    '"a\\"b"@example.com',
    "admin@[192.168.1.1]",
    "user@localhost",
    "x@y.z",
    "ABC@DEF.GHI",
    "jane@example.büro",
    "jo\u200bhn@exa\u00admple.com",  # invisible characters inside
]


def random_email(rng: random.Random) -> str:
    alphabet = ATEXT + UTF8

    def atom(chars: str, n: int) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    local = ".".join(atom(alphabet, rng.randint(1, 8)) for _ in range(rng.randint(1, 3)))
    labels = [
        atom("abcdefghijklmnopqrstuvwxyz0123456789" + UTF8, 1)
        + atom("abcdefghijklmnopqrstuvwxyz0123456789-" + UTF8, rng.randint(0, 6)).rstrip("-")
        for _ in range(rng.randint(1, 2))
    ]
    return f"{local}@{'.'.join(labels)}.{rng.choice(TLDS)}"


@pytest.mark.parametrize("address", EMAILS)
@pytest.mark.parametrize("regex_only", [True, False])
def test_whole_email_address_is_replaced(address: str, regex_only: bool) -> None:
    from complai.deid.operators import Anonymizer, Keys

    text = f"Please write to {address} today."
    [found] = TextAnalyzer(regex_only=regex_only).analyze_batch([text])
    out, _ = Anonymizer(Keys.from_workspace_key(b"k" * 32)).anonymize(text, found, default="replace")
    assert out == "Please write to <EMAIL_ADDRESS> today.", (address, out)


@given(st.integers(0, 2**32 - 1), st.sampled_from(["Contact: {} today.", "({})", "mail {}, thanks", "'{}'", "{}"]))
@settings(max_examples=300, deadline=None)
def test_generated_email_addresses_are_found_whole(seed: int, template: str) -> None:
    address = random_email(random.Random(seed))
    text = template.format(address)
    spans = [text[f.start : f.end] for f in find_patterns(text, ["EMAIL_ADDRESS"])]
    assert spans == [address]
