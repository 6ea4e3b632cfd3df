"""The source passes the linter and the type checker the repository is configured for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["instrumentation/src", "collector/src", "dashboard/src"]


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_ruff_finds_nothing() -> None:
    """`ruff check` over sources, tests and benchmarks (rules in pyproject.toml)."""
    done = _run("ruff", "check", "--no-cache", ".", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    """`mypy` over the three distributions' sources (settings in pyproject.toml)."""
    done = _run("mypy", "--cache-dir", str(tmp_path / "mypy"), *PACKAGES, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
