"""mlx_core.api re-exports every public name of the seven packages, as the very same objects."""

from __future__ import annotations

import importlib

import mlx_core.api as api
import pytest

PACKAGES = (
    "mlx_core.cache",
    "mlx_core.kernels",
    "mlx_core.attn",
    "mlx_core.generate",
    "mlx_core.spec",
    "mlx_core.convert",
    "mlx_core.audio",
)
MODEL_NAMES = (
    "Model",
    "ModelArgs",
    "ModelLoadError",
    "ShardingError",
    "demo_model_path",
    "distributed_group",
    "fuse_projections",
    "load_model",
    "load_sharded",
    "shard_model",
)
HINT = "run `uv run python packages/mlx-core/scripts/update_api.py` to regenerate mlx_core/api/__init__.py"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_re_exported(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    missing = sorted(set(module.__all__) - set(api.__all__))
    assert not missing, f"mlx_core.api lacks {missing} from {package}; {HINT}"
    for name in module.__all__:
        assert getattr(api, name) is getattr(module, name), f"api.{name} is not {package}.{name}"


def test_no_stale_or_duplicate_names() -> None:
    expected = {n for p in PACKAGES for n in importlib.import_module(p).__all__} | set(MODEL_NAMES)
    assert len(api.__all__) == len(set(api.__all__))
    stale = sorted(set(api.__all__) - expected)
    assert not stale, f"mlx_core.api exports {stale}, which no package exports any more; {HINT}"
    models = importlib.import_module("mlx_core.models")
    for name in MODEL_NAMES:
        assert getattr(api, name) is getattr(models, name)
