"""The collector's Kafka admin client, configured like its consumer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

# Consumer settings an admin client has no use for (librdkafka warns about each).
_CONSUMER_ONLY = ("group.id", "auto.offset.reset", "enable.auto.commit", "session.timeout.ms",
                  "heartbeat.interval.ms")


def admin_client(bootstrap: str, kafka_options: Mapping[str, str] | None = None) -> AdminClient:
    """An AdminClient for `bootstrap` with the user's Kafka options (security settings and
    the like), its errors logged at debug level: the caller reports what fails."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0,
                              "logger": logging.getLogger("choreoscope.collector.kafka"),
                              "error_cb": lambda err: log.debug("kafka admin: %s", err)}
    config.update(kafka_options or {})
    for name in _CONSUMER_ONLY:
        config.pop(name, None)
    return AdminClient(config)
