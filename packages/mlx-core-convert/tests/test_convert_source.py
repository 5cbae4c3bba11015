"""Source resolution: local directories and Hub repo ids, always offline in tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import HUB_ALLOW_PATTERNS, ConvertError, HubUnavailableError, convert, resolve_source


def fake_hub_snapshot(kit, repo: str, commit: str = "0" * 40) -> Path:
    """Lay a checkpoint out the way huggingface_hub's cache does, under $HF_HOME/hub."""
    root = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    kit.write(snapshot, kit.tensors(seed=41))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_offline_unreachable_repo_gives_clear_error(tmp_path: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(HubUnavailableError, match=r"some-org/missing-model is not in .*HF_HUB_OFFLINE"):
        convert("some-org/missing-model", tmp_path / "o", quiet=True)
    assert not (tmp_path / "o").exists()


def test_cached_repo_converts_offline(tmp_path: Path, kit) -> None:
    snapshot = fake_hub_snapshot(kit, "org/tiny-llama")
    assert resolve_source("org/tiny-llama") == snapshot
    dest = convert("org/tiny-llama", tmp_path / "o", dtype="float16", quiet=True)
    out = mx.load(str(dest / "model.safetensors"))
    ref = kit.tensors(seed=41)["lm_head.weight"].astype(np.float16)
    np.testing.assert_array_equal(np.array(out["lm_head.weight"]), ref)
    assert json.loads((dest / "config.json").read_text())["model_type"] == "llama"


def test_revision_on_a_directory_is_an_error(tmp_path: Path, llama_dir) -> None:
    with pytest.raises(ConvertError, match="only applies to Hub repo ids"):
        resolve_source(llama_dir(), revision="v1")


def test_allow_patterns_exclude_pickle() -> None:
    from fnmatch import fnmatch

    for name in ("pytorch_model.bin", "model.pt", "consolidated.pth", "train.py"):
        assert not any(fnmatch(name, p) for p in HUB_ALLOW_PATTERNS), name
    for name in ("model-00001-of-00002.safetensors", "config.json", "tokenizer.model", "merges.txt"):
        assert any(fnmatch(name, p) for p in HUB_ALLOW_PATTERNS), name
