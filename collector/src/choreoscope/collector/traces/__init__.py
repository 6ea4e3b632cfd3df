"""Trace sources: Jaeger (fetched by the trace ids seen on the bus) and the OTLP/HTTP receiver.

Both normalise spans into `model.Span` and write them to the `spans` table through
`sink.SpanSink`, idempotently by (trace_id, span_id).
"""
