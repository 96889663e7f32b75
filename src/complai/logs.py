"""Structured logs on stderr through the standard `logging` package: human text by default, one JSON
object a line with COMPLAI_LOG=json (settings from config.py).

What may be logged is fixed here: an operation's name, the principal, the purpose, the outcome (with
an error's type, never its message, which can repeat input), the duration and the ledger entry it
wrote. Never a value, a subject id, a file's content, a token, a password or a DP answer: the fields
a log line can carry are an allow-list, so a call cannot add one by mistake.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from complai.config import LogSettings

LOGGER = "complai"
FIELDS = ("operation", "principal", "purpose", "outcome", "error", "duration_ms", "ledger_seq", "nested")
_HANDLER_NAME = "complai-stderr"
# a library stays silent until its application configures logging (no "last resort" lines on stderr)
logging.getLogger(LOGGER).addHandler(logging.NullHandler())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    given = getattr(record, "complai", None) or {}
    return {k: given[k] for k in FIELDS if given.get(k) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, event and the allowed fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(doc, sort_keys=True)


class TextFormatter(logging.Formatter):
    """`LEVEL logger: event key=value ...` for a person reading a terminal (an operation is the event)."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k != "operation")
        return f"{record.levelname} {record.name}: {record.getMessage()}" + (f" {pairs}" if pairs else "")


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is when a record arrives (a test may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def configure_logging(settings: LogSettings) -> None:
    """Send complai's logs to stderr in `settings`' format at its level (again: replaces the handler)."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
    handler = _StderrHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(settings.level)
    logger.propagate = False


def log_operation(
    operation: str,
    principal: str,
    purpose: str,
    outcome: str,
    duration_s: float,
    *,
    error: type[BaseException] | None = None,
    ledger_seq: int | None = None,
    nested: bool = False,
) -> None:
    """One session operation, done, refused or failed: INFO (DEBUG when inside another operation), so
    the default level (WARNING) adds nothing to a command's output: its error says it already."""
    logger = logging.getLogger(f"{LOGGER}.session")
    level = logging.DEBUG if nested else logging.INFO
    if not logger.isEnabledFor(level):
        return
    fields = {
        "operation": operation,
        "principal": principal,
        "purpose": purpose,
        "outcome": outcome,
        "error": error.__name__ if error is not None else None,
        "duration_ms": round(duration_s * 1000, 1),
        "ledger_seq": ledger_seq,
        "nested": nested or None,
    }
    logger.log(level, "%s", operation, extra={"complai": fields})
