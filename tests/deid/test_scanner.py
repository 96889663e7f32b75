from __future__ import annotations

import pandas as pd

from complai.datasets.customer_service import generate, iban
from complai.deid.scanner import scan


def test_scanner_proposes_categories_by_name_and_by_values() -> None:
    import random

    rng = random.Random(3)
    msgs = generate(60, seed=5)
    frame = pd.DataFrame(
        {
            "cust_ref": [f"R{i}" for i in range(60)],
            "contact": [f"user{i}@example.org" for i in range(60)],  # the name says nothing; values do
            "payout_to": [iban(rng) for _ in range(60)],
            "age": [20 + i % 50 for i in range(60)],
            "ticket_body": [m.text for m in msgs],
            "widget_count": [i % 7 for i in range(60)],
        }
    )
    by = {p.column: p for p in scan(frame, regex_only=True)}
    assert (by["contact"].category, by["contact"].identifier) == ("user.contact.email", "direct")
    assert (by["payout_to"].category, by["payout_to"].identifier) == ("user.financial.account", "direct")
    assert (by["age"].category, by["age"].identifier) == ("user.demographic.age", "quasi")
    assert by["ticket_body"].category == "user.content.message" and by["ticket_body"].sensitive
    assert by["widget_count"].category is None
    assert by["contact"].evidence and by["contact"].entities["EMAIL_ADDRESS"] == 1.0


def test_scanner_finds_every_address_of_a_varied_email_column() -> None:
    import random

    from tests.deid.test_recognizers import EMAILS, random_email

    rng = random.Random(11)
    addresses = EMAILS + [random_email(rng) for _ in range(290)]
    frame = pd.DataFrame({"contact": addresses})
    for regex_only in (True, False):
        [p] = scan(frame, sample=len(addresses), regex_only=regex_only)
        assert p.entities["EMAIL_ADDRESS"] == 1.0 and (p.category, p.identifier) == ("user.contact.email", "direct")
