"""The Spark session external datasets are read with (docs/spark.md): one per workspace, started on first
use, never before.

`SparkRuntime.session()` starts an embedded session (`[spark] master`, `local[*]` by default, or a
cluster's master URL) with complai's defaults: no web UI, the session time zone UTC, ANSI SQL, Arrow
transfers, log4j at ERROR. `use(spark)` hands it a session its caller owns instead (a notebook's, a
cluster job's, a test's): the runtime never stops that one. `stop()` stops only a session it started.

pyspark is imported when a session is first needed, so opening a workspace and starting the CLI load
no JVM and no pyspark; complai works without pyspark installed (the `spark` extra) until then.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from complai.config import SparkSettings, spark_env
from complai.errors import WorkspaceError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# the driver's log4j configuration: no "Setting default log level" banner, no Hadoop warnings at start-up
LOG4J2 = Path(__file__).with_name("spark-log4j2.properties")

DEFAULTS: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.app.name": "complai",
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2.as_uri()}",
}
"""Spark properties every session complai starts is built with; `[spark.conf]` overrides them."""

# pyspark's Python loggers that print a failed query's message, which may quote a value of the data
QUERY_CONTEXT_LOGGERS = ("DataFrameQueryContextLogger", "SQLQueryContextLogger")


def quiet_pyspark() -> None:
    """Keep pyspark's Python side from printing data: its query-context loggers (a failed query's
    message, which may quote a lake value) are disabled, and its notice that it was not tested with this
    pandas is not shown (only that warning, by its message)."""
    from pyspark.logger import PySparkLogger  # heavy: pyspark

    for name in QUERY_CONTEXT_LOGGERS:
        PySparkLogger.getLogger(name).disabled = True
    warnings.filterwarnings("ignore", message=r"PySpark does not yet fully support pandas", category=FutureWarning)


class SparkRuntime:
    """The workspace's Spark session and its lifecycle; safe to share between threads."""

    def __init__(self, settings: SparkSettings) -> None:
        self.settings = settings
        self._session: SparkSession | None = None
        self._embedded = False
        self._lock = threading.Lock()

    def session(self) -> SparkSession:
        """The session (started at the first call: a JVM, a few seconds). A Spark context already running
        in this process (someone else's) is used as given and never stopped."""
        with self._lock:
            current = self._session
            if current is not None and (not self._embedded or _alive(current)):
                return current
            self._session = None
            self._embedded = False
            try:
                # heavy: pyspark (and py4j) load only when Spark is needed
                from pyspark import SparkContext
                from pyspark.sql import SparkSession  # heavy: as above
            except ImportError:
                raise WorkspaceError(
                    "Spark is not installed: install complai with the spark extra (pip install 'complai[spark]')"
                ) from None
            quiet_pyspark()
            running = SparkContext._active_spark_context is not None
            os.environ.update(spark_env(self.settings.master))
            builder = SparkSession.builder.master(self.settings.master)
            for key, value in (DEFAULTS | self.settings.conf).items():
                builder = builder.config(key, value)
            try:
                spark = builder.getOrCreate()
            except Exception as exc:  # no Java, a master that refused or is unreachable: one line, no conf value
                raise WorkspaceError(
                    f"Spark could not start with master {self.settings.master} ({type(exc).__name__}): check "
                    "[spark] in complai.toml, COMPLAI_SPARK_MASTER, and that Java 17 or later is installed "
                    "(docs/spark.md)"
                ) from None
            if not running:
                spark.sparkContext.setLogLevel("ERROR")
            self._session = spark
            self._embedded = not running
            return spark

    def use(self, spark: SparkSession) -> None:
        """Use `spark`, a session the caller owns, from now on; the runtime never stops it. An embedded
        session started before is stopped unless `spark` runs on its context."""
        quiet_pyspark()
        with self._lock:
            previous, embedded = self._session, self._embedded
            self._session, self._embedded = spark, False
        if previous is not None and embedded and previous.sparkContext is not spark.sparkContext:
            previous.stop()

    def stop(self) -> None:
        """Stop the session if this runtime started it; a session given to `use` is left running."""
        with self._lock:
            current, embedded = self._session, self._embedded
            self._session, self._embedded = None, False
        if current is not None and embedded:
            current.stop()

    @property
    def started(self) -> bool:
        """Whether a session is at hand (started here or given), without starting one."""
        return self._session is not None

    @property
    def embedded(self) -> bool:
        """Whether the session at hand was started by this runtime (and `stop` will stop it)."""
        return self._session is not None and self._embedded

    def describe(self) -> dict[str, str]:
        """The master, the Spark version, whether a session is started and whether this runtime started it
        (`embedded`); never a conf value (one may hold a secret). Starts nothing."""
        spark = self._session
        if spark is None:
            try:
                version = importlib.metadata.version("pyspark")
            except importlib.metadata.PackageNotFoundError:
                version = "not installed"
            master = self.settings.master
        else:
            version = spark.version
            master = spark.sparkContext.master or self.settings.master
        return {
            "master": master,
            "version": version,
            "started": "true" if spark is not None else "false",
            "embedded": "true" if spark is not None and self._embedded else "false",
        }


def _alive(spark: SparkSession) -> bool:
    """Whether the session's context is still running (someone may have stopped it)."""
    return spark.sparkContext._jsc is not None
