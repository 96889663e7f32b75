"""What the API's routes share: the problem-details responses each documents, and small models."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Problem(BaseModel):
    """An RFC 9457 problem document (application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank")
    title: str
    status: int
    detail: str | None = None


def _doc(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {"application/problem+json": {}}}


# Every authenticated route may answer these; routes add 404/409/422/429 where they can happen.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _doc("Invalid input (one line saying which field and why)"),
    401: _doc("No valid bearer token"),
    403: _doc("The policy refuses this principal this action for this purpose (recorded)"),
    413: _doc("The request body is over the limit"),
    429: _doc("Too many refused tokens from this address; try again later"),
    503: _doc("The workspace is busy with a long write (SQLite); nothing was changed, try again"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _doc("No such thing (or not visible to this principal)")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _doc("It exists already, or the budget would be overspent")}
INTEGRITY: dict[int | str, dict[str, Any]] = {422: _doc("An integrity check failed")}
TOO_MANY: dict[int | str, dict[str, Any]] = {429: _doc("Too many attempts; try again later")}


def problems(*extra: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    out = dict(PROBLEMS)
    for e in extra:
        out.update(e)
    return out


class Strict(BaseModel):
    """A request body: unknown fields and wrong types are refused, not coerced. NaN and Infinity (which
    Python's JSON reader takes and the JSON standard does not) and text with lone surrogates (which no
    store can keep as UTF-8) are refused anywhere in it, free-form objects included."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("text must be valid Unicode (a lone surrogate is not)") from None
            elif isinstance(item, float) and not math.isfinite(item):
                raise ValueError("numbers must be finite (not NaN or Infinity)")
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return data
