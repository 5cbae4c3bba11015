"""Streaming safetensors output: tensors are written to disk as they arrive, shards closed as they fill.

A shard's header (names, shapes, offsets) is only known once the shard is full, so tensor bytes are first
appended to a spill file and the finished shard is assembled as ``header + spill`` with an in-kernel copy.
No tensor is held in memory after ``add`` returns, so peak memory is one tensor (or one quantized group),
whatever ``max_shard_size`` is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from .errors import ConvertError
from .safetensors_file import MLX_TO_SAFETENSORS

INDEX_NAME = "model.safetensors.index.json"
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """Parse a shard size: bytes, or ``"5GB"``, ``"500MB"``, ``"2GiB"`` (KB/MB/GB are powers of 10)."""
    if isinstance(size, bool):
        raise TypeError("max_shard_size must be an int of bytes or a string such as '5GB'")
    if isinstance(size, int):
        value = size
    elif isinstance(size, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size)
        if match is None or match.group(2).upper() not in _UNITS:
            raise ConvertError(f"cannot parse max_shard_size {size!r}: use e.g. '5GB', '500MB' or '2GiB'")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    else:
        raise TypeError(f"max_shard_size must be an int or str, got {type(size).__name__}")
    if value <= 0:
        raise ConvertError(f"max_shard_size must be positive, got {size!r}")
    return value


@dataclass
class _Shard:
    spill_path: Path
    entries: dict[str, dict[str, object]] = field(default_factory=dict)
    size: int = 0


class ShardWriter:
    """Write tensors into ``directory`` as ``model.safetensors`` or ``model-0000i-of-0000N.safetensors``.

    ``add_group`` keeps tensors that belong together (a quantized weight with its scales and biases) in
    one shard; a group larger than ``max_shard_size`` gets a shard of its own.
    """

    def __init__(self, directory: Path, max_shard_size: int, metadata: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.max_shard_size = max_shard_size
        self.metadata = {"format": "mlx"} if metadata is None else dict(metadata)
        self._closed: list[tuple[Path, list[str]]] = []
        self._current: _Shard | None = None
        self._names: set[str] = set()
        self.total_size = 0

    def add_group(self, tensors: Iterable[tuple[str, mx.array]]) -> None:
        """Write each ``(name, array)`` of the group to the current shard, opening a new one if it is full."""
        group = [(name, mx.contiguous(array)) for name, array in tensors]
        mx.eval([a for _, a in group])
        for name, _ in group:
            if name in self._names:
                raise ConvertError(
                    f"two tensors map to the output name {name!r}: fix the WeightMapping renames or drops"
                )
            self._names.add(name)
        group_size = sum(a.nbytes for _, a in group)
        shard = self._current
        if shard is not None and shard.entries and shard.size + group_size > self.max_shard_size:
            self._close_current()
            shard = None
        if shard is None:
            shard = self._current = _Shard(self.directory / f".shard-{len(self._closed) + 1}.spill")
        with open(shard.spill_path, "ab") as fh:
            for name, array in group:
                tag = MLX_TO_SAFETENSORS.get(array.dtype)
                if tag is None:
                    raise ConvertError(
                        f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store"
                    )
                if array.nbytes:
                    fh.write(memoryview(array).cast("B"))  # type: ignore[arg-type]  # mx.array is a buffer
                shard.entries[name] = {
                    "dtype": tag,
                    "shape": list(array.shape),
                    "data_offsets": [shard.size, shard.size + array.nbytes],
                }
                shard.size += array.nbytes
                self.total_size += array.nbytes

    def add(self, name: str, array: mx.array) -> None:
        """Write one tensor."""
        self.add_group([(name, array)])

    def _close_current(self) -> None:
        shard = self._current
        if shard is None:
            return
        self._current = None
        target = self.directory / f".shard-{len(self._closed) + 1}.safetensors"
        header = {"__metadata__": self.metadata, **shard.entries}
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as the format recommends
        with open(target, "wb") as out:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            out.flush()
            if shard.spill_path.exists():
                with open(shard.spill_path, "rb") as src:
                    _copy_file(src, out, shard.size)
        shard.spill_path.unlink(missing_ok=True)
        self._closed.append((target, list(shard.entries)))

    def finish(self) -> dict[str, str]:
        """Close the last shard, give shards their final names and write the index when sharded.

        Returns the weight map ``{tensor name: shard file name}``.
        """
        self._close_current()
        if not self._closed:
            raise ConvertError("no tensors were written: every tensor was dropped by the WeightMapping")
        count = len(self._closed)
        weight_map: dict[str, str] = {}
        for i, (path, names) in enumerate(self._closed):
            final = "model.safetensors" if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            path.rename(self.directory / final)
            weight_map.update(dict.fromkeys(names, final))
        weight_map = dict(sorted(weight_map.items()))
        if count > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
            (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=4) + "\n")
        return weight_map


def _copy_file(src, dst, length: int) -> None:  # type: ignore[no-untyped-def]
    """Append ``length`` bytes of ``src`` to ``dst`` in the kernel when possible (no user-space buffer)."""
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < length:
                n = os.copy_file_range(src.fileno(), dst.fileno(), min(length - copied, 1 << 30))
                if n == 0:
                    break
                copied += n
        except OSError:
            pass
    if copied < length:
        src.seek(copied)
        dst.seek(0, os.SEEK_END)
        shutil.copyfileobj(src, dst, 16 << 20)
