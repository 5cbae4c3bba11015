"""Split an Nsight Compute kernel list into labelled segments (shared by the ncu benchmark scripts).

A script run under ``ncu --csv --metrics gpu__time_duration.sum`` calls the function `segment_marker`
returns before each group of launches: it prints ``SEG <label>`` and launches a one-thread kernel named
``segment_marker``. `segments` then pairs each label with the kernels ncu listed after that marker.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIME_UNITS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def segment_marker() -> Callable[[str], None]:
    """A function that prints ``SEG <label>`` and launches the marker kernel (CUDA only)."""
    import mlx.core as mx

    kernel: Any = mx.fast.cuda_kernel(
        name="segment_marker", input_names=["x"], output_names=["y"], source="y[0] = x[0] + 1.0f;"
    )
    seed = mx.zeros((4,), dtype=mx.float32)
    mx.eval(seed)

    def mark(label: str) -> None:
        print(f"SEG {label}", flush=True)
        (y,) = kernel(
            inputs=[seed],
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
            output_shapes=[(4,)],
            output_dtypes=[mx.float32],
        )
        mx.eval(y)

    return mark


def segments(path: str | Path) -> list[tuple[str, list[tuple[str, float]]]]:
    """``(label, [(kernel name, µs), ...])`` per marker, in launch order, from a file holding the script's
    stdout and ncu's CSV. Names lose MLX's ``custom_kernel_`` prefix and their parameter lists."""
    lines = Path(path).read_text().splitlines()
    labels = [line.split(None, 1)[1] for line in lines if line.startswith("SEG ")]
    rows = [r for r in csv.reader(line for line in lines if line.startswith('"')) if len(r) > 10]
    if not rows:
        raise SystemExit(f"{path}: no ncu CSV rows (run the script under ncu --csv)")
    head, rows = rows[0], rows[1:]
    name_at, value_at, unit_at = (head.index(h) for h in ("Kernel Name", "Metric Value", "Metric Unit"))
    groups: list[list[tuple[str, float]]] = []
    for r in rows:
        name = re.sub(r"^.*custom_kernel_", "", re.sub(r"\(.*", "", r[name_at]))
        if "segment_marker" in name:
            groups.append([])
        elif groups:
            groups[-1].append((name, float(r[value_at].replace(",", "")) * TIME_UNITS.get(r[unit_at], 1.0)))
    return list(zip(labels, groups, strict=False))
