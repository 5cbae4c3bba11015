"""Every distribution installs its subpackage(s) into the one ``mlx_core`` namespace and exports its names."""

from __future__ import annotations

import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBPACKAGES = sorted(
    f"mlx_core.{pkg.name}"
    for pkg in ROOT.glob("packages/*/src/mlx_core/*")
    if pkg.is_dir() and (pkg / "__init__.py").exists()
)


def test_every_member_subpackage_was_found() -> None:
    assert {"mlx_core.cache", "mlx_core.attn", "mlx_core.kernels", "mlx_core.generate"} <= set(SUBPACKAGES)
    assert {"mlx_core.audio", "mlx_core.spec", "mlx_core.convert", "mlx_core.api"} <= set(SUBPACKAGES)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_and_exports_resolve(name: str) -> None:
    module = importlib.import_module(name)
    for public in getattr(module, "__all__", []):
        assert hasattr(module, public), f"{name}.__all__ names {public!r}, which is missing"


def test_mlx_core_is_a_namespace_package() -> None:
    import mlx_core

    assert getattr(mlx_core, "__file__", None) is None
    paths = {pathlib.Path(p).resolve() for p in mlx_core.__path__}
    assert len(paths) >= 8, "each member contributes its own mlx_core/ directory"
