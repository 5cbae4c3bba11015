"""Per-token update cost of mlx_core.cache caches vs mlx-lm's KVCache, and bytes held when quantized.

Run: ``uv run python benchmarks/cache.py [--quick]``. Runs on ``mx.default_device()`` (GPU when present),
float32 on CPU. Each figure is the median over repeats (after a warm-up) of the time per decode update,
where one update writes a ``[1, H, 1, D]`` token into a cache already holding ``L`` tokens and evaluates the
returned keys/values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_core.cache import ConcatKeyValueCache, KVCache, QuantizedKVCache, StaticKVCache


def per_token_us(make: Callable[[], Any], L: int, steps: int, H: int, D: int, dtype: mx.Dtype) -> float:
    """Microseconds per single-token update into a cache holding ``L`` tokens (one timed run)."""
    tok = mx.random.normal((1, H, 1, D)).astype(dtype)
    prompt = mx.random.normal((1, H, L, D)).astype(dtype)
    cache = make()
    mx.eval(cache.update_and_fetch(prompt, prompt))
    t0 = time.perf_counter()
    for _ in range(steps):
        mx.eval(cache.update_and_fetch(tok, tok))
    return (time.perf_counter() - t0) / steps * 1e6


def interleaved(
    contenders: dict[str, Callable[[], Any]], L: int, steps: int, repeats: int, **kw: Any
) -> dict:
    """Median per contender; contenders alternate within each repeat so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(repeats + 1):
        for name, make in contenders.items():
            t = per_token_us(make, L, steps, **kw)
            if r:  # round 0 is warm-up
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    args = ap.parse_args()
    H, D = 8, 64
    dtype = mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16
    contexts = [1024] if args.quick else [1024, 8192]
    steps, repeats = (8, 2) if args.quick else (32, 7)
    try:
        from mlx_lm.models.cache import KVCache as LmKVCache
    except ImportError:  # parity group absent
        LmKVCache = None

    print(
        f"device: {mx.default_device()}, dtype {dtype}, [1, {H}, L, {D}], median of {repeats} x {steps} "
        f"updates"
    )
    print(f"{'L':>6} | {'cache':<22} | {'us/token':>9} | {'vs mlx-lm KVCache':>17}")
    print("-" * 64)
    for L in contexts:
        contenders: dict[str, Callable[[], Any]] = {
            "KVCache": KVCache,
            "StaticKVCache": lambda L=L: StaticKVCache(L + 512),
            "ConcatKeyValueCache": ConcatKeyValueCache,
        }
        if LmKVCache is not None:
            contenders["mlx-lm KVCache"] = LmKVCache
        res = interleaved(contenders, L, steps, repeats, H=H, D=D, dtype=dtype)
        ref = res.get("mlx-lm KVCache")
        for name, us in res.items():
            ratio = f"{us / ref:.2f}x" if ref else "n/a"
            print(f"{L:>6} | {name:<22} | {us:>9.1f} | {ratio:>17}")
    print()
    print(f"{'L':>6} | {'cache':<22} | {'MiB held':>9} | {'vs KVCache':>10}")
    print("-" * 56)
    for L in contexts:
        x = mx.random.normal((1, H, L, D)).astype(dtype)
        full = KVCache()
        full.update_and_fetch(x, x)
        base = sum(a.nbytes for a in full.state)
        rows = [("KVCache", base)]
        for bits in (8, 4):
            q = QuantizedKVCache(group_size=64, bits=bits)
            q.update_and_fetch(x, x)
            rows.append((f"QuantizedKVCache {bits}-bit", sum(a.nbytes for a in q.state)))
        for name, nb in rows:
            print(f"{L:>6} | {name:<22} | {nb / 2**20:>9.2f} | {nb / base:>9.3f}x")


if __name__ == "__main__":
    main()
