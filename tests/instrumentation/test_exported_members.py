"""The public surface of choreoscope.instrumentation is exactly what __all__ lists."""

from __future__ import annotations

import subprocess
import sys

import choreoscope.instrumentation as ci


def test_all_is_exactly_the_public_api() -> None:
    """__all__ names the contract of DESIGN.md section 6 plus the errors and the loss counter."""
    assert ci.__all__ == [
        "ChoreoscopeError",
        "Event",
        "Outbox",
        "OutboxRelay",
        "TracedProducer",
        "UsageError",
        "carry_context",
        "current_event",
        "dropped_spans",
        "instrument_producer",
        "setup_tracing",
        "traced_consumer",
        "traced_producer",
    ]


def test_every_exported_name_resolves_to_a_public_object() -> None:
    """Each name in __all__ is importable from the package and belongs to it."""
    for name in ci.__all__:
        member = getattr(ci, name)
        assert member.__module__.startswith("choreoscope.instrumentation"), name


def test_tracing_loads_only_when_asked_for() -> None:
    """Importing the package does not import the OTLP exporter; setup_tracing does."""
    code = (
        "import sys\n"
        "import choreoscope.instrumentation as ci\n"
        "before = 'opentelemetry.exporter.otlp.proto.http' in sys.modules\n"
        "ci.setup_tracing\n"
        "after = 'opentelemetry.exporter.otlp.proto.http' in sys.modules\n"
        "print(before, after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
