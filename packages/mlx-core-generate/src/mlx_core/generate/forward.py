"""One model forward pass with validated logits, and chunked prefill of a prompt into caches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx

from .errors import ModelOutputError, PromptError
from .protocols import ModelInput, wants_model_input

ProgressCallback = Callable[[int, int], None]


def as_prompt_array(prompt: Any) -> mx.array:
    """Validate a prompt (list/array of token ids, [L] or [B, L]) and return it as a 2-D int32 array."""
    if isinstance(prompt, str):
        raise PromptError("prompt is a str: encode it first (tokenizer.encode(text)) or pass a tokenizer.")
    arr = prompt if isinstance(prompt, mx.array) else mx.array(prompt)
    if arr.ndim not in (1, 2):
        raise PromptError(f"prompt must be 1-D [L] or 2-D [B, L] token ids, got shape {tuple(arr.shape)}.")
    if arr.size == 0 or arr.shape[-1] == 0:
        raise PromptError("prompt is empty: give at least one token id.")
    if not (mx.issubdtype(arr.dtype, mx.integer)):
        raise PromptError(f"prompt must hold integer token ids, got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr[None]
    return arr.astype(mx.int32)


def forward_logits(
    model: Any, tokens: mx.array, caches: Sequence[Any] | None, extra: dict[str, Any] | None = None
) -> mx.array:
    """Run ``model`` on ``tokens`` [B, L] with ``caches`` and return logits [B, L, V] (lazy).

    Accepts models returning an array or an object with ``.logits``; models declaring
    ``accepts_model_input = True`` receive a `ModelInput`. Raises `ModelOutputError` on a wrong shape.
    """
    if wants_model_input(model):
        out = model(ModelInput(tokens=tokens, caches=list(caches or []), extra=dict(extra or {})))
    elif extra:
        out = model(tokens, cache=caches, **extra)
    else:
        out = model(tokens, cache=caches)
    logits = out if isinstance(out, mx.array) else getattr(out, "logits", None)
    if not isinstance(logits, mx.array):
        raise ModelOutputError(
            f"model returned {type(out).__name__}; expected logits [B, L, V] as an mx.array "
            "or an object with a .logits array."
        )
    b, n = tokens.shape
    if logits.ndim != 3 or logits.shape[0] != b or logits.shape[1] != n:
        raise ModelOutputError(
            f"model returned logits of shape {tuple(logits.shape)} for inputs of shape {(b, n)}; "
            f"expected [B, L, V] = [{b}, {n}, vocab]."
        )
    return logits


def cache_states(caches: Sequence[Any]) -> list[Any]:
    """The arrays to evaluate so every cache has materialised its update."""
    return [c.state for c in caches]


def prefill(
    model: Any,
    tokens: mx.array,
    caches: Sequence[Any],
    prefill_step_size: int = 2048,
    progress: ProgressCallback | None = None,
) -> None:
    """Feed ``tokens`` [B, L] through the model in chunks of ``prefill_step_size``, filling ``caches``.

    Evaluates the caches after every chunk (bounded memory) and calls ``progress(done, total)``.
    Callers feed the prompt's last token themselves, so its logits come from the first decode step.
    """
    if prefill_step_size < 1:
        raise ValueError(f"prefill_step_size must be >= 1, got {prefill_step_size}.")
    total = tokens.shape[1]
    done = 0
    while done < total:
        n = min(prefill_step_size, total - done)
        forward_logits(model, tokens[:, done : done + n], caches)
        mx.eval(cache_states(caches))
        done += n
        if progress is not None:
            progress(done, total)
        mx.clear_cache()
