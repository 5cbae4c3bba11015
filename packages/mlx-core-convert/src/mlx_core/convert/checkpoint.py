"""A safetensors checkpoint directory: its shards, validated headers, config and side files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path
from types import TracebackType
from typing import Any

import mlx.core as mx
from tqdm.auto import tqdm

from .errors import ConvertError, CorruptCheckpointError, PickleCheckpointError
from .safetensors_file import TensorInfo, read_header, read_tensor

INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SIDE_FILE_PATTERNS = ("*.json", "*.txt", "*.jinja", "tokenizer.model", "tiktoken.model", "*.tiktoken")
"""Files copied next to the converted weights: config, generation config, tokenizer, chat template."""


class Checkpoint:
    """An opened checkpoint directory; every header is validated on open, tensors are read on demand.

    Use as a context manager so file handles are closed. ``tensors`` lists every tensor in file order,
    then offset order, which is the order conversion streams them in (sequential reads).
    """

    def __init__(
        self, directory: Path, files: list[Path], tensors: dict[str, TensorInfo], config: dict | None
    ):
        self.directory = directory
        self.files = files
        self.tensors = tensors
        self.config = config
        self._handles: dict[Path, BufferedReader] = {}
        self._lazy: dict[Path, dict[str, mx.array]] = {}

    @classmethod
    def open(cls, directory: str | Path) -> Checkpoint:
        """Find and validate the weights of ``directory``; pickle-only checkpoints are refused."""
        directory = Path(directory)
        files, expected = _weight_files(directory)
        tensors: dict[str, TensorInfo] = {}
        for file in files:
            header = read_header(file)
            for name, info in header.tensors.items():
                if name in tensors:
                    raise CorruptCheckpointError(
                        f"tensor {name!r} appears in both {tensors[name].path.name} and {file.name}"
                    )
                tensors[name] = info
        for name, file_name in (expected or {}).items():
            entry = tensors.get(name)
            if entry is None or entry.path.name != Path(file_name).name:
                found = f"found in {entry.path.name}" if entry else "missing from every shard"
                raise CorruptCheckpointError(
                    f"{directory / INDEX_NAME} maps {name!r} to {file_name}, but it is {found}"
                )
        config = None
        config_path = directory / "config.json"
        if config_path.exists():
            try:
                config = json.loads(config_path.read_text())
            except json.JSONDecodeError as exc:
                raise ConvertError(f"{config_path} is not valid JSON: {exc}") from exc
            if not isinstance(config, dict):
                raise ConvertError(f"{config_path} must hold a JSON object")
        return cls(directory, files, tensors, config)

    def read(self, name: str) -> mx.array:
        """Tensor ``name`` as an ``mx.array`` whose data is read from disk when it is evaluated.

        The first read of a tensor uses MLX's lazy safetensors loader (no host copy: one buffer per
        tensor, filled with ``pread``); a tensor read again is read with the validated reader.
        """
        info = self.tensors[name]
        lazy = self._lazy.get(info.path)
        if lazy is None:
            loaded = mx.load(str(info.path))
            assert isinstance(loaded, dict)
            lazy = self._lazy[info.path] = loaded
        array = lazy.pop(name, None)
        if array is not None:
            return array
        handle = self._handles.get(info.path)
        if handle is None:
            handle = self._handles[info.path] = open(info.path, "rb")  # noqa: SIM115 (closed in close())
        return read_tensor(handle, info)

    def release(self, path: Path) -> None:
        """Close the handle of one shard once it has been streamed."""
        self._lazy.pop(path, None)
        handle = self._handles.pop(path, None)
        if handle is not None:
            handle.close()

    def stream(self, desc: str, quiet: bool = False) -> Iterator[TensorInfo]:
        """Every tensor in file, then offset order, under a byte progress bar (``desc``).

        After each tensor MLX's buffer cache is cleared, and each shard is released once its tensors are
        done, so converting holds about one tensor at a time (callers drop their arrays in the loop body).
        """
        by_file: dict[Path, list[TensorInfo]] = {file: [] for file in self.files}
        for info in self.tensors.values():
            by_file[info.path].append(info)
        bar = tqdm(total=self.total_bytes, unit="B", unit_scale=True, disable=quiet, desc=desc, leave=False)
        try:
            for file, infos in by_file.items():
                bar.set_postfix_str(file.name)
                for info in infos:
                    yield info
                    mx.clear_cache()
                    bar.update(info.nbytes)
                self.release(file)
        finally:
            bar.close()

    def close(self) -> None:
        for path in set(self._handles) | set(self._lazy):
            self.release(path)

    def side_files(self) -> list[Path]:
        """Config/tokenizer/generation files to copy (index files excluded; config.json is rewritten)."""
        found: dict[str, Path] = {}
        for pattern in SIDE_FILE_PATTERNS:
            for path in self.directory.glob(pattern):
                if path.is_file() and not path.name.endswith(".index.json") and path.name != "config.json":
                    found[path.name] = path
        return [found[k] for k in sorted(found)]

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _weight_files(directory: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """The safetensors files of ``directory`` and the index's weight map when there is one."""
    index_path = directory / INDEX_NAME
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict) or not weight_map:
                raise TypeError("weight_map must be a non-empty object")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptCheckpointError(f"{index_path} is not a valid safetensors index: {exc}") from exc
        files: list[Path] = []
        for file_name in dict.fromkeys(weight_map.values()):
            path = directory / str(file_name)
            if not path.is_file():
                raise CorruptCheckpointError(
                    f"{index_path} names shard {file_name!r}, which is missing from {directory}: "
                    "download the checkpoint again (all shards)"
                )
            files.append(path)
        return files, weight_map
    single = directory / "model.safetensors"
    if single.is_file():
        return [single], None
    shards = sorted(p for p in directory.glob("model*.safetensors") if p.is_file())
    if shards:
        return shards, None
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PickleCheckpointError(
            f"{directory} only has pickle weights ({', '.join(pickles[:3])}); pickle files can run arbitrary "
            "code when loaded, so mlx_core.convert never opens them. Use a revision of the repo that ships "
            "safetensors, or convert the weights to safetensors in a sandbox first"
        )
    raise ConvertError(
        f"no model.safetensors, {INDEX_NAME} or model*.safetensors in {directory}: is this a model directory?"
    )
