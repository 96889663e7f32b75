"""Shared benchmark helpers: a throwaway PostgreSQL database, timing, result files."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from complai.store.engine import normalise_url

DEFAULT_PG = os.environ.get("COMPLAI_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def pg_database(url: str = DEFAULT_PG) -> Iterator[str]:
    """A fresh PostgreSQL database for one benchmark, dropped afterwards."""
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    name = f"complai_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield normalise_url(url).rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pg_available(url: str = DEFAULT_PG) -> bool:
    try:
        engine = create_engine(normalise_url(url))
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def write_results(path: Path, result: dict[str, Any]) -> None:
    result.setdefault("machine", {"cpus": os.cpu_count(), "python": sys.version.split()[0]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
