"""The public names of choreoscope.collector.traces."""

from __future__ import annotations

import choreoscope.collector.traces as traces


def test_exported_members() -> None:
    """Exactly these names are public, and each resolves to its object."""
    assert traces.__all__ == ["JaegerClient", "JaegerError", "JaegerUnavailable", "OtlpReceiver",
                              "Span", "SpanFormatError", "SpanSink", "TraceFetcher",
                              "trace_availability"]
    for name in traces.__all__:
        assert getattr(traces, name).__name__ == name
