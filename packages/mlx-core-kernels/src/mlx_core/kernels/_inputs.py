"""CUDA kernels that leave out the inputs a launch does not read.

MLX passes every declared input of an ``mx.fast.cuda_kernel`` to every launch, and each one costs host time
when the step is encoded (~0.65 µs per input and ~1.8 µs per output on the lent H100's host;
``benchmarks/kernel_host_cost.py``).
Our kernels declare inputs that only some template settings read (quantization scales, a residual, the
new token's key). `kernel_reading` builds, once per set of inputs read, a kernel that declares only those;
the source still names the others, as preprocessor aliases of an input that is passed
(``#define k_new queries``), which is sound because the template switches their code off.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from typing import Any

import mlx.core as mx
from mlx_core.kernels._sources import kernel_source


def _input_of(alias: str) -> str:
    """The input an alias stands for: ``k_new`` and ``k_new_strides`` both stand for ``k_new``."""
    return alias.removesuffix("_strides")


@functools.cache
def _kernel(
    name: str,
    inputs: tuple[str, ...],
    read: frozenset[str],
    alias_items: tuple[tuple[str, str], ...],
    outputs: tuple[str, ...],
    source: str,
    headers: tuple[str, ...],
    ensure_row_contiguous: bool,
    view_items: tuple[tuple[str, str], ...],
) -> Any:
    # Checked and sorted here, once per distinct launch: `kernel_reading` runs at every (eager) launch.
    unknown = sorted(n for n in read if n not in inputs)
    if unknown:
        raise ValueError(f"{name} has no inputs {unknown}.")
    aliases = dict(alias_items)
    missing = [n for n in inputs if n not in read and n not in aliases]
    if missing:
        raise ValueError(f"inputs {missing} of {name} have no alias, so every launch must pass them.")
    views = sorted(view_items)
    mask = sum(1 << i for i, n in enumerate(inputs) if n not in read)
    defines = "".join(
        f"#define {alias} {target}\n" for alias, target in sorted(alias_items) if _input_of(alias) not in read
    ) + "".join(f"#define {view} ({expression})\n" for view, expression in views)
    tag = f"_r{mask:x}" if mask else ""
    tag += f"_v{zlib.crc32(repr(tuple(views)).encode()):08x}" if views else ""
    return mx.fast.cuda_kernel(
        name=name + tag,
        input_names=[n for n in inputs if n in read],
        output_names=list(outputs),
        source=kernel_source(source),
        header="".join(kernel_source(h) for h in headers) + defines,
        ensure_row_contiguous=ensure_row_contiguous,
    )


def kernel_reading(
    name: str,
    inputs: tuple[str, ...],
    read: frozenset[str],
    aliases: Mapping[str, str],
    outputs: tuple[str, ...],
    source: str,
    headers: tuple[str, ...],
    ensure_row_contiguous: bool = True,
    views: Mapping[str, str] | None = None,
) -> Any:
    """The kernel ``name`` declaring only the ``inputs`` in ``read`` (in their order).

    ``aliases`` maps every input that may be left out (and each ``<input>_strides`` the source reads) to a
    name that is always passed; ``source`` and ``headers`` are file names under ``sources/``. ``views``
    maps names the source writes to expressions over a declared output (``"part_ml": "part + n"``): several
    buffers of one launch in one output, each output costing ~1.8 µs of host time per launch.
    """
    return _kernel(
        name,
        inputs,
        frozenset(read),
        tuple(aliases.items()),
        outputs,
        source,
        headers,
        ensure_row_contiguous,
        tuple((views or {}).items()),
    )


def inputs_read(
    inputs: tuple[str, ...], given: Mapping[str, mx.array | None]
) -> tuple[frozenset[str], list[mx.array]]:
    """The names of the ``inputs`` a launch reads and their arrays, in the kernel's order. ``given`` maps
    every input name to its array, or to ``None`` where this launch's template settings do not read it."""
    if set(given) != set(inputs):
        raise ValueError(f"expected arrays for {list(inputs)}, got {list(given)}.")
    read = frozenset(n for n in inputs if given[n] is not None)
    return read, [a for n in inputs if (a := given[n]) is not None]
