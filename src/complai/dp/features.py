"""Turning governed rows into tensors without learning anything from them.

Every transformation here is fixed by the dataset's declared schema (numeric bounds, category values)
or by a public pretrained tokenizer, never fitted on the training data: fitting a scaler or a vocabulary
on the raw data would release statistics of it outside the privacy accounting. A date becomes an age in
years at a reference date the training spec declares (never "today", which would make a run
irreproducible), scaled by the ages its declared bounds give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from complai.errors import InvalidInput
from complai.vault.schema import DatasetSchema, FieldSpec, days_since_epoch

DAYS_PER_YEAR = 365.25  # an age in years is days / 365.25 (the Julian year)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "scaled" | "onehot" | "binary" | "age"
    low: float = 0.0
    high: float = 1.0
    values: tuple[str, ...] = ()
    reference: date | None = None  # for "age": the date ages are taken at

    def ages(self, col: pd.Series) -> np.ndarray:
        """Age in years at the reference date of each date (NaN where missing)."""
        assert self.reference is not None
        ref = days_since_epoch(self.reference.isoformat())
        stamps = pd.to_datetime(col, utc=True, errors="coerce")
        days = (stamps - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
        ages: np.ndarray = (ref - days.to_numpy(dtype=np.float64, na_value=np.nan)) / DAYS_PER_YEAR
        return ages

    @property
    def width(self) -> int:
        # one-hot columns keep a last slot for missing or undeclared values
        return len(self.values) + 1 if self.kind == "onehot" else 1

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"field": self.name, "encoding": self.kind, "source": "declared schema"}
        if self.kind in ("scaled", "age"):
            d["bounds"] = [self.low, self.high]
        if self.kind == "age":
            d["reference_date"] = self.reference.isoformat() if self.reference else None
            d["unit"] = "years of age at the reference date"
        if self.kind == "onehot":
            d["values"] = len(self.values)
        return d


def _column(spec: FieldSpec, reference: date | None) -> Column:
    if spec.type in ("date", "datetime"):
        lo, hi = spec.numeric_bounds
        if lo is None or hi is None:
            raise InvalidInput(
                f"feature {spec.name} needs declared bounds (min and max dates in the schema): "
                "scaling by the data's own range would leak it"
            )
        if reference is None:
            raise InvalidInput(
                f"feature {spec.name} is a {spec.type}: give reference_date in the training spec (the date "
                "ages are taken at, e.g. 2026-01-01; never today, which would make the run irreproducible)"
            )
        ref = days_since_epoch(reference.isoformat())
        # the latest declared date gives the youngest age, the earliest the oldest
        return Column(spec.name, "age", (ref - hi) / DAYS_PER_YEAR, (ref - lo) / DAYS_PER_YEAR, reference=reference)
    if spec.type in ("integer", "float"):
        lo, hi = spec.numeric_bounds
        if lo is None or hi is None:
            raise InvalidInput(
                f"feature {spec.name} needs declared bounds (min and max in the schema): "
                "scaling by the data's own range would leak it"
            )
        return Column(spec.name, "scaled", lo, hi)
    if spec.type == "boolean":
        return Column(spec.name, "binary")
    if spec.type == "category":
        if not spec.values:
            raise InvalidInput(
                f"feature {spec.name} needs its values declared in the schema: "
                "a vocabulary taken from the data would leak it"
            )
        return Column(spec.name, "onehot", values=tuple(spec.values))
    raise InvalidInput(f"feature {spec.name} has type {spec.type}, which a tabular model cannot take")


class TabularFeatures:
    """Numeric fields scaled to [0, 1] by their declared bounds (clipped), dates as ages at `reference`
    scaled by the ages of their declared bounds, categories one-hot over their declared values (plus a
    slot for missing or undeclared), booleans as 0/1, missing numbers and dates at the middle of their
    range."""

    def __init__(self, schema: DatasetSchema, names: list[str], reference: date | None = None) -> None:
        if not names:
            raise InvalidInput("a tabular model needs at least one feature")
        self.columns = [_column(schema.field(n), reference) for n in names]
        self.dim = sum(c.width for c in self.columns)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(frame), self.dim), dtype=np.float32)
        at = 0
        for c in self.columns:
            col = frame[c.name]
            if c.kind in ("scaled", "age"):
                if c.kind == "age":
                    x = c.ages(col)
                else:
                    x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
                span = c.high - c.low or 1.0
                x = np.clip((x - c.low) / span, 0.0, 1.0)
                out[:, at] = np.where(np.isnan(x), 0.5, x)
            elif c.kind == "binary":
                out[:, at] = col.fillna(False).astype(bool).to_numpy(dtype=np.float32)
            else:
                index = {v: i for i, v in enumerate(c.values)}
                slots = np.array([index.get(v, len(c.values)) for v in col.astype(object)], dtype=np.int64)
                out[np.arange(len(frame)), at + slots] = 1.0
            at += c.width
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [c.describe() for c in self.columns]


class Labels:
    """Class indices from the label field's declared values (or False/True for a boolean)."""

    def __init__(self, schema: DatasetSchema, name: str) -> None:
        spec = schema.field(name)
        if spec.type == "boolean":
            self.classes: list[Any] = [False, True]
        elif spec.type == "category" and spec.values:
            self.classes = list(spec.values)
        else:
            raise InvalidInput(f"label {name} must be a boolean or a category with declared values")
        if len(self.classes) < 2:
            raise InvalidInput(f"label {name} needs at least two classes")
        self.name = name
        self._index = {v: i for i, v in enumerate(self.classes)}

    def known(self, frame: pd.DataFrame) -> np.ndarray:
        mask: np.ndarray = frame[self.name].map(lambda v: v in self._index).to_numpy(dtype=bool)
        return mask

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array([self._index[v] for v in frame[self.name]], dtype=np.int64)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (the Mann-Whitney statistic, ties counted half)."""
    pos = positive.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    from scipy.stats import rankdata  # heavy: scipy.stats takes ~0.8 s to import; only audits rank

    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
