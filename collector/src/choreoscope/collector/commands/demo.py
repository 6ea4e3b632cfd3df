"""`choreoscope demo`: the embedded broker, a demo shop, the collector and the dashboard."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run a demo shop on the embedded broker, watched by the collector and the dashboard",
    )
    p.add_argument("--rate", type=float, default=5.0, help="orders per second (default 5)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--chaos", choices=["none", "mild", "heavy"], default="mild",
                   help="faults to inject (default mild)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    p.add_argument("--store", dest="demo_store", default=None,
                   help="store URL (default: a fresh SQLite file in the work directory)")
    p.add_argument("--workdir", type=Path, default=Path("choreoscope-demo"),
                   help="where the demo keeps its databases and logs (recreated on start)")
    p.add_argument("--jaeger", default=None, help="Jaeger query URL; the collector reads traces there")
    p.add_argument("--jaeger-ui", default=None, help="Jaeger UI URL for trace links")
    p.add_argument("--jaeger-otlp", default=None,
                   help="OTLP/HTTP URL the services export to (default: the Jaeger host, port 4318)")
    p.add_argument("--stuck-after", type=float, default=20.0,
                   help="seconds without progress before a flow is stuck (default 20)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.runner import Demo, DemoOptions

    demo = Demo(DemoOptions(
        rate=args.rate, duration=args.duration, chaos=args.chaos, dashboard=not args.no_dashboard,
        dashboard_port=args.port, store=_store(args), workdir=args.workdir, jaeger=args.jaeger,
        jaeger_ui=args.jaeger_ui or (args.jaeger if args.jaeger else None),
        jaeger_otlp=args.jaeger_otlp, stuck_after=args.stuck_after,
    ))
    return demo.run()


def _store(args: argparse.Namespace) -> str | None:
    """`demo --store URL` or `--store URL demo`; None: a fresh SQLite file in the work directory."""
    if args.demo_store is not None:
        return str(args.demo_store)
    return str(args.store) if getattr(args, "store_given", False) else None
