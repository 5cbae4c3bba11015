"""Shared fixtures: a tiny demo model trained by the shipped script's --quick mode, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"


def _random_model(config: dict[str, Any], seed: int, quantize: bool = False) -> Any:
    """A reference-family model from a config dict with seeded N(0, 0.3²) matrices (1-D params N(0, 1)),
    optionally 4-bit quantized in groups of 32, evaluated."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_core.models import Model, ModelArgs

    model = Model(ModelArgs.from_dict(config))
    rng = np.random.default_rng(seed)
    model.load_weights(
        [
            (k, mx.array((rng.standard_normal(v.shape) * (0.3 if v.ndim > 1 else 1.0)).astype(np.float32)))
            for k, v in tree_flatten(model.parameters())
        ]
    )
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
    mx.eval(model.parameters())
    return model


@pytest.fixture
def random_model() -> Callable[..., Any]:
    """``random_model(config, seed, quantize=False)``: see `_random_model`."""
    return _random_model


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
