"""Values in words for the human renderings of a report (HTML, Markdown, the notebook view): periods
("10 years", not P3650D), counts with thousands separators, floats rounded for reading. The JSON report
keeps every value exact; only these renderings round."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

_PERIOD = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def plural(n: float, unit: str) -> str:
    """'1 day', '2 days', '48,842 subjects'."""
    return f"{count(n)} {unit}" if n == 1 else f"{count(n)} {unit}s"


def count(n: Any) -> str:
    """An integer with thousands separators (48842 -> '48,842'); None -> 'none'."""
    if n is None:
        return "none"
    if isinstance(n, float) and not n.is_integer():
        return number(n)
    return f"{int(n):,}"


def number(x: Any, decimals: int = 2) -> str:
    """A float for reading: `decimals` decimals from 0.1 up (trailing zeros dropped, thousands
    separated), `decimals` significant digits below (1.990026919689076 -> '1.99', 5e-07 -> '5e-7')."""
    if x is None:
        return "none"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return count(x)
    if math.isnan(x):
        return "not a number"
    if math.isinf(x):
        return "infinite" if x > 0 else "minus infinite"
    if x == 0:
        return "0"
    if abs(x) >= 0.1:
        text = f"{x:,.{decimals}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        return "0" if text in ("-0", "") else text
    text = f"{x:.{decimals}g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        return f"{mantissa}e{int(exp)}"
    return text


def percent(part: float, whole: float) -> str:
    """'82.7%' (one decimal); '-' for an empty whole."""
    if not whole:
        return "-"
    return f"{100 * part / whole:.1f}%"


def days(n: int) -> str:
    """A number of days in words: 365 -> '365 days'."""
    return plural(n, "day")


def period(text: Any) -> str:
    """An ISO 8601 duration in words: P3650D -> '10 years', P6M -> '6 months', P30D -> '30 days',
    P1Y6M -> '1 year and 6 months', PT6H -> '6 hours'. Whole multiples of 365 days read as years and of
    7 days as weeks; anything that is not a duration comes back unchanged."""
    m = _PERIOD.fullmatch(str(text)) if text is not None else None
    if not m or not any(m.groups()):
        return str(text)
    y, mo, w, d, h, mi = (int(g) if g else 0 for g in m.groups()[:6])
    s = float(m.group(7)) if m.group(7) else 0.0
    d += 7 * w
    w = 0
    if d and d % 365 == 0:
        y, d = y + d // 365, 0
    elif d and d % 7 == 0 and d >= 14:
        w, d = d // 7, 0
    parts = [
        plural(v, unit)
        for v, unit in ((y, "year"), (mo, "month"), (w, "week"), (d, "day"), (h, "hour"), (mi, "minute"))
        if v
    ]
    if s:
        parts.append(plural(int(s) if s.is_integer() else s, "second"))
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def when(value: Any) -> str:
    """An RFC 3339 time as '2026-11-30 14:18 UTC'; anything else unchanged ('-' for None)."""
    if value is None:
        return "-"
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return t.strftime("%Y-%m-%d %H:%M UTC") if t.utcoffset() is not None else t.strftime("%Y-%m-%d %H:%M")


def value(v: Any) -> str:
    """Any evidence value in words: numbers rounded, lists joined, mappings as 'key: value' pairs."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return number(v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {value(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(value(x) for x in v) or "none"
    return str(v)
