"""Load a Llama-family checkpoint (Hugging Face names, or mlx-core/mlx-lm converted and quantized output).

``load_model(path_or_repo) -> (model, tokenizer)`` reads ``config.json``, every ``*.safetensors`` file and the
tokenizer. A ``quantization`` block in the config (what ``mlx_core.convert`` and mlx-lm write) is applied with
``nn.quantize`` before the weights are loaded, honouring per-layer overrides (a dict of its own, or ``false``
for a layer left in full precision).
"""

from __future__ import annotations

import contextlib
import glob
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_core.generate import load_tokenizer

from .fusion import fuse_projections
from .llama import Model, ModelArgs

WEIGHT_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja")


class ModelLoadError(ValueError):
    """A checkpoint could not be found or does not match the model it declares."""


def resolve_model_path(path_or_repo: str | Path, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a Hugging Face Hub repo id downloaded with ``snapshot_download``."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelLoadError(
            f"model {text!r} is neither a local directory nor a Hugging Face repo id like 'org/name'"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, revision=revision, allow_patterns=list(WEIGHT_PATTERNS)))
    except Exception as err:  # network, auth, missing repo: say which, in one line
        raise ModelLoadError(
            f"could not fetch {text!r} from the Hugging Face Hub ({type(err).__name__}: {err}); "
            "pass a local directory or check the repo id and your network"
        ) from err


def _decode_float_tags(obj: Any) -> Any:
    """transformers writes non-finite floats as {"__float__": "Infinity"}; turn them back into floats."""
    if isinstance(obj, dict):
        if set(obj) == {"__float__"}:
            return float(obj["__float__"].replace("Infinity", "inf"))
        return {k: _decode_float_tags(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_float_tags(v) for v in obj]
    return obj


def load_config(model_path: str | Path) -> dict[str, Any]:
    """Read ``config.json`` (and the EOS ids of ``generation_config.json`` when present)."""
    model_path = Path(model_path)
    config_file = model_path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{model_path} has no config.json; is it a model directory?")
    try:
        config = _decode_float_tags(json.loads(config_file.read_text()))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{config_file} is not valid JSON: {err}") from err
    generation = model_path / "generation_config.json"
    if generation.is_file():
        try:
            eos = json.loads(generation.read_text()).get("eos_token_id")
        except json.JSONDecodeError:
            eos = None
        if eos is not None:
            config["eos_token_id"] = eos
    return config


def load_weights(model_path: str | Path) -> dict[str, mx.array]:
    """Every tensor of every ``*.safetensors`` file in the directory (lazily, as mx.load gives them)."""
    files = sorted(glob.glob(str(Path(model_path) / "*.safetensors")))
    if not files:
        raise ModelLoadError(f"no *.safetensors files in {model_path}")
    weights: dict[str, mx.array] = {}
    for file in files:
        loaded = mx.load(file)
        assert isinstance(loaded, dict)
        weights.update(loaded)
    return weights


def quantize_like_checkpoint(model: nn.Module, quantization: dict[str, Any], weights: dict[str, Any]) -> None:
    """Swap Linear/Embedding layers for quantized ones as the config's ``quantization`` block says.

    Keys that name a module path override the defaults for that module (a dict of group_size/bits/mode,
    or false to keep it unquantized); other modules are quantized when the checkpoint holds their scales.
    """

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if path in quantization:
            override = quantization[path]
            return override if isinstance(override, dict) or override is False else bool(override)
        return hasattr(module, "to_quantized") and f"{path}.scales" in weights

    try:
        nn.quantize(
            model,
            group_size=int(quantization.get("group_size", 64)),
            bits=int(quantization.get("bits", 4)),
            mode=quantization.get("mode", "affine"),
            class_predicate=predicate,
        )
    except (ValueError, TypeError) as err:
        raise ModelLoadError(f"could not apply the config's quantization {quantization}: {err}") from err


def model_from_config(config: dict[str, Any]) -> Model:
    """An unloaded (randomly initialised) model for a config dict."""
    return Model(ModelArgs.from_dict(config))


def load_model_weights(
    model_path: str | Path, *, strict: bool = True, lazy: bool = False, dtype: mx.Dtype | None = None
) -> tuple[Model, dict[str, Any]]:
    """Build the model from ``config.json`` and load its safetensors; returns ``(model, config)``."""
    model_path = Path(model_path)
    config = load_config(model_path)
    weights = load_weights(model_path)
    if "tie_word_embeddings" not in config:  # older configs: tied exactly when there is no lm_head
        config["tie_word_embeddings"] = "lm_head.weight" not in weights
    model = model_from_config(config)
    weights = model.sanitize(weights)
    quantization = config.get("quantization")
    if quantization is not None:
        quantize_like_checkpoint(model, quantization, weights)
    if dtype is not None:
        weights = {
            k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) and not k.endswith(".scales") else v
            for k, v in weights.items()
        }
    try:
        model.load_weights(list(weights.items()), strict=strict)
    except ValueError as err:
        raise ModelLoadError(f"weights in {model_path} do not fit its config.json: {err}") from err
    if not lazy:
        mx.eval(model.parameters())
    model.eval()
    return model, config


def load_model(
    path_or_repo: str | Path,
    *,
    revision: str | None = None,
    strict: bool = True,
    lazy: bool = False,
    dtype: mx.Dtype | None = None,
    fuse: bool = False,
) -> tuple[Model, Any]:
    """Load ``(model, tokenizer)`` from a local directory or a Hugging Face Hub repo id.

    The directory holds ``config.json``, ``*.safetensors`` (Hugging Face names or our converted/quantized
    output) and the tokenizer files; ``mlx_core.generate.load_tokenizer`` reads the latter. ``fuse=True``
    merges q/k/v and gate/up into one matmul each (`fuse_projections`; same logits, fewer kernels per token).
    """
    model_path = resolve_model_path(path_or_repo, revision=revision)
    model, config = load_model_weights(model_path, strict=strict, lazy=lazy or fuse, dtype=dtype)
    if fuse:
        fuse_projections(model)  # concatenated straight from the (lazily loaded) checkpoint tensors
        if not lazy:
            mx.eval(model.parameters())
    return model, load_tokenizer_for(model_path, config)


def load_tokenizer_for(model_path: str | Path, config: dict[str, Any]) -> Any:
    """The directory's tokenizer, with the config's ``eos_token_id`` (int or list) added to its EOS ids.

    Checkpoints often name more stop tokens in ``config.json``/``generation_config.json`` than in the
    tokenizer files (e.g. Llama 3's ``<|eot_id|>``); generation must stop on all of them.
    """
    tokenizer = load_tokenizer(Path(model_path))
    eos = config.get("eos_token_id")
    if eos is not None and hasattr(tokenizer, "eos_token_ids"):
        extra = {eos} if isinstance(eos, int) else set(eos)
        with contextlib.suppress(AttributeError):  # a tokenizer whose EOS ids are read-only keeps its own
            tokenizer.eos_token_ids = set(tokenizer.eos_token_ids) | extra
    return tokenizer


def count_parameters(model: nn.Module) -> int:
    """Number of weights (quantized layers counted as their unpacked size)."""
    total = 0
    leaves: Any = tree_flatten(model.leaf_modules(), is_leaf=lambda m: isinstance(m, nn.Module))
    for _, module in leaves:
        if hasattr(module, "bits"):
            total += module.weight.size * 32 // module.bits
            total += module.bias.size if "bias" in module else 0
        else:
            params: Any = tree_flatten(module.parameters())
            total += sum(v.size for _, v in params)
    return total
