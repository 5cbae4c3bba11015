"""Side files of an output model directory: the rewritten config.json and copied tokenizer/config files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx

from .casting import dtype_name
from .checkpoint import Checkpoint


def updated_config(config: dict[str, Any], dtype: mx.Dtype | None) -> dict[str, Any]:
    """``config`` with its ``torch_dtype``/``dtype`` keys (also in ``text_config``) set to ``dtype``."""
    config = json.loads(json.dumps(config))  # deep copy of plain JSON
    if dtype is not None:
        for section in (config, config.get("text_config")):
            if isinstance(section, dict):
                for key in ("torch_dtype", "dtype"):
                    if key in section:
                        section[key] = dtype_name(dtype)
    return config


def write_model_files(directory: Path, checkpoint: Checkpoint, config: dict[str, Any] | None) -> None:
    """Copy the checkpoint's side files into ``directory`` and write ``config`` (sorted keys, as mlx-lm)."""
    for path in checkpoint.side_files():
        shutil.copy2(path, directory / path.name)
    if config is not None:
        text = json.dumps(dict(sorted(config.items())), indent=4)
        (directory / "config.json").write_text(text + "\n")
