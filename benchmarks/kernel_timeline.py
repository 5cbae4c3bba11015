"""Per-block ``%globaltimer`` stamps inside one of our CUDA kernels (shared by the timeline benchmarks).

`stamping` stands in for ``mx.fast.cuda_kernel``: a kernel whose name starts with the given prefix is built
from an instrumented copy of its source, with one more output, ``times`` (int64, `STAMPS` per block), and
every launch's ``times`` is collected. In the instrumented source, thread 0 of each block records steps
with `stamp` into shared memory; `write_stamps` (at every exit) records the exit in slot 6, the block's
kind (`set_kind`) in slot 7, and writes all eight. The timer ticks in ~0.26 µs steps on an H100.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx

STAMPS = 8  # per block: slots 0-5 the instrumented steps, 6 the exit, 7 the block's kind
STAMP_HEADER = (
    "__device__ __forceinline__ unsigned long long mck_timer_() { unsigned long long t; "
    'asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }\n'
    "__shared__ unsigned long long mck_stamp_[8];\n__shared__ int mck_kind_;\n"
)
WRITE_STAMPS = (
    "__syncthreads();\nif (threadIdx.x == 0) { mck_stamp_[6] = mck_timer_(); mck_stamp_[7] = mck_kind_;"
    " for (int s_ = 0; s_ < 8; ++s_) {"
    " times[blockIdx.x * 8 + s_] = static_cast<int64_t>(mck_stamp_[s_]); } }\n"
)


def stamp(slot: int) -> str:
    """Source that records the time in ``slot`` (thread 0 of the block)."""
    return f"if (threadIdx.x == 0) {{ mck_stamp_[{slot}] = mck_timer_(); }}\n"


def set_kind(kind: int) -> str:
    """Source that records which kind of block this is (written to slot 7 at exit)."""
    return f"if (threadIdx.x == 0) {{ mck_kind_ = {kind}; }}\n"


def entry(kind: int) -> str:
    """Source for the start of the body: the entry time (slot 0) and the block's initial kind."""
    return f"if (threadIdx.x == 0) {{ mck_stamp_[0] = mck_timer_(); mck_kind_ = {kind}; }}\n"


def stamped_wait(name: str, call: str) -> tuple[str, str]:
    """The edit that stamps slots 2 and 3 (a block starts waiting, stops waiting) around the wait of the
    one-line lambda ``auto name = [&]() { call; };``."""
    return (
        f"auto {name} = [&]() {{ {call}; }};",
        f"auto {name} = [&]() {{ " + stamp(2).strip() + f" {call}; " + stamp(3).strip() + " };",
    )


def apply_edits(source: str, edits: list[tuple[str, str]], name: str) -> str:
    """``source`` with each anchor's first occurrence replaced; fails loudly on an anchor that is gone."""
    for anchor, replacement in edits:
        if anchor not in source:
            raise RuntimeError(f"{name} changed: no {anchor[:50]!r} to stamp at")
        source = source.replace(anchor, replacement, 1)
    return source


def stamping(
    cuda_kernel: Callable[..., Any], prefix: str, instrument: Callable[[str], str], collected: list[mx.array]
) -> Callable[..., Any]:
    """A stand-in for ``mx.fast.cuda_kernel`` that builds kernels named ``prefix...`` from
    ``instrument(source)`` and appends each launch's ``times`` to ``collected``; other kernels are built as
    they are."""

    def build(
        name: str,
        input_names: list[str],
        output_names: list[str],
        source: str,
        header: str = "",
        **options: Any,
    ) -> Any:
        if not name.startswith(prefix):
            return cuda_kernel(
                name=name,
                input_names=input_names,
                output_names=output_names,
                source=source,
                header=header,
                **options,
            )
        kernel = cuda_kernel(
            name=name + "_timeline",
            input_names=input_names,
            output_names=[*output_names, "times"],
            source=instrument(source),
            header=STAMP_HEADER + header,
            **options,
        )

        def launch(
            *,
            grid: tuple[int, int, int],
            threadgroup: tuple[int, int, int],
            output_shapes: list[Any],
            output_dtypes: list[Any],
            **rest: Any,
        ) -> list[mx.array]:
            blocks = grid[0] // threadgroup[0]
            outputs = kernel(
                grid=grid,
                threadgroup=threadgroup,
                output_shapes=[*output_shapes, (blocks * STAMPS,)],
                output_dtypes=[*output_dtypes, mx.int64],
                **rest,
            )
            collected.append(outputs[-1])
            return list(outputs[:-1])

        return launch

    return build
