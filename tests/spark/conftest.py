"""Spark for the tests under tests/spark: one small local session (one JVM) for all of them.

tests/conftest.py gives this directory one xdist scope, scheduled first, so one worker starts the JVM
once while the other runs the rest. Keep each test small (a few thousand rows at most): a job costs
0.2 to 0.5 s here on top of the start-up.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from complai.app.workspace import Workspace
from complai.spark import DEFAULTS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# the session the tests share: complai's defaults, made small
TEST_CONF = DEFAULTS | {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.python.worker.reuse": "true",
    "spark.driver.memory": "1g",
    "spark.app.name": "complai-tests",
}
TEST_ENV = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


@pytest.fixture(scope="package")
def spark() -> Iterator[SparkSession]:
    """A local[1] session for every test in this directory, stopped after the last of them (the
    directory's tests run together: see tests/conftest.py). Tests hand it to a workspace with
    `ws.use_spark(spark)` (the `spark_ws` fixture), which never stops it."""
    from pyspark.sql import SparkSession

    saved = {name: os.environ.get(name) for name in TEST_ENV}
    os.environ.update(TEST_ENV)
    builder = SparkSession.builder.master("local[1]")
    for key, value in TEST_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def spark_ws(sqlite_ws: Workspace, spark: SparkSession) -> Workspace:
    """A fresh SQLite workspace (the test clock, `clock`) reading external datasets with `spark`."""
    sqlite_ws.use_spark(spark)
    return sqlite_ws


def write_parquet(tmp_path: Path, frame: pd.DataFrame | pa.Table, name: str | None = None) -> str:
    """Write `frame` as one Parquet file under `tmp_path` (pyarrow, no index) and return its path, as an
    external source's location. A name of its own unless `name` is given."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    path = tmp_path / (name or f"data-{uuid.uuid4().hex[:8]}.parquet")
    pq.write_table(table, path)
    return str(path)
