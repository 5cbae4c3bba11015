"""Backend dispatch: which implementation the fused ops use, decided once per (device, dtype).

CUDA devices run ``mx.fast.cuda_kernel`` kernels, Metal devices ``mx.fast.metal_kernel`` kernels, and
everything else (the CPU) a compiled pure-MLX fallback. ``MLX_CORE_KERNELS_BACKEND`` (read here and
only here) overrides the choice: ``auto`` (default), ``fallback`` (always the pure-MLX path, for
debugging and A/B benchmarks), or ``cuda`` / ``metal`` (require that backend; error if absent).
"""

from __future__ import annotations

import os
from typing import Literal

import mlx.core as mx

Backend = Literal["cuda", "metal", "fallback"]

ENV_VAR = "MLX_CORE_KERNELS_BACKEND"
FLOAT_DTYPES: tuple[mx.Dtype, ...] = (mx.float32, mx.float16, mx.bfloat16)
_CHOICES = ("auto", "fallback", "cuda", "metal")

_decided: dict[tuple[str, mx.Dtype], Backend] = {}


def _available(name: str, device: mx.Device) -> bool:
    if device.type != mx.gpu:
        return False
    if name == "cuda":
        return bool(mx.cuda.is_available())
    return bool(mx.metal.is_available())


def _check_choice(value: str, source: str) -> str:
    choice = value.strip().lower()
    if choice not in _CHOICES:
        raise ValueError(f"{source}={value!r} is not a kernels backend; use one of {', '.join(_CHOICES)}.")
    return choice


def _decide(choice: str, dtype: mx.Dtype, device: mx.Device) -> Backend:
    if choice == "fallback" or dtype not in FLOAT_DTYPES:
        return "fallback"
    if choice in ("cuda", "metal"):
        if not _available(choice, device):
            raise RuntimeError(
                f"kernels backend {choice!r} was requested but the device {device} has no {choice} "
                f"support; unset {ENV_VAR} or pass backend='auto'."
            )
        return choice  # type: ignore[return-value]
    for name in ("cuda", "metal"):
        if _available(name, device):
            return name  # type: ignore[return-value]
    return "fallback"


def backend(dtype: mx.Dtype = mx.float32, device: mx.Device | mx.DeviceType | None = None) -> Backend:
    """Return the implementation fused ops use for ``dtype`` arrays on ``device`` (default device).

    ``device`` may be an ``mx.Device`` or a device type such as ``mx.gpu``.

    Decided on first use per (device, dtype) from the hardware and ``MLX_CORE_KERNELS_BACKEND``,
    then cached; call :func:`clear_backend_cache` after changing the variable.
    """
    if device is None:
        dev = mx.default_device()
    elif isinstance(device, mx.DeviceType):
        dev = mx.Device(device)
    else:
        dev = device
    key = (str(dev), dtype)
    found = _decided.get(key)
    if found is None:
        choice = _check_choice(os.environ.get(ENV_VAR, "auto"), ENV_VAR)
        found = _decide(choice, dtype, dev)
        _decided[key] = found
    return found


def resolve_backend(requested: str | None, dtype: mx.Dtype) -> Backend:
    """The backend for one call: ``requested`` (``None``/``"auto"`` → :func:`backend`) validated."""
    if requested is None:
        return backend(dtype)
    choice = _check_choice(requested, "backend")
    if choice == "auto":
        return backend(dtype)
    return _decide(choice, dtype, mx.default_device())


def clear_backend_cache() -> None:
    """Forget the cached decisions (e.g. after changing ``MLX_CORE_KERNELS_BACKEND``)."""
    _decided.clear()
