"""The content type of a value the producer's own `value_serializer` made.

A record without a `content-type` header says its value is JSON (DESIGN.md section 2). A
producer with a value serializer gets the caller's objects, which only its serializer turns
into bytes (a str encoder, Avro, protobuf), after our headers are made. kafka-python (3.0 on)
hands serializers the record's header list: `declare_serialized_values` puts a serializer
around the producer's own that looks at the bytes of the sends we make and, when they are not
JSON, adds the `content-type` header they need (`text/plain; charset=utf-8` for UTF-8
text, else `application/octet-stream`). Sends made without Choreoscope pass through as they
are. Older kafka-python, whose serializers see no headers, keeps its records as before.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from .wire import CONTENT_TYPE, OCTET_STREAM, TEXT_PLAIN, is_json

_TEXT = TEXT_PLAIN.encode()
_BINARY = OCTET_STREAM.encode()

# `SENDING.ours`: a send of ours is in progress on this thread (its value is looked at)
SENDING = threading.local()


def declare_serialized_values(producer: Any) -> bool:
    """Put `DeclaringSerializer` around kafka-python `producer`'s value serializer (once);
    whether it is there."""
    config = getattr(producer, "config", None)
    if not isinstance(config, dict):
        return False
    current = config.get("value_serializer")
    if current is None:
        return False
    if isinstance(current, DeclaringSerializer):
        return True
    serialize = getattr(type(producer), "_serialize", None)
    try:
        takes_headers = serialize is not None and "headers" in inspect.signature(
            serialize).parameters
    except (TypeError, ValueError):
        takes_headers = False
    if not takes_headers:
        return False
    config["value_serializer"] = DeclaringSerializer(current, producer)
    return True


class DeclaringSerializer:
    """The producer's value serializer, adding a `content-type` header to our sends whose
    serialized value is not JSON. kafka-python calls `serialize(topic, headers, data)`."""

    __slots__ = ("_producer", "inner")

    def __init__(self, inner: Any, producer: Any) -> None:
        self.inner = inner
        self._producer = producer

    def serialize(self, topic: str, headers: Any, data: Any) -> Any:
        # kafka-python's own way of calling a serializer (with its fallback for ones that
        # take no headers)
        value = type(self._producer)._serialize(self._producer, self.inner, topic, headers,
                                                data)
        if getattr(SENDING, "ours", False) and isinstance(headers, list):
            declared = content_type(value)
            if declared is not None and not any(name == CONTENT_TYPE for name, _ in headers):
                headers.append((CONTENT_TYPE, declared))
        return value

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def content_type(value: Any) -> bytes | None:
    """The content type to declare for serialized `value`: None for JSON (and tombstones),
    `text/plain; charset=utf-8` for other UTF-8 text, else `application/octet-stream`."""
    if not isinstance(value, bytes | bytearray | memoryview):
        return None
    data = bytes(value)
    if not data or is_json(data):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return _BINARY
    return _TEXT
