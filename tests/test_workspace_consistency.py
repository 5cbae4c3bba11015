"""The consistency check catches what uv does not: ranges that exclude siblings, stray namespace files."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = ROOT / ".ci" / "check_consistency.py"


def _copy_workspace(tmp_path: pathlib.Path) -> pathlib.Path:
    dest = tmp_path / "ws"
    ignore = shutil.ignore_patterns("__pycache__", "*.npy")
    shutil.copytree(ROOT / "packages", dest / "packages", ignore=ignore)
    return dest


def _check(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True)


def test_real_workspace_passes() -> None:
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr


def test_range_excluding_in_repo_version_fails(tmp_path: pathlib.Path) -> None:
    ws = _copy_workspace(tmp_path)
    pyproject = ws / "packages" / "mlx-core-attn" / "pyproject.toml"
    text = pyproject.read_text()
    assert '"mlx-core-cache>=0.1.0,<0.2"' in text
    pyproject.write_text(text.replace('"mlx-core-cache>=0.1.0,<0.2"', '"mlx-core-cache>=0.2,<0.3"'))
    result = _check(ws)
    assert result.returncode == 1
    assert "excludes the in-repo" in result.stderr


def test_stray_namespace_init_fails(tmp_path: pathlib.Path) -> None:
    ws = _copy_workspace(tmp_path)
    (ws / "packages" / "mlx-core-cache" / "src" / "mlx_core" / "__init__.py").write_text("")
    result = _check(ws)
    assert result.returncode == 1
    assert "namespace" in result.stderr


def test_undeclared_sibling_import_fails(tmp_path: pathlib.Path) -> None:
    ws = _copy_workspace(tmp_path)
    stray = ws / "packages" / "mlx-core-cache" / "src" / "mlx_core" / "cache" / "stray.py"
    stray.write_text("import mlx_core.generate\n")
    result = _check(ws)
    assert result.returncode == 1
    assert "does not declare" in result.stderr
