from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import pytest

from complai.datasets import ADULT_COLUMNS, load_adult
from complai.errors import InvalidInput

# Published SHA-256 of the original UCI files (see datasets/data/ADULT_LICENSE.md).
TRAIN_SHA256 = "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"
TEST_SHA256 = "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"


def test_bundled_files_are_the_published_ones() -> None:
    data = resources.files("complai.datasets") / "data"
    train = gzip.decompress((data / "adult.data.gz").read_bytes())
    test = gzip.decompress((data / "adult.test.gz").read_bytes())
    assert hashlib.sha256(train).hexdigest() == TRAIN_SHA256
    # the bundled test file drops the original's first (comment) line
    assert hashlib.sha256(b"|1x3 Cross validator\n" + test).hexdigest() == TEST_SHA256


def test_load_all_rows_typed_with_unique_subjects() -> None:
    df = load_adult()
    assert len(df) == 32561 + 16281
    assert list(df.columns) == ["subject_id", *ADULT_COLUMNS, "split"]
    assert df["subject_id"].is_unique
    assert df["age"].dtype.kind == "i" and df["hours_per_week"].dtype.kind == "i"
    assert set(df["income"].cat.categories) == {"<=50K", ">50K"}
    assert df["workclass"].isna().sum() > 0  # '?' is missing, not a category


def test_splits_are_disjoint_and_stable() -> None:
    train, test = load_adult("train"), load_adult("test")
    assert len(train) == 32561 and len(test) == 16281
    assert set(train["subject_id"]).isdisjoint(set(test["subject_id"]))
    assert train["subject_id"].iloc[0] == "A00000001"
    assert test["subject_id"].iloc[0] == f"A{32561 + 1:08d}"


def test_unknown_split() -> None:
    with pytest.raises(InvalidInput):
        load_adult("validation")  # type: ignore[arg-type]
