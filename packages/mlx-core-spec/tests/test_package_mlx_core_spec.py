"""The distribution installs its subpackage(s) into the ``mlx_core`` namespace."""

import importlib

import pytest

SUBPACKAGES = ["mlx_core.spec"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_and_exports_resolve(name: str) -> None:
    module = importlib.import_module(name)
    for public in getattr(module, "__all__", []):
        assert hasattr(module, public), f"{name}.__all__ names {public!r}, which is missing"


def test_mlx_core_is_a_namespace_package() -> None:
    import mlx_core

    assert getattr(mlx_core, "__file__", None) is None
    assert len(list(mlx_core.__path__)) >= 1
