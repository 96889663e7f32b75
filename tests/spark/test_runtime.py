"""The workspace's Spark session (spark.py): started from `[spark]` at first use and never before, stopped
when the workspace closes if the workspace started it, and a session given to `use_spark` never stopped."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from complai.app.workspace import Workspace
from complai.config import SparkSettings
from complai.errors import WorkspaceError
from complai.spark import SparkRuntime
from tests.spark.conftest import TEST_ENV

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

VERSION = importlib.metadata.version("pyspark")
# run in a process of its own: this one already holds the tests' shared Spark context, which a runtime
# would use as given instead of starting one
_EMBEDDED = """
import json, sys
from complai.app.workspace import Workspace

ws = Workspace.open(sys.argv[1])
out = {"loaded_on_open": sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j"))}
out["before"] = ws.spark.describe()
spark = ws.spark.session()
out["same_again"] = ws.spark.session() is spark
conf = spark.conf
out["conf"] = {k: conf.get(k) for k in (
    "spark.sql.session.timeZone", "spark.ui.enabled", "spark.sql.ansi.enabled", "spark.sql.shuffle.partitions"
)}
out["master"] = spark.sparkContext.master
out["rows"] = spark.range(7).count()
out["after"] = ws.spark.describe()
context = spark.sparkContext
ws.close()
out["stopped"] = context._jsc is None
print(json.dumps(out))
"""


def test_a_workspace_starts_spark_from_its_settings_at_first_use_and_stops_it_on_close(
    sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "ws"
    shutil.copytree(sqlite_template, path)
    with (path / "complai.toml").open("a") as fh:
        fh.write("\n[spark]\nmaster = 'local[2]'\n\n[spark.conf]\n'spark.sql.shuffle.partitions' = '3'\n")
    env = {k: v for k, v in os.environ.items() if k not in TEST_ENV}
    env["COMPLAI_SPARK_MASTER"] = "local[1]"  # overrides the file's master
    r = subprocess.run(
        [sys.executable, "-c", _EMBEDDED, str(path)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["loaded_on_open"] == []  # opening the workspace loaded neither pyspark nor py4j
    assert out["before"] == {"master": "local[1]", "version": VERSION, "started": "false", "embedded": "false"}
    assert out["same_again"] is True
    assert out["conf"] == {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.sql.ansi.enabled": "true",
        "spark.sql.shuffle.partitions": "3",  # [spark.conf] reaches the builder
    }
    assert out["master"] == "local[1]" and out["rows"] == 7
    assert out["after"] == {"master": "local[1]", "version": VERSION, "started": "true", "embedded": "true"}
    assert out["stopped"] is True
    assert "Setting default log level" not in r.stderr  # complai's log4j configuration, not Spark's banner


def test_a_session_given_to_the_workspace_is_used_and_never_stopped(spark_ws: Workspace, spark: SparkSession) -> None:
    assert spark_ws.spark.session() is spark
    assert spark_ws.spark.describe()["embedded"] == "false"
    spark_ws.close()
    assert spark.sparkContext._jsc is not None
    assert spark.range(3).count() == 3


def test_a_runtime_uses_a_context_already_running_and_leaves_it_running(spark: SparkSession) -> None:
    runtime = SparkRuntime(SparkSettings("local[1]"))
    session = runtime.session()
    assert session.sparkContext is spark.sparkContext
    assert runtime.started and not runtime.embedded
    runtime.stop()
    assert not runtime.started
    assert spark.range(2).count() == 2


def test_describing_the_runtime_starts_nothing_and_shows_no_conf_value() -> None:
    secret = "s3cr3t-value-of-a-credential"
    runtime = SparkRuntime(SparkSettings("spark://h:7077", {"spark.hadoop.fs.s3a.secret.key": secret}))
    described = runtime.describe()
    assert described == {"master": "spark://h:7077", "version": VERSION, "started": "false", "embedded": "false"}
    assert secret not in json.dumps(described) and not runtime.started


def test_without_pyspark_the_session_is_refused_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pyspark", "pyspark.sql"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails, as when not installed
    runtime = SparkRuntime(SparkSettings("local[1]"))
    with pytest.raises(WorkspaceError, match=r"complai\[spark\]"):
        runtime.session()
    assert not runtime.started
