"""complai's own PII recognizers: patterns with validators, pure and without spaCy.

They replace Presidio's where its users find gaps: payment cards of every current range (Mastercard
2221-2720, 19-digit Visa, Maestro 12-19 digits) with Luhn; IBANs of every registry country with
length and mod-97, several in one sentence; phone numbers through libphonenumber; email addresses
with every RFC 5322 atext character and RFC 6531 UTF-8 local parts and domains; dates with
abbreviated months; US addresses; China's resident identity number (ISO 7064 MOD 11-2) and mobile
numbers. Each finding is a `Finding(start, end, entity, score)`.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import phonenumbers


@dataclass(frozen=True, order=True)
class Finding:
    start: int
    end: int
    entity: str
    score: float = 1.0
    source: str = "pattern"


# --- validators ------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The brand whose number ranges and lengths admit `digits` (ISO/IEC 7812 IINs as published)."""
    n = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "mastercard"
    if two in (34, 37) and n == 15:
        return "amex"
    if (digits.startswith("6011") or digits.startswith("65") or 644 <= int(digits[:3]) <= 649) and 16 <= n <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "jcb"
    if digits.startswith("62") and 16 <= n <= 19:
        return "unionpay"
    if (digits.startswith("36") or digits.startswith("38") or 300 <= int(digits[:3]) <= 305) and 14 <= n <= 19:
        return "diners"
    if (two == 50 or 56 <= two <= 69 or 500000 <= six <= 509999) and 12 <= n <= 19:
        return "maestro"
    return None


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(value: str) -> bool:
    value = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(value[:2]) != len(value) or not value[2:4].isdigit() or not value.isalnum():
        return False
    rearranged = value[4:] + value[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CN_CHECK = "10X98765432"


def cn_resident_id_ok(value: str) -> bool:
    value = value.upper()
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        datetime.strptime(value[6:14], "%Y%m%d")
    except ValueError:
        return False
    return CN_CHECK[sum(int(d) * w for d, w in zip(value[:17], CN_WEIGHTS, strict=True)) % 11] == value[17]


def ssn_ok(value: str) -> bool:
    area, group, serial = value.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


# --- pattern recognizers ---------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d])")
_IBAN_START = re.compile(r"\b[A-Z]{2}\d{2}")
# Email addresses (RFC 5322 local parts: dot-atoms with every atext character, the obsolete forms with
# leading, trailing or repeated dots, and quoted strings; RFC 6531 UTF-8 local parts and internationalised
# domain names, as U-labels or as xn-- A-labels; domain literals `[192.0.2.1]`, dotless domains such as
# `localhost`). Non-ASCII means any non-ASCII character but white space and the punctuation that delimits
# text (quotes, dashes, CJK full stops and commas), so an address ends where the sentence around it
# resumes. The last domain label starts with a letter (`pkg@1.2.3` is a version, not an address).
_U = (
    r"[^\x00-\x7f\s\u00a0-\u00bf\u00d7\u00f7\u2000-\u200b\u200e-\u206f\u3000-\u303f"
    r"\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)
# invisible characters (soft hyphen, zero-width space, word joiner) inside an address are part of it: an
# address split by one is still the address
_INVISIBLE = r"[\u00ad\u200b\u2060]"
_ATEXT = rf"(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]|{_U}|{_INVISIBLE})"
_LABEL = rf"(?:[A-Za-z0-9_-]|{_U}|{_INVISIBLE})+"
_EMAIL = re.compile(
    rf"(?:(?<![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-])(?:{_ATEXT}|\.)+|\"(?:[^\"\\\r\n]|\\.)*\")@"
    rf"(?:(?:{_LABEL}\.)*(?:[A-Za-z]|{_U})(?:[A-Za-z0-9-]|{_U})*|\[[^\[\]\\\s]+\])"
)
_QUOTES = {"'": "'", "`": "`", "{": "}", "|": "|"}
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'，。]+", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f:]{0,39}[0-9A-Fa-f](?![:\w])")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_CN_ID = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dXx])")
_CN_MOBILE = re.compile(r"(?:\+86[ -]?)?(?<!\d)1[3-9]\d{9}(?!\d)")
_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DATES = [
    (re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)"), ("%Y-%m-%d",)),
    (re.compile(r"(?<![\d/])\d{1,2}/\d{1,2}/\d{4}(?![\d/])"), ("%d/%m/%Y", "%m/%d/%Y")),
    (re.compile(rf"\b{_MONTHS} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b"), None),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)? {_MONTHS},? \d{{4}}\b"), None),
]
# US postal addresses: house number, capitalised street words (any suffix), optional unit, city,
# two-letter state and ZIP; and military addresses (PSC/Unit ... Box, ships; APO/FPO/DPO).
_ADDRESS = re.compile(
    r"\b(?:\d{1,6}[A-Z]? [A-Z][A-Za-z'.-]+(?: [A-Z][A-Za-z'.-]+){0,4}(?:,? (?:Apt\.|Suite|Unit) \d+)?"
    r"|(?:PSC|Unit) \d{3,5},? Box \d{3,5}|USNS [A-Z][a-z]+|USNV [A-Z][a-z]+|USS [A-Z][a-z]+|USCGC [A-Z][a-z]+)"
    r",? (?:[A-Z][A-Za-z'-]+(?: [A-Z][A-Za-z'-]+){0,3},? |(?:APO|FPO|DPO) )[A-Z]{2} \d{5}(?:-\d{4})?\b"
)


def _cards(text: str) -> Iterable[Finding]:
    for m in _CARD.finditer(text):
        raw = m.group()
        digits = raw.replace(" ", "").replace("-", "")
        seps = {c for c in raw if not c.isdigit()}
        if len(seps) <= 1 and 12 <= len(digits) <= 19 and luhn_ok(digits) and card_brand(digits):
            yield Finding(m.start(), m.end(), "CREDIT_CARD", 1.0)


def _ibans(text: str) -> Iterable[Finding]:
    pos = 0
    while True:
        m = _IBAN_START.search(text, pos)
        if not m:
            return
        want = IBAN_LENGTHS.get(m.group()[:2])
        found = False
        if want:
            # consume exactly the country's length of alphanumerics, allowing single spaces between
            i, count, end = m.start(), 0, m.start()
            while i < len(text) and count < want:
                ch = text[i]
                if ch.isalnum() and ch.isascii():
                    count += 1
                    end = i + 1
                elif ch == " " and i + 1 < len(text) and text[i + 1].isalnum() and count < want:
                    pass
                else:
                    break
                i += 1
            nxt = text[end : end + 1]
            if count == want and not (nxt.isalnum() and nxt.isascii()) and iban_ok(text[m.start() : end]):
                yield Finding(m.start(), end, "IBAN_CODE", 1.0)
                pos, found = end, True
        if not found:
            pos = m.start() + 1


def _emails(text: str) -> Iterable[Finding]:
    for m in _EMAIL.finditer(text):
        start = m.start()
        # an address quoted in the sentence ('jane@example.com'): the opening quote is not part of it
        closing = _QUOTES.get(text[start])
        if closing is not None and text[m.end() : m.end() + 1] == closing and text[start + 1] != "@":
            start += 1
        yield Finding(start, m.end(), "EMAIL_ADDRESS", 1.0)


def _simple(
    regex: re.Pattern[str], entity: str, check: Callable[[str], bool] | None = None, score: float = 1.0
) -> Callable[[str], Iterable[Finding]]:
    def find(text: str) -> Iterable[Finding]:
        for m in regex.finditer(text):
            value = m.group()
            if check is None or check(value):
                yield Finding(m.start(), m.end(), entity, score)

    return find


def _ip_ok(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _urls(text: str) -> Iterable[Finding]:
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?)]}":
            end -= 1
        yield Finding(m.start(), end, "URL", 0.9)


