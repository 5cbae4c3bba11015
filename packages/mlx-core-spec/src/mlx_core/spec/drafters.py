"""Drafters: where the ``k`` proposed tokens of each speculative round come from.

A drafter sees the confirmed history (prompt + emitted tokens, the last of which the target has not yet
consumed) and proposes up to ``k`` continuation tokens, with the distributions ``q`` they were drawn from
(``None`` for a deterministic drafter, whose ``q`` is a point mass). Drafters keep their own state (a draft
model's KV cache, an n-gram index) and reconcile it with the history at the next call, so the generation
loop never needs to know how they work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import mlx.core as mx
from mlx_core.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_core.generate import DefaultSampler, forward_logits, prefill

from .draw import inverse_cdf_draw
from .errors import DraftError

__all__ = ["Draft", "DraftModelDrafter", "Drafter", "PromptLookupDrafter", "empty_draft", "model_vocab_size"]

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


@dataclass
class Draft:
    """Proposed tokens ``[k]`` (possibly lazy) and the distributions ``[k, V]`` they came from.

    ``probs is None`` means the proposal is deterministic (point-mass ``q``). ``vocab_size`` is the
    drafter's vocabulary (``None`` when it has none, e.g. prompt lookup).
    """

    tokens: mx.array
    probs: mx.array | None = None
    vocab_size: int | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def token_list(tokens: mx.array) -> list[int]:
    """A 1-D int array as a list of Python ints."""
    return [int(t) for t in cast(list, tokens.tolist())]


def empty_draft() -> Draft:
    """A draft of zero tokens (the round then decodes one token normally)."""
    return Draft(tokens=mx.zeros((0,), dtype=mx.int32))


@runtime_checkable
class Drafter(Protocol):
    """Proposes tokens for speculative decoding.

    ``reset`` starts a new generation with the sampler and logits processors the target uses (a draft model
    applies the same ones so ``q`` resembles ``p``); ``draft(history, k)`` returns at most ``k`` tokens
    continuing ``history`` (a list of ints: prompt + emitted tokens).
    """

    deterministic: bool

    def reset(self, sampler: Any, logits_processors: Sequence[LogitsProcessor] = ()) -> None: ...

    def draft(self, history: list[int], k: int) -> Draft: ...


class PromptLookupDrafter:
    """Prompt lookup: find the latest n-gram of prompt + output earlier in it and propose what followed.

    Tries ``n = max_ngram`` down to 1 and uses the most recent earlier occurrence of the last ``n`` tokens;
    proposes up to ``num_tokens`` (and at most ``k``) tokens that followed it. Deterministic (``q`` is a
    point mass) and free of any second model; strong on input-grounded tasks (editing, summarising, code).
    An n-gram index is built incrementally, so each round costs O(max_ngram) dictionary work.
    """

    deterministic = True

    def __init__(self, max_ngram: int = 3, num_tokens: int = 10) -> None:
        if isinstance(max_ngram, bool) or not isinstance(max_ngram, int) or max_ngram < 1:
            raise ValueError(f"max_ngram must be an int >= 1, got {max_ngram!r}")
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be an int >= 1, got {num_tokens!r}")
        self.max_ngram = max_ngram
        self.num_tokens = num_tokens
        self._history: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # n-grams ending (exclusive) at positions < self._indexed are in the index

    def __repr__(self) -> str:
        return f"PromptLookupDrafter(max_ngram={self.max_ngram}, num_tokens={self.num_tokens})"

    def reset(self, sampler: Any = None, logits_processors: Sequence[LogitsProcessor] = ()) -> None:
        self._history = []
        self._index = {}
        self._indexed = 0

    def _sync(self, history: list[int]) -> None:
        """Adopt ``history``; rebuild the index if it is not an extension of the previous one."""
        old = self._history
        # SpeculativeGenerate passes the same, growing list every round; anything else is checked.
        if history is not old and (
            len(history) < self._indexed or history[: self._indexed] != old[: self._indexed]
        ):
            self.reset()
        self._history = history
        # Index every n-gram whose continuation exists, i.e. ending at e <= len(history) - 1.
        for end in range(max(self._indexed, 1), len(history)):
            for n in range(1, min(self.max_ngram, end) + 1):
                self._index[tuple(history[end - n : end])] = end
        self._indexed = max(self._indexed, len(history) - 1) if history else 0

    def propose(self, history: list[int], k: int) -> list[int]:
        """The proposed continuation of ``history`` as a list (≤ min(k, num_tokens) tokens)."""
        k = min(k, self.num_tokens)
        if k <= 0 or len(history) < 2:
            return []
        self._sync(history)
        for n in range(min(self.max_ngram, len(history) - 1), 0, -1):
            end = self._index.get(tuple(history[-n:]))
            if end is not None:
                return history[end : end + k]
        return []

    def draft(self, history: list[int], k: int) -> Draft:
        tokens = self.propose(history, k)
        if not tokens:
            return empty_draft()
        return Draft(tokens=mx.array(tokens, dtype=mx.int32))


def model_vocab_size(model: Any) -> int | None:
    """``vocab_size`` of the model, its ``args`` or its ``config`` (None when none declares it)."""
    for owner in (model, getattr(model, "args", None), getattr(model, "config", None)):
        size = getattr(owner, "vocab_size", None) if owner is not None else None
        if isinstance(size, int):
            return size
    return None


class DraftModelDrafter:
    """Draft ``k`` tokens autoregressively with a small model that shares the target's vocabulary.

    The draft model keeps its own KV cache. Each call first rolls it back to the longest prefix of the
    new history it already holds (rejected draft tokens are trimmed), feeds what is missing, then samples
    ``k`` tokens with the target's sampler filters and logits processors, recording each ``q`` [V]. The
    whole draft is built as one lazy graph; it is evaluated together with the target's verification.

    Args:
        draft_model: ``model(tokens [B, L], cache=caches) -> logits [B, L, V]``.
        caches: optional per-layer caches for the draft model (default ``make_prompt_cache(draft_model)``,
            rebuilt on every ``reset``); they must be trimmable. Given caches are kept across resets, so
            they can carry an earlier turn's context.
        prefill_step_size: chunk size when the draft model catches up on a long prompt.
    """

    deterministic = False

    def __init__(
        self, draft_model: Any, caches: list[Any] | None = None, prefill_step_size: int = 2048
    ) -> None:
        if not callable(draft_model):
            raise TypeError(f"draft_model must be a callable model, got {type(draft_model).__name__}")
        self.model = draft_model
        self._user_caches = caches
        self.prefill_step_size = prefill_step_size
        self.vocab_size = model_vocab_size(draft_model)
        self.caches: list[Any] = []
        self._sampler: Any = None
        self._processors: tuple[LogitsProcessor, ...] = ()
        self._cached: list[int] = []  # confirmed tokens the draft caches hold, in order
        self._pending: mx.array | None = None  # draft tokens fed in the last round (maybe still lazy)
        self._pending_fed = 0

    def __repr__(self) -> str:
        return f"DraftModelDrafter({type(self.model).__name__}, vocab_size={self.vocab_size})"

    def check_vocab(self, target_vocab_size: int | None) -> None:
        """Fail clearly when the draft and target vocabularies differ (when both are known)."""
        if (
            target_vocab_size is not None
            and self.vocab_size is not None
            and target_vocab_size != self.vocab_size
        ):
            raise DraftError(
                f"draft model vocabulary ({self.vocab_size}) differs from the target's "
                f"({target_vocab_size}); "
                "speculative decoding needs a draft model with the same tokenizer and vocabulary size"
            )

    def reset(self, sampler: Any, logits_processors: Sequence[LogitsProcessor] = ()) -> None:
        if self._user_caches is not None:
            # Whatever they already hold is an opaque earlier context (multi-turn); rollback only ever
            # removes tokens fed during this generation.
            self.caches = list(self._user_caches)
        else:
            self.caches = make_prompt_cache(self.model)
        if not can_trim_prompt_cache(self.caches):
            raise DraftError(
                "the draft model's caches cannot be trimmed, but speculative decoding rolls back rejected "
                "draft tokens every round; use KVCache (or a RotatingKVCache large enough for the whole run)"
            )
        self._sampler = sampler
        self._processors = tuple(logits_processors)
        self._cached = []
        self._pending = None
        self._pending_fed = 0

    def _reconcile(self, history: list[int]) -> int:
        """Trim the draft caches to the longest prefix of ``history`` they hold; return that length.

        ``history`` extends the history of the previous call, so only the draft tokens fed last round can
        disagree with it: compare from there.
        """
        base = len(self._cached)
        if self._pending is not None:
            self._cached.extend(token_list(self._pending)[: self._pending_fed])
            self._pending = None
            self._pending_fed = 0
        cached = self._cached
        if len(history) < base:
            base = 0  # not an extension (caller misuse): start over
        common = base
        limit = min(len(cached), len(history))
        while common < limit and cached[common] == history[common]:
            common += 1
        drop = len(cached) - common
        if drop:
            if not can_trim_prompt_cache(self.caches):
                raise DraftError(
                    f"cannot roll back {drop} rejected draft token(s): the draft caches are no longer "
                    "trimmable (a RotatingKVCache past its window?); use KVCache or a larger max_kv_size"
                )
            trimmed = trim_prompt_cache(self.caches, drop)
            if trimmed != drop:
                raise DraftError(f"draft cache trimmed {trimmed} tokens instead of {drop}")
            del cached[common:]
        return common

    def _scores(self, logits: mx.array, context: mx.array | None, greedy: bool) -> mx.array:
        """Logits processors on ``logits`` [1, V], then what the sampler needs: raw scores for argmax,
        max-shifted scores for `DefaultSampler` (its filters and softmax are shift-invariant, so the
        log-sum-exp pass over the vocabulary is skipped), log-probabilities for any other sampler.

        A proposal is lossless whatever it is, as long as the reported ``q`` is what the tokens were drawn
        from, so the cheaper normalisation changes ``q`` by rounding only.
        """
        if context is not None:
            for proc in self._processors:
                logits = proc(context, logits)
        if greedy:
            return logits
        if type(self._sampler) is DefaultSampler:
            return logits - mx.max(logits, axis=-1, keepdims=True)
        return logits - mx.logsumexp(logits, axis=-1, keepdims=True)

    def draft(self, history: list[int], k: int) -> Draft:
        if self._sampler is None:
            raise DraftError("call reset(sampler, logits_processors) before draft()")
        if k <= 0 or not history:
            return empty_draft()
        common = self._reconcile(history)
        if common == len(history):
            # Everything is cached; re-feed the last token so its logits exist.
            trim_prompt_cache(self.caches, 1)
            del self._cached[-1]
            common -= 1
        missing = history[common:]
        if len(missing) > self.prefill_step_size:
            # A long prompt: chunked, evaluated prefill; its last token goes into the first draft forward.
            head = mx.array(missing[:-1], dtype=mx.int32)[None]
            prefill(self.model, head, self.caches, self.prefill_step_size)
            self._cached.extend(missing[:-1])
            missing = missing[-1:]
        # The few tokens a round leaves missing (the correction, plus the last draft token after a full
        # acceptance) go into the first forward together, lazily: no extra sync.
        self._cached.extend(missing)

        greedy = getattr(self._sampler, "temperature", None) == 0
        context = mx.array(history, dtype=mx.int32) if self._processors else None
        x = mx.array(missing, dtype=mx.int32)[None]
        tokens: list[mx.array] = []
        probs: list[mx.array] = []
        vocab = None
        for i in range(k):
            logits = forward_logits(self.model, x, self.caches)[:, -1, :].astype(mx.float32)
            vocab = logits.shape[-1]
            scores = self._scores(logits, context, greedy)
            if greedy:
                tok = mx.argmax(scores, axis=-1)
            else:
                # One uniform per token, not Gumbel noise over the vocabulary; q is exactly what it samples.
                tok, q = inverse_cdf_draw(self._sampler.probabilities(scores))
                probs.append(q[0])
            tok = tok.astype(mx.int32)
            tokens.append(tok)
            if i + 1 < k:
                x = tok[None]
                if context is not None:
                    context = mx.concatenate([context, tok])
        drafted = mx.concatenate(tokens)
        self._pending = drafted
        self._pending_fed = k - 1  # the last draft token is never fed to the draft model this round
        return Draft(tokens=drafted, probs=None if greedy else mx.stack(probs), vocab_size=vocab)
