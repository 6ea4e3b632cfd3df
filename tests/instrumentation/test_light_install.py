"""The instrumentation distribution stays light: no pandas, Streamlit or SQLAlchemy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("pandas", "streamlit", "sqlalchemy", "numpy", "confluent_kafka", "choreoscope.collector")


def test_import_pulls_no_heavy_modules() -> None:
    """Importing choreoscope.instrumentation in a fresh interpreter loads none of the heavy stacks."""
    code = (
        "import json, sys\n"
        "import choreoscope.instrumentation as ci\n"
        "print(json.dumps(sorted(m for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert heavy == []


def test_distribution_declares_no_heavy_dependency() -> None:
    """instrumentation/pyproject.toml depends on none of the heavy stacks."""
    import tomllib

    pyproject = Path(__file__).parents[2] / "instrumentation" / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in deps}
    assert names.isdisjoint({"pandas", "streamlit", "sqlalchemy", "numpy", "confluent-kafka"})


def test_pip_install_alone_pulls_no_heavy_package(tmp_path: Path) -> None:
    """`pip install ./instrumentation` into a fresh venv installs none of the heavy stacks."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    root = Path(__file__).parents[2]
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(root / "instrumentation")],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [py, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    ).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert "choreoscope-instrumentation" in installed
    assert installed.isdisjoint({"pandas", "streamlit", "sqlalchemy", "numpy", "confluent-kafka"})
    subprocess.run([py, "-c", "import choreoscope.instrumentation"], check=True)
