"""Persistence: SQLAlchemy 2 engine and transactions, tables, Alembic migrations applied on open."""

from complai.store.engine import Store, bulk_insert, normalise_url, placeholder
from complai.store.tables import metadata

__all__ = ["Store", "bulk_insert", "metadata", "normalise_url", "placeholder"]
