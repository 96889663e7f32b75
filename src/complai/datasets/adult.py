"""UCI Adult (CC BY 4.0, see data/ADULT_LICENSE.md) as a typed DataFrame with a subject id per row."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd

from complai.errors import InvalidInput

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
_INT = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
_CAT = [c for c in ADULT_COLUMNS if c not in _INT]
_FILES = {"train": "adult.data.gz", "test": "adult.test.gz"}


def _data_dir() -> Path:
    return Path(str(resources.files("complai.datasets") / "data"))


def adult_schema_path() -> Path:
    return _data_dir() / "adult.schema.yaml"


def _read(split: str) -> pd.DataFrame:
    df = pd.read_csv(
        _data_dir() / _FILES[split],
        header=None,
        names=ADULT_COLUMNS,
        skipinitialspace=True,
        na_values=["?"],
        compression="gzip",
        dtype={c: "int64" for c in _INT},
    )
    df = df.dropna(how="all")
    df["income"] = df["income"].str.rstrip(".")  # the test file writes labels as ">50K."
    return df


def load_adult(split: Literal["train", "test", "all"] = "all") -> pd.DataFrame:
    """Adult rows with typed columns and a `subject_id` (A00000001, ...) unique across both splits.

    Missing values ('?') are NA in the categorical columns. `split` column says where a row came from.
    """
    if split not in ("train", "test", "all"):
        raise InvalidInput(f"unknown Adult split {split!r} (train, test or all)")
    parts = []
    offset = 0
    for name in ("train", "test"):
        df = _read(name)
        if split in (name, "all"):
            df.insert(0, "subject_id", [f"A{offset + i + 1:08d}" for i in range(len(df))])
            df["split"] = name
            parts.append(df)
        offset += len(df)
    out = pd.concat(parts, ignore_index=True)
    for col in [*_CAT, "split"]:
        out[col] = out[col].astype("category")
    out["subject_id"] = out["subject_id"].astype("string")
    return out
