"""The store's tables (SQLAlchemy Core). One schema for SQLite and PostgreSQL.

Times are integers: milliseconds since the Unix epoch (`*_ms`) or, for spans, microseconds
(`*_us`). JSON columns hold JSON text. The query layer turns these into the shapes of
DESIGN.md section 6.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
)

SCHEMA_VERSION = 2

# Columns added to tables of earlier versions (all nullable): `Store.create` adds them to the
# stores those versions made; readers of a store not upgraded yet do without them.
ADDED_COLUMNS = {"events": ("trace_sampled",)}

metadata = MetaData()

# Every record read from the bus, decoded. Idempotent by (topic, partition, offset).
events = Table(
    "events",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("offset", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(128)),
    Column("type", String(255)),
    Column("source", String(255)),
    Column("subject", String(255)),
    Column("correlation_id", String(128)),
    Column("causation_id", String(128)),
    # The flow this event belongs to: correlation id, else trace id, else event id.
    Column("flow_id", String(128), nullable=False),
    Column("schema_version", String(32)),
    Column("time", String(64)),  # ce_time as sent
    Column("time_ms", BigInteger),  # ce_time parsed, None when missing or unparseable
    Column("sequence", BigInteger),
    Column("key", Text),
    Column("trace_id", String(32)),  # from traceparent: the producer span's trace
    Column("span_id", String(16)),  # from traceparent: the producer span
    Column("broker_ts_ms", BigInteger),  # record timestamp
    Column("observed_at_ms", BigInteger, nullable=False),  # when the collector stored it
    Column("envelope", String(16), nullable=False),  # binary|structured|json_envelope|unknown
    Column("problems", Text),  # JSON list of "code" / "code: detail" strings, None when clean
    Column("headers", Text),  # JSON object of the record headers (decoded text)
    Column("data", Text),  # JSON of the redacted, size-capped data
    Column("data_size", Integer),  # bytes of the original value
    Column("data_truncated", Boolean, nullable=False, default=False),
    # the traceparent's sampled flag: False when the producer did not record its span (a
    # sampler said no), so no trace of it can ever appear; None without trace context
    Column("trace_sampled", Boolean),
)
Index("ix_events_flow", events.c.flow_id)
Index("ix_events_event_id", events.c.event_id)
# (trace_id, span_id): the events of a trace, and the event a span published (a producer span
# that names no event is joined to its flow by its trace and span id: reconstruct/load.py);
# on trace_id alone, a trace of many events was scanned whole for each such span.
Index("ix_events_trace_span", events.c.trace_id, events.c.span_id)
Index("ix_events_observed", events.c.observed_at_ms)
# Indexes of earlier versions, dropped by `Store.create` from the stores they made. None on
# causation_id: orphans are found through ix_events_event_id, and an index nothing reads
# cost every ingested row a B-tree insert. None on type alone: ix_events_type_version
# (type, schema_version) serves type lookups. None on trace_id alone: ix_events_trace_span.
RETIRED_INDEXES = ("ix_events_causation", "ix_events_type", "ix_events_trace")
# Dashboard (event health): small partial indexes over the few problem / untraced events, and
# schema versions per type counted from the index alone.
Index("ix_events_problems", events.c.source, events.c.type,
      sqlite_where=events.c.problems.is_not(None),
      postgresql_where=events.c.problems.is_not(None))
Index("ix_events_untraced", events.c.source, events.c.type,
      sqlite_where=events.c.trace_id.is_(None), postgresql_where=events.c.trace_id.is_(None))
Index("ix_events_type_version", events.c.type, events.c.schema_version)

# Spans from Jaeger or the OTLP receiver. Idempotent by (trace_id, span_id).
spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_span_id", String(16)),
    Column("name", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # internal|server|client|producer|consumer
    Column("service", String(255)),
    Column("start_us", BigInteger, nullable=False),
    Column("duration_us", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),  # unset|ok|error
    Column("status_message", Text),
    Column("error_type", String(255)),
    Column("message_id", String(128)),  # messaging.message.id (= ce_id)
    Column("conversation_id", String(128)),  # messaging.message.conversation_id
    Column("consumer_group", String(255)),  # messaging.consumer.group.name
    Column("destination", String(255)),  # messaging.destination.name
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("out_of_order", Boolean, nullable=False, default=False),
    Column("attributes", Text),  # JSON object
    Column("links", Text),  # JSON list of {trace_id, span_id}
    Column("events", Text),  # JSON list of {name, time_us, attributes}
    Column("origin", String(8), nullable=False),  # jaeger|otlp
    Column("received_at_ms", BigInteger, nullable=False),
)
Index("ix_spans_message", spans.c.message_id)
Index("ix_spans_start", spans.c.start_us)
# Consumer spans that name no event yet (OpenTelemetry's own Kafka instrumentation writes no
# message id; traces/consumed.py names them from their parent): few, and each pass reads them.
_UNNAMED_CONSUMER = and_(spans.c.kind == "consumer", spans.c.message_id.is_(None))
Index("ix_spans_unnamed_consumer", spans.c.received_at_ms,
      sqlite_where=_UNNAMED_CONSUMER, postgresql_where=_UNNAMED_CONSUMER)

# Which trace ids seen on the bus have been fetched from Jaeger, and when to try again.
trace_fetches = Table(
    "trace_fetches",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_event_ms", BigInteger, nullable=False),
    Column("next_fetch_ms", BigInteger, nullable=False),
    Column("last_fetch_ms", BigInteger),
    Column("attempts", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),  # pending|found|missing|error
    Column("span_count", Integer, nullable=False, default=0),
    Column("last_error", Text),
)
Index("ix_trace_fetches_next", trace_fetches.c.next_fetch_ms)

# One row per flow, recomputed by reconstruction.
flows = Table(
    "flows",
    metadata,
    Column("correlation_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),  # in_progress|completed|stuck|failed
    Column("started_at_ms", BigInteger, nullable=False),
    Column("last_seen_at_ms", BigInteger, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("services", Text, nullable=False),  # JSON list
    Column("event_types", Text, nullable=False),  # JSON list
    Column("trace_ids", Text, nullable=False),  # JSON list
    Column("anomaly_count", Integer, nullable=False, default=0),
    Column("variant", Text, nullable=False),  # event types in causal order, " > " joined
    Column("trace_status", String(16)),  # available|pending|unavailable|unsampled|none
    Column("updated_at_ms", BigInteger, nullable=False),
)
Index("ix_flows_status", flows.c.status)
Index("ix_flows_last_seen", flows.c.last_seen_at_ms)
Index("ix_flows_variant", flows.c.variant)
Index("ix_flows_variant_duration", flows.c.variant, flows.c.duration_ms)  # variant percentiles

# All anomalies in one table; `key` makes detection idempotent.
anomalies = Table(
    "anomalies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(512), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("subkind", String(64)),
    Column("correlation_id", String(128)),
    Column("event_id", String(128)),
    Column("subject", String(255)),
    Column("service", String(255)),
    Column("group_name", String(255)),
    Column("detail", Text, nullable=False),
    Column("extra", Text),  # JSON object, e.g. expected vs observed order
    Column("detected_at_ms", BigInteger, nullable=False),
)
Index("ix_anomalies_kind", anomalies.c.kind)
Index("ix_anomalies_flow", anomalies.c.correlation_id)

# The learned choreography graph, recomputed by reconstruction.
graph_edges = Table(
    "graph_edges",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("target", String(255), primary_key=True),
    Column("kind", String(16), primary_key=True),  # emits|consumed_by
    Column("count", Integer, nullable=False),
    Column("p50_ms", Float),
    Column("p95_ms", Float),
    Column("anomaly_count", Integer, nullable=False, default=0),
)

# Outbox monitor: one row per configured outbox source.
outbox_sources = Table(
    "outbox_sources",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("table_name", String(255), nullable=False),
    Column("reachable", Boolean, nullable=False),
    Column("last_poll_ms", BigInteger, nullable=False),
    Column("last_ok_ms", BigInteger),
    Column("last_error", Text),
    Column("pending", Integer),
    Column("dead", Integer),
    Column("oldest_pending_age_s", Float),
    Column("publish_lag_p95_ms", Float),
    Column("stuck", Text),  # JSON list of stuck rows
)

# Consumer lag per group and topic partition, from the broker's admin API.
consumer_lag = Table(
    "consumer_lag",
    metadata,
    Column("group_name", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("committed", BigInteger),
    Column("end_offset", BigInteger),
    Column("lag", BigInteger),
    Column("measured_at_ms", BigInteger, nullable=False),
)

# The id the broker gave each topic, as last seen by the ingest: a topic deleted and created
# again under its name gets a new id and restarts its offsets (ingest/topics.py). Added after
# the first release: readers of a store an earlier collector wrote do without it.
topic_ids = Table(
    "topic_ids",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("topic_id", String(64), nullable=False),
    Column("seen_at_ms", BigInteger, nullable=False),
)

# The collector's own bookkeeping, which the query layer never reads: a store that lacks
# one (written by an earlier collector, not yet upgraded) can still be read.
BOOKKEEPING_TABLES = ("trace_fetches", "topic_ids")

# Small key/value facts: schema version, collector counters (dropped spans, ...).
meta = Table(
    "meta",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)
