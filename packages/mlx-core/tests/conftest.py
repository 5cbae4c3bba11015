"""Shared fixtures: a tiny demo model trained by the shipped script's --quick mode, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(main, draft) model directories from ``train_demo_model.py --quick`` (a few seconds on CPU)."""
    out = tmp_path_factory.mktemp("tiny_demo")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "final train loss" in done.stdout and "sample (greedy)" in done.stdout
    return out / "demo", out / "demo_draft"


def _run_cli(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``mlx-core ARGS`` in a fresh interpreter (as a user would run it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLX_CORE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mlx_core.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``mlx-core ARGS`` in a subprocess; returns the CompletedProcess (text stdout/stderr)."""
    return _run_cli
