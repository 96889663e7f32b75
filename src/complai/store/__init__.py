"""Persistence: SQLAlchemy 2 engine and transactions, tables, Alembic migrations applied on open."""

from complai.store.engine import Store, normalise_url
from complai.store.tables import metadata

__all__ = ["Store", "metadata", "normalise_url"]
