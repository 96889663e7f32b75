"""Session operations: DataFrame entry points. `dp(dataset)` starts a DP query built as DataFrame calls
(app/dpframe.py), whose `agg` is one `dp_query` (authorised, spent and recorded there); `spark_session()`
is the workspace's Spark session (started on first use; it reads no data)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from complai.app.core import SessionCore
from complai.app.dpframe import DPFrame, DPQuerying

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class FrameOps(SessionCore):
    def dp(self, dataset: str) -> DPFrame:
        """A DP query on `dataset` as DataFrame calls: `.where(...)`, `.group_by(...)`, then
        `.agg(*statistics, epsilon=...)`. Nothing is checked, read or recorded before `agg`, which runs one
        `dp_query` (so a principal who may not query is refused there, and recorded as any refusal)."""
        return DPFrame(cast("DPQuerying", self), dataset)  # the Session this is part of has dp_query

    def spark_session(self) -> SparkSession:
        """The workspace's Spark session (embedded from [spark], or the one given by `ws.use_spark`)."""
        return self._svc.spark.session()
