"""The collector's settings, each declared once: name, environment variable, type, default, doc.

Lookup order for every setting: the explicit argument (command-line option), then the
environment variable `CHOREOSCOPE_<NAME>`, then the default. Bad values are rejected at
start-up with "expected X, got Y".
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the collector cannot use; the message says what was expected."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: Callable[[str], Any]
    default: Any
    doc: str
    repeatable: bool = False

    @property
    def env(self) -> str:
        return "CHOREOSCOPE_" + self.name.upper()


_LONGEST = 100 * 365 * 86400.0  # a hundred years, in seconds (or days): beyond is no setting


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    if value < 0:
        raise ValueError("negative")
    if value > _LONGEST:
        raise ValueError(f"more than {_LONGEST:.0f}")
    return value


def _days(text: str) -> float:
    value = _seconds(text)
    if value > 100 * 365:
        raise ValueError("more than 100 years")
    return value


def _http_url(text: str) -> str:
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("not an http:// or https:// URL")
    return text


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("out of range")
    return value


MAX_BATCH = 1_000_000


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("not positive")
    return value


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_BATCH:  # librdkafka's consume() takes at most this many
        raise ValueError(f"more than {MAX_BATCH:,}")
    return value


def _start(text: str) -> str:
    if text not in ("earliest", "latest"):
        raise ValueError("not earliest|latest")
    return text


def _regex(text: str) -> str:
    re.compile(text)
    return text


def _kafka_option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError("not key=value")
    return name.strip(), value


def _type_seconds(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise ValueError("not TYPE=SECONDS")
    return name, _seconds(value)


def _outbox(text: str) -> str:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise ValueError("not NAME=DB_URL[#table]")
    return text


_DECLARED = (
    Setting("bootstrap", str, "127.0.0.1:9092", "Kafka bootstrap servers, HOST:PORT[,...]"),
    Setting("topics", _regex, "^.*",
            "regex of the topics to read (anchored with ^; topics starting with __ are skipped)"),
    Setting("group", str, "choreoscope-collector", "the collector's consumer group"),
    Setting("from", _start, "earliest",
            "where a new group starts: earliest (all history) or latest"),
    Setting("jaeger", _http_url, None, "Jaeger query base URL, e.g. http://127.0.0.1:16686"),
    Setting("otlp_port", _port, 4318, "OTLP/HTTP receiver port (0 disables the receiver)"),
    Setting("otlp_host", str, "127.0.0.1", "OTLP/HTTP receiver listen address"),
    Setting("outbox", _outbox, (), "outbox table to watch, NAME=DB_URL[#table] (repeatable)",
            repeatable=True),
    Setting("stuck_after", _seconds, 60.0,
            "seconds after a flow's last event reached the bus (or its last span ended) "
            "after which a flow waiting on a non-terminal event is stuck"),
    Setting("stuck_after_type", _type_seconds, (),
            "stuck timeout of one event type, TYPE=SECONDS (repeatable)", repeatable=True),
    Setting("outbox_stuck_after", _seconds, 30.0,
            "seconds after which a pending outbox row is stuck"),
    Setting("outbox_max_attempts", _positive_int, 5,
            "the relays' max_attempts: a pending outbox row tried this often is stuck"),
    Setting("skew", _seconds, 1.0, "tolerated clock skew between producers, seconds"),
    Setting("orphan_after", _seconds, 300.0,
            "seconds an event waits for its cause (causation id) before it is an orphan"),
    Setting("untraced_after", _seconds, 120.0,
            "seconds an event's trace may take to arrive before the event is untraced"),
    Setting("retention", _days, 7.0,
            "days a flow is kept once idle, with its spans and anomalies; a flow that never "
            "ends is cut at twice that (0 keeps everything)"),
    Setting("metrics_port", _port, None, "Prometheus metrics port (unset: no metrics server)"),
    Setting("metrics_host", str, "127.0.0.1", "Prometheus metrics listen address"),
    Setting("batch_size", _batch_size, 5000,
            "records consumed and stored per batch (1 to 1,000,000)"),
    Setting("batch_timeout", _seconds, 0.5, "longest wait for a batch to fill, seconds"),
    Setting("analyze_interval", _seconds, 5.0, "seconds between analysis passes"),
    Setting("poll_interval", _seconds, 10.0,
            "seconds between outbox polls and consumer lag measurements"),
    Setting("redact", _regex, r"email|phone|card|password|token|secret",
            "regex (case-insensitive) of data keys, header names and span attribute keys whose "
            "values are redacted"),
    Setting("max_data_bytes", _positive_int, 64 * 1024,
            "largest stored data JSON in bytes; larger data keeps a truncation marker "
            "(record headers larger than this are cut to fit, with a problem)"),
    Setting("kafka_option", _kafka_option, (),
            "extra librdkafka setting key=value, e.g. security.protocol=SASL_SSL (repeatable)",
            repeatable=True),
)

SETTINGS: dict[str, Setting] = {s.name: s for s in _DECLARED}


def lookup(name: str, argument: Any = None, env: Mapping[str, str] | None = None) -> Any:
    """The value of setting `name`: `argument` if given, else its environment variable, else
    its default. Strings are converted with the setting's type; bad ones raise SettingsError."""
    setting = SETTINGS[name]
    env = os.environ if env is None else env
    if setting.repeatable:
        if argument:
            raw_items = list(argument)
        elif env.get(setting.env):
            raw_items = [item for item in env[setting.env].split() if item]
        else:
            return setting.default
        return tuple(_convert(setting, item) for item in raw_items)
    if argument is not None:
        return _convert(setting, argument)
    if env.get(setting.env) not in (None, ""):
        return _convert(setting, env[setting.env])
    return setting.default


