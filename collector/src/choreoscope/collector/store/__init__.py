"""The collector's store: schema and engine (SQLite by default, PostgreSQL in production)."""

from .engine import DEFAULT_URL, Store, StoreError, check_url, normalize_url
from .masking import mask_secrets, mask_url
from .schema import SCHEMA_VERSION, metadata

__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "Store", "StoreError", "check_url", "mask_secrets",
           "mask_url", "metadata", "normalize_url"]
