"""Bus ingest: consume the topics, decode each record, redact and cap it, store, commit."""

from .batch import StoreUnavailable, build_batch, store_rows
from .consumer import DEFAULT_GROUP, BusIngest
from .redact import Redactor
from .rows import event_row

__all__ = [
    "DEFAULT_GROUP",
    "BusIngest",
    "Redactor",
    "StoreUnavailable",
    "build_batch",
    "event_row",
    "store_rows",
]
