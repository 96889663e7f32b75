"""A seeded generator of labelled customer-service messages with exact PII spans.

Each message has an intent label (lost card, loan inquiry, fraud report, address change, complaint,
balance question, ...) and the character spans of every piece of personal data it contains, typed as
the analyzer names them. Values come from Faker (names, addresses, dates, emails, IPs, URLs) and from
complai's own generators for numbers with check digits (payment cards of every current range with
Luhn, IBANs with mod-97, China's resident identity numbers with ISO 7064 MOD 11-2), so detection can
be scored exactly. Different seeds give disjoint corpora for tuning and for held-out tests.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

INTENTS = [
    "lost_card",
    "loan_inquiry",
    "fraud_report",
    "address_change",
    "complaint",
    "balance_question",
    "account_closure",
    "payment_dispute",
]


@dataclass
class Message:
    text: str
    intent: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def values(self) -> list[tuple[str, str]]:
        return [(self.text[s:e], t) for s, e, t in self.spans]


# --- numbers with check digits ---------------------------------------------------------------------


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card_number(rng: random.Random) -> str:
    kind = rng.choice(["visa16", "visa19", "mc5", "mc2", "amex", "maestro"])
    if kind == "visa16":
        prefix, length = "4", 16
    elif kind == "visa19":
        prefix, length = "4", 19
    elif kind == "mc5":
        prefix, length = str(rng.randint(51, 55)), 16
    elif kind == "mc2":
        prefix, length = str(rng.randint(2221, 2720)), 16
    elif kind == "amex":
        prefix, length = rng.choice(["34", "37"]), 15
    else:
        prefix, length = rng.choice(["5018", "5020", "5038", "6304", "6759", "6761", "6763"]), rng.randint(12, 19)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + luhn_check_digit(body)
    style = rng.random()
    if style < 0.4 and length == 16:
        return " ".join(number[i : i + 4] for i in range(0, 16, 4))
    if style < 0.55 and length == 16:
        return "-".join(number[i : i + 4] for i in range(0, 16, 4))
    return number


IBAN_LENGTHS = {
    "DE": 22,
    "GB": 22,
    "FR": 27,
    "ES": 24,
    "IT": 27,
    "NL": 18,
    "BE": 16,
    "CH": 21,
    "AT": 20,
    "PL": 28,
    "SE": 24,
    "IE": 22,
    "PT": 25,
    "DK": 18,
    "FI": 18,
    "NO": 15,
    "LU": 20,
}


def iban_check_digits(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return f"{98 - int(numeric) % 97:02d}"


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_LENGTHS))
    bban = "".join(rng.choice(string.digits) for _ in range(IBAN_LENGTHS[country] - 4))
    value = country + iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


CN_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CN_CHECK = "10X98765432"


def cn_resident_id(rng: random.Random) -> str:
    area = rng.choice(["110101", "310104", "440305", "510107", "330106", "320102"])
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    body = area + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    return body + CN_CHECK[sum(int(d) * w for d, w in zip(body, CN_WEIGHTS, strict=True)) % 11]


def cn_mobile(rng: random.Random) -> str:
    number = "1" + rng.choice("3456789") + "".join(rng.choice(string.digits) for _ in range(9))
    return ("+86 " if rng.random() < 0.3 else "") + number


def us_ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 899) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


# --- messages --------------------------------------------------------------------------------------

# {slot} placeholders; the same slots recur across intents so vocabulary overlaps
TEMPLATES: dict[str, list[str]] = {
    "lost_card": [
        "Hi, this is {PERSON}. I lost my card {CREDIT_CARD} yesterday, please block it.",
        "My wallet was stolen on {DATE_TIME} with the card ending {CREDIT_CARD} in it. Call me on {PHONE_NUMBER}.",
        "I can't find my credit card {CREDIT_CARD}. Can you send a new one to {LOCATION}?",
        "Please freeze card {CREDIT_CARD}, I think I left it in a taxi. {PERSON}",
    ],
    "loan_inquiry": [
        "Hello, I'm {PERSON} and I'd like to know the rate for a 20k personal loan. My email is {EMAIL_ADDRESS}.",
        "Could someone call me at {PHONE_NUMBER} about refinancing my mortgage? Thanks, {PERSON}",
        "What documents do I need for a car loan? I was born on {DATE_TIME}, SSN {US_SSN}.",
        "I applied for a loan on {DATE_TIME} and haven't heard back. Reference account {IBAN_CODE}.",
    ],
    "fraud_report": [
        "There is a payment I did not make from {IBAN_CODE} to an unknown account. Please investigate. {PERSON}",
        "Someone logged into my account from {IP_ADDRESS} on {DATE_TIME}. It wasn't me!",
        "I got a phishing email pretending to be you, linking to {URL}. My card is {CREDIT_CARD}.",
        "Unauthorised transfer from {IBAN_CODE} to {IBAN_CODE} this morning. Reach me at {EMAIL_ADDRESS}.",
    ],
    "address_change": [
        "I moved. My new address is {LOCATION}. Name: {PERSON}.",
        "Please update my address to {LOCATION} and my phone to {PHONE_NUMBER}.",
        "Change of address for {PERSON}, effective {DATE_TIME}: {LOCATION}.",
        "我的新手机号是 {CN_MOBILE}，身份证号 {CN_RESIDENT_ID}，请更新地址。",
    ],
    "complaint": [
        "I am very unhappy with the service at your branch. {PERSON}, {EMAIL_ADDRESS}",
        "Nobody answered my calls to {PHONE_NUMBER} for a week. This is unacceptable.",
        "Your app at {URL} keeps crashing when I try to pay with {CREDIT_CARD}.",
        "I was charged twice on {DATE_TIME}. My account is {IBAN_CODE}. Fix it please.",
    ],
    "balance_question": [
        "What is the balance on {IBAN_CODE}? This is {PERSON}.",
        "Can you tell me how much is left on card {CREDIT_CARD}?",
        "Please email my statement to {EMAIL_ADDRESS}.",
        "Balance enquiry for customer with ID {CN_RESIDENT_ID}, mobile {CN_MOBILE}.",
    ],
    "account_closure": [
        "I want to close my account {IBAN_CODE}. Send the remaining money to {IBAN_CODE}. {PERSON}",
        "Please close my account and confirm to {EMAIL_ADDRESS}. Born {DATE_TIME}.",
        "Close everything under SSN {US_SSN}, I'm moving abroad on {DATE_TIME}.",
    ],
    "payment_dispute": [
        "I dispute the charge of 89.99 on {DATE_TIME} on card {CREDIT_CARD}.",
        "The merchant at {URL} never delivered. Card {CREDIT_CARD}, contact {PHONE_NUMBER}.",
        "A refund to {IBAN_CODE} was promised on {DATE_TIME} and never arrived. {PERSON}",
    ],
}


class _Values:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        from faker import Faker  # heavy: its locale registry takes ~0.1 s to import; only the generator needs it

        self.fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR"])
        self.fake.seed_instance(seed)

    def make(self, slot: str) -> str:
        f, r = self.fake, self.rng
        if slot == "PERSON":
            return f.name()
        if slot == "EMAIL_ADDRESS":
            return f.email()
        if slot == "PHONE_NUMBER":
            phones: list[Callable[[], str]] = [
                f["en_US"].phone_number,
                f["en_GB"].phone_number,
                lambda: f"+1 {r.randint(200, 989)} {r.randint(200, 999)} {r.randint(1000, 9999)}",
            ]
            return r.choice(phones)()
        if slot == "CREDIT_CARD":
            return card_number(r)
        if slot == "IBAN_CODE":
            return iban(r)
        if slot == "US_SSN":
            return us_ssn(r)
        if slot == "DATE_TIME":
            d = f.date_between(date(1950, 1, 1), date(2026, 6, 30))
            fmt = r.choice(["%Y-%m-%d", "%d/%m/%Y", "%B %d, %Y", "%b %d, %Y", "%d %b %Y", "%m/%d/%Y"])
            return d.strftime(fmt)
        if slot == "LOCATION":
            return f["en_US"].address().replace("\n", ", ")
        if slot == "IP_ADDRESS":
            return f.ipv4_public() if r.random() < 0.8 else f.ipv6()
        if slot == "URL":
            return f.url() + r.choice(["", "login", "pay?id=" + str(r.randint(1000, 9999))])
        if slot == "CN_RESIDENT_ID":
            return cn_resident_id(r)
        if slot == "CN_MOBILE":
            return cn_mobile(r)
        raise KeyError(slot)


def generate(n: int, seed: int = 0, label_noise: float = 0.0) -> list[Message]:
    """`n` messages; `label_noise` is the share whose intent label is replaced by a random one."""
    values = _Values(seed)
    rng = random.Random(seed + 1)
    out = []
    for _ in range(n):
        intent = rng.choice(INTENTS)
        template = rng.choice(TEMPLATES[intent])
        text, spans, pos = "", [], 0
        while True:
            start = template.find("{", pos)
            if start < 0:
                text += template[pos:]
                break
            end = template.index("}", start)
            text += template[pos:start]
            slot = template[start + 1 : end]
            value = values.make(slot)
            spans.append((len(text), len(text) + len(value), slot))
            text += value
            pos = end + 1
        label = rng.choice(INTENTS) if rng.random() < label_noise else intent
        out.append(Message(text, label, spans))
    return out


def support_schema_path() -> Path:
    """The bundled schema of the generated support-message dataset."""
    return Path(__file__).parent / "data" / "support_messages.schema.yaml"


def support_frame(n: int, seed: int = 0, label_noise: float = 0.0) -> pd.DataFrame:
    """`n` messages as rows of the support_messages dataset, one customer each."""
    messages = generate(n, seed=seed, label_noise=label_noise)
    return pd.DataFrame(
        {
            "customer_id": [f"C{seed:03d}-{i:07d}" for i in range(n)],
            "message": [m.text for m in messages],
            "intent": [m.intent for m in messages],
        }
    )