def _dates(text: str) -> Iterable[Finding]:
    for regex, formats in _DATES:
        for m in regex.finditer(text):
            value = m.group()
            if formats is None or any(_parses(value, f) for f in formats):
                yield Finding(m.start(), m.end(), "DATE_TIME", 0.85)


def _parses(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


PHONE_REGIONS = ("US", "GB", "DE", "FR", "CN")


def _phones(text: str) -> Iterable[Finding]:
    seen: set[tuple[int, int]] = set()
    for region in PHONE_REGIONS:
        # POSSIBLE, not VALID: numbers from unassigned ranges are still someone's data in a message
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
            span = (match.start, match.end)
            if sum(ch.isdigit() for ch in match.raw_string) < 7:  # prices, counts, short codes
                continue
            if span not in seen:
                seen.add(span)
                yield Finding(match.start, match.end, "PHONE_NUMBER", 0.8)


PATTERN_RECOGNIZERS: dict[str, Callable[[str], Iterable[Finding]]] = {
    "CREDIT_CARD": _cards,
    "IBAN_CODE": _ibans,
    "EMAIL_ADDRESS": _emails,
    "URL": _urls,
    "IP_ADDRESS": lambda t: [
        *_simple(_IPV4, "IP_ADDRESS", _ip_ok)(t),
        *_simple(_IPV6, "IP_ADDRESS", _ip_ok)(t),
    ],
    "US_SSN": _simple(_SSN, "US_SSN", ssn_ok, 0.9),
    "CN_RESIDENT_ID": _simple(_CN_ID, "CN_RESIDENT_ID", cn_resident_id_ok),
    "CN_MOBILE": _simple(_CN_MOBILE, "CN_MOBILE", score=0.95),
    "DATE_TIME": _dates,
    "LOCATION": _simple(_ADDRESS, "LOCATION", score=0.85),
    "PHONE_NUMBER": _phones,
}
ENTITIES = [*PATTERN_RECOGNIZERS, "PERSON"]


def resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Non-overlapping findings: where two overlap, keep the higher score, then the longer."""
    ranked = sorted(findings, key=lambda f: (-f.score, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    # the kept spans, disjoint and sorted by (start, end), so their ends are sorted too: a new finding
    # overlaps one of them iff it overlaps the last one starting before it ends (O(n log n), not O(n^2),
    # which a long single line full of findings made minutes)
    spans: list[tuple[int, int]] = []
    for f in ranked:
        i = bisect.bisect_left(spans, (f.end, -1))
        if i and spans[i - 1][1] > f.start:
            continue
        bisect.insort(spans, (f.start, f.end))
        kept.append(f)
    return sorted(kept)


def find_patterns(text: str, entities: Iterable[str] | None = None) -> list[Finding]:
    """Every pattern finding in `text` (overlaps not yet resolved)."""
    wanted = set(entities) if entities is not None else set(PATTERN_RECOGNIZERS)
    out: list[Finding] = []
    for entity, recognizer in PATTERN_RECOGNIZERS.items():
        if entity in wanted:
            out.extend(recognizer(text))
    return out
