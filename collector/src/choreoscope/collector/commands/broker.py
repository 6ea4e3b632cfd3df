"""`choreoscope broker`: run the embedded Kafka-compatible broker (Tansu) until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..broker import BrokerError, EmbeddedBroker


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9092, help="listen port (default 9092)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker = EmbeddedBroker(host=args.host, port=args.port).start()
    except BrokerError as exc:
        print(f"choreoscope broker: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"broker ready: bootstrap {broker.bootstrap} (Ctrl-C stops it)", flush=True)
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                print("broker exited:", broker.log_tail(), file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0
