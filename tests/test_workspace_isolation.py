"""The per-member nox install is isolated: an undeclared sibling import fails there.

This reproduces what ``nox -s "tests(mlx-core-cache)"`` does (``uv sync --locked --package ...`` into a fresh
environment) and shows that a member cannot import a sibling it does not declare, while it can import
what it does declare.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
uv = shutil.which("uv")

pytestmark = pytest.mark.skipif(uv is None, reason="needs uv on PATH")


def _sync_member(venv: pathlib.Path, dist: str) -> pathlib.Path:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    args = [uv, "sync", "--locked", "--no-default-groups", "--package", dist, "--quiet"]
    if sys.platform == "linux":
        args += ["--extra", "cpu"]
    subprocess.run(args, cwd=ROOT, env=env, check=True)
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def _imports(python: pathlib.Path, module: str) -> bool:
    code = f"import {module}"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def test_member_environment_holds_only_declared_siblings(tmp_path: pathlib.Path) -> None:
    python = _sync_member(tmp_path / "venv", "mlx-core-spec")
    # spec declares cache and generate ...
    assert _imports(python, "mlx_core.spec")
    assert _imports(python, "mlx_core.generate")
    assert _imports(python, "mlx_core.cache")
    # ... and not audio, convert, attn or kernels: an import of those would fail in its nox session.
    for undeclared in ("mlx_core.audio", "mlx_core.convert", "mlx_core.attn", "mlx_core.kernels"):
        assert not _imports(python, undeclared), f"{undeclared} leaked into mlx-core-spec's environment"
