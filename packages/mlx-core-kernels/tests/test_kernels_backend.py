"""Backend dispatch: cached per (device, dtype), overridable by env var or argument."""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx
import pytest
from mlx_core.kernels import ENV_VAR, backend, clear_backend_cache, fused_swiglu
from mlx_core.kernels._sources import kernel_source


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_VAR, raising=False)
    clear_backend_cache()
    yield
    clear_backend_cache()


def expected_auto() -> str:
    if mx.default_device().type == mx.gpu:
        if mx.cuda.is_available():
            return "cuda"
        if mx.metal.is_available():
            return "metal"
    return "fallback"


def test_auto_follows_the_hardware() -> None:
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        assert backend(dtype) == expected_auto()


def test_cpu_device_uses_fallback() -> None:
    assert backend(mx.float32, mx.cpu) == "fallback"


def test_unsupported_dtype_uses_fallback() -> None:
    assert backend(mx.int32) == "fallback"


def test_env_var_forces_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "FALLBACK")
    assert backend(mx.bfloat16) == "fallback"


def test_decision_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    first = backend(mx.float16)
    monkeypatch.setenv(ENV_VAR, "not-a-backend")
    assert backend(mx.float16) == first  # cached: the variable is not read again
    clear_backend_cache()
    with pytest.raises(ValueError, match=ENV_VAR):
        backend(mx.float16)


def test_requiring_an_absent_backend_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = "metal" if mx.cuda.is_available() else "cuda"
    if absent == "metal" and mx.metal.is_available():
        pytest.skip("both GPU backends present")
    monkeypatch.setenv(ENV_VAR, absent)
    with pytest.raises(RuntimeError, match=absent):
        backend(mx.float32, mx.cpu)
    with pytest.raises(RuntimeError, match="no"):
        fused_swiglu(mx.ones((2,)), mx.ones((2,)), backend=absent)


@pytest.mark.parametrize(
    "name",
    [
        "common.cuh",
        "swiglu.cu",
        "modulate.cu",
        "swiglu.metal",
        "modulate.metal",
        "decode_attention_partial.cu",
        "decode_attention_combine.cu",
    ],
)
def test_kernel_sources_ship_as_package_data(name: str) -> None:
    text = kernel_source(name)
    assert len(text) > 200
    assert ("mck_" in text) if name.endswith(".cuh") else ("_shape" in text)
