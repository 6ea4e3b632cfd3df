"""The collector's store: schema and engine (SQLite by default, PostgreSQL in production)."""

from .engine import DEFAULT_URL, Store, normalize_url
from .schema import SCHEMA_VERSION, metadata

__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "Store", "metadata", "normalize_url"]
