"""`choreoscope dashboard`: serve the Streamlit dashboard on the store, read-only.

Runs `streamlit run <choreoscope.dashboard app.py>` headless; the store URL, the Jaeger UI
and the refresh interval reach the app through the environment variables that
`choreoscope.dashboard.settings` declares.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve the dashboard (Streamlit) on the store")
    p.add_argument("--port", type=int, default=8501, help="listen port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--jaeger-ui", default=None, metavar="URL",
                   help="Jaeger UI base URL for trace links, e.g. http://localhost:16686 "
                        "(without it no Jaeger links are shown)")
    p.add_argument("--refresh", type=float, default=5.0, metavar="SECONDS",
                   help="default auto-refresh interval of the pages (default 5; 0 = off)")
    p.set_defaults(func=run)


def app_path() -> Path:
    """The dashboard's Streamlit entry script (needs the choreoscope-dashboard distribution)."""
    try:
        import choreoscope.dashboard as dashboard
    except ImportError as exc:
        if exc.name not in ("choreoscope.dashboard", "streamlit", "pandas", "altair"):
            raise
        raise SystemExit("the dashboard is not installed: pip install choreoscope-dashboard "
                         f"(missing {exc.name})") from exc
    return Path(dashboard.__file__).with_name("app.py")


def command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` command line and environment for these arguments."""
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"--port: expected a port 0-65535, got {args.port}")
    if args.refresh < 0:
        raise SystemExit(f"--refresh: expected seconds >= 0, got {args.refresh}")
    jaeger = args.jaeger_ui
    if jaeger is not None:
        parsed = urlparse(jaeger)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SystemExit(f"--jaeger-ui: expected an http(s):// URL, got {jaeger!r}")
    app = app_path()
    from choreoscope.dashboard import settings

    env = dict(os.environ)
    env[settings.STORE_ENV] = _absolute_sqlite(args.store)
    env[settings.REFRESH_ENV] = f"{args.refresh:g}"
    if jaeger:
        env[settings.JAEGER_UI_ENV] = jaeger.rstrip("/")
    else:
        env.pop(settings.JAEGER_UI_ENV, None)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app),
           "--server.port", str(args.port), "--server.address", args.host,
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.runOnSave", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "viewer", "--theme.base", "light"]
    return cmd, env


def _absolute_sqlite(url: str) -> str:
    """`sqlite:///rel.db` relative to this process's directory, whatever the child's cwd."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            path = url[len(prefix):]
            if path and not path.startswith(":memory:") and not path.startswith("file:"):
                return prefix + os.path.abspath(path)
    return url


def run(args: argparse.Namespace) -> int:
    cmd, env = command(args)
    print(f"dashboard: http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    child = subprocess.Popen(cmd, env=env)

    def _stop(*_: object) -> None:
        if child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, _stop)
    try:
        return child.wait()
    except KeyboardInterrupt:
        _stop()
        try:
            return child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            return 130