def _convert(setting: Setting, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return setting.type(raw)
    except (ValueError, re.error) as exc:
        raise SettingsError(
            f"{setting.name} ({setting.env}): expected {setting.doc}, got {raw!r} ({exc})"
        ) from None


@dataclass(frozen=True)
class CollectSettings:
    """Everything `choreoscope collect` needs, resolved once at start-up."""

    bootstrap: str = "127.0.0.1:9092"
    topics: str = "^.*"
    group: str = "choreoscope-collector"
    start: str = "earliest"
    jaeger: str | None = None
    otlp_port: int = 4318
    otlp_host: str = "127.0.0.1"
    outbox: tuple[str, ...] = ()
    stuck_after: float = 60.0
    stuck_after_type: tuple[tuple[str, float], ...] = ()
    outbox_stuck_after: float = 30.0
    outbox_max_attempts: int = 5
    skew: float = 1.0
    orphan_after: float = 300.0
    untraced_after: float = 120.0
    retention: float = 7.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    batch_size: int = 5000
    batch_timeout: float = 0.5
    analyze_interval: float = 5.0
    poll_interval: float = 10.0
    redact: str = r"email|phone|card|password|token|secret"
    max_data_bytes: int = 64 * 1024
    kafka_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None, **arguments: Any) -> CollectSettings:
        """Resolve every setting from `arguments` (None = not given), the environment and
        the defaults."""
        values = {name: lookup(name, arguments.get(name), env) for name in SETTINGS}
        values["start"] = values.pop("from")
        values["kafka_options"] = dict(values.pop("kafka_option"))
        names = [spec.partition("=")[0] for spec in values["outbox"]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise SettingsError(f"outbox (CHOREOSCOPE_OUTBOX): expected distinct source names, "
                                f"got {', '.join(repeated)} more than once")
        return cls(**values)

    @property
    def topic_pattern(self) -> str:
        """The subscription regex, anchored with `^` as librdkafka requires."""
        return self.topics if self.topics.startswith("^") else "^" + self.topics
