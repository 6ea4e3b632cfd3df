"""`choreoscope dashboard`: the streamlit command line, its environment, bad options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from choreoscope.collector.cli import build_parser
from choreoscope.collector.commands import dashboard


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_defaults_serve_headless_on_loopback() -> None:
    """Defaults: 127.0.0.1:8501, headless, no usage stats, no Jaeger UI, 5 s refresh."""
    cmd, env = dashboard.command(parse("--store", "sqlite:///rel/store.db", "dashboard"))
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert Path(cmd[4]).name == "app.py" and Path(cmd[4]).is_file()
    args = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert args["--server.port"] == "8501"
    assert args["--server.address"] == "127.0.0.1"
    assert args["--server.headless"] == "true"
    assert args["--browser.gatherUsageStats"] == "false"
    assert env["CHOREOSCOPE_STORE"] == "sqlite:///" + os.path.abspath("rel/store.db")
    assert env["CHOREOSCOPE_REFRESH_S"] == "5"
    assert "CHOREOSCOPE_JAEGER_UI" not in env


def test_options_reach_the_app() -> None:
    """--port, --host, --jaeger-ui and --refresh are passed on; URLs stay as given."""
    cmd, env = dashboard.command(parse(
        "--store", "postgresql://u:pw@db/cs", "dashboard", "--port", "9000", "--host",
        "0.0.0.0", "--jaeger-ui", "http://localhost:16686/", "--refresh", "10"))
    args = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert (args["--server.port"], args["--server.address"]) == ("9000", "0.0.0.0")
    assert env["CHOREOSCOPE_JAEGER_UI"] == "http://localhost:16686"
    assert env["CHOREOSCOPE_STORE"] == "postgresql://u:pw@db/cs"
    assert env["CHOREOSCOPE_REFRESH_S"] == "10"
    assert "pw" not in " ".join(cmd)  # the password travels in the environment only


@pytest.mark.parametrize(("argv", "message"), [
    (("--jaeger-ui", "localhost:16686"),
     "--jaeger-ui: expected an http(s):// URL, got 'localhost:16686'"),
    (("--port", "70000"), "--port: expected a port 0-65535, got 70000"),
    (("--refresh", "-1"), "--refresh: expected seconds >= 0, got -1.0"),
])
def test_bad_options_are_rejected(argv: tuple[str, ...], message: str) -> None:
    """Bad options stop the command with "expected X, got Y"."""
    with pytest.raises(SystemExit) as exc:
        dashboard.command(parse("dashboard", *argv))
    assert str(exc.value) == message
