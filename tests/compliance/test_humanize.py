"""Values in words for the human renderings of a report: literal inputs against literal outputs."""

from __future__ import annotations

import pytest

from complai.compliance import humanize


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("P3650D", "10 years"),
        ("P365D", "1 year"),
        ("P6M", "6 months"),
        ("P30D", "30 days"),
        ("P1D", "1 day"),
        ("P14D", "2 weeks"),
        ("P2W", "2 weeks"),
        ("P7Y", "7 years"),
        ("P1Y6M", "1 year and 6 months"),
        ("P1Y2M3D", "1 year, 2 months and 3 days"),
        ("PT6H", "6 hours"),
        ("PT90M", "90 minutes"),
        ("P", "P"),
        ("not a period", "not a period"),
    ],
)
def test_periods_read_as_words(text: str, words: str) -> None:
    assert humanize.period(text) == words


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (1.990026919689076, "1.99"),
        (0.9900269196890761, "0.99"),
        (2.0, "2"),
        (10.0, "10"),
        (0.8387, "0.84"),
        (0.1, "0.1"),
        (0.05, "0.05"),
        (0.0123, "0.012"),
        (5e-07, "5e-7"),
        (1.5e-05, "1.5e-5"),
        (-0.001, "-0.001"),
        (48842.0, "48,842"),
        (123456.789, "123,456.79"),
        (0.0, "0"),
        (48842, "48,842"),
        (float("inf"), "infinite"),
        (float("nan"), "not a number"),
        (None, "none"),
    ],
)
def test_numbers_are_rounded_for_reading(x: float | None, text: str) -> None:
    assert humanize.number(x) == text


def test_counts_days_percentages_and_times() -> None:
    assert humanize.count(48842) == "48,842"
    assert humanize.count(1234567) == "1,234,567"
    assert humanize.count(None) == "none"
    assert humanize.days(365) == "365 days" and humanize.days(1) == "1 day"
    assert humanize.plural(48842, "subject") == "48,842 subjects"
    assert humanize.percent(40405, 48842) == "82.7%"
    assert humanize.percent(1, 0) == "-"
    assert humanize.when("2026-11-30T14:18:04.557792Z") == "2026-11-30 14:18 UTC"
    assert humanize.when(None) == "-"


def test_evidence_values_in_words() -> None:
    assert humanize.value({"adult": 1.990026919689076, "credit": 0.5}) == "adult: 1.99; credit: 0.5"
    assert humanize.value(["w1.example", "w2.example"]) == "w1.example, w2.example"
    assert humanize.value([]) == "none"
    assert humanize.value(True) == "yes"
    assert humanize.value(27) == "27"
