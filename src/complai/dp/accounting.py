"""Privacy accounting in zero-concentrated DP (zCDP, Bun & Steinke, TCC 2016). Pure.

Costs compose by adding rho. Conversions used:
- a pure epsilon-DP mechanism (Laplace) is (epsilon^2 / 2)-zCDP (Bun & Steinke, Prop. 1.4);
- the Gaussian mechanism with L2 sensitivity D and noise sigma is (D^2 / (2 sigma^2))-zCDP (Prop. 1.6);
- rho-zCDP implies (rho + 2 sqrt(rho ln(1/delta)), delta)-DP for every delta > 0 (Prop. 1.3).
A budget stated as (epsilon, delta) is held as the largest rho whose conversion stays within it.
"""

from __future__ import annotations

import math
from typing import TypeAlias

from complai.errors import InvalidInput

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"


def check_epsilon_delta(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise InvalidInput("epsilon must be a positive number")
    if not (0 < delta < 1):
        raise InvalidInput("delta must be in (0, 1)")


def rho_of_laplace(epsilon: float) -> float:
    if epsilon <= 0:
        raise InvalidInput("epsilon must be positive")
    return epsilon * epsilon / 2


def rho_of_gaussian(sensitivity: float, sigma: float) -> float:
    if sensitivity <= 0 or sigma <= 0:
        raise InvalidInput("sensitivity and sigma must be positive")
    return sensitivity * sensitivity / (2 * sigma * sigma)


def epsilon_of(rho: float, delta: float) -> float:
    """The epsilon at `delta` that rho-zCDP guarantees."""
    if rho < 0:
        raise InvalidInput("rho must be non-negative")
    if not 0 < delta < 1:
        raise InvalidInput("delta must be in (0, 1)")
    return rho + 2 * math.sqrt(rho * -math.log(delta))


def rho_for(epsilon: float, delta: float) -> float:
    """The largest rho with epsilon_of(rho, delta) <= epsilon (the inverse of epsilon_of)."""
    check_epsilon_delta(epsilon, delta)
    log_term = -math.log(delta)
    root = math.sqrt(log_term + epsilon) - math.sqrt(log_term)
    return root * root


def finite(value: object) -> JSON:
    """A JSON-ready copy of a document (mappings, lists, tuples, numbers, strings) for canonical JSON,
    which has no NaN or infinity: such numbers (an undefined metric) become null, mapping keys strings
    and tuples lists. ValueError for anything JSON cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    raise ValueError(f"unsupported type: {type(value)}")
