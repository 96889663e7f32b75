"""Bundled sample data and loaders."""

from complai.datasets.adult import ADULT_COLUMNS, adult_schema_path, load_adult

__all__ = ["ADULT_COLUMNS", "adult_schema_path", "load_adult"]
