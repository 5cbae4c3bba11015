"""`SpeculativeGenerate`: lossless speculative decoding with a pluggable drafter.

Each round drafts ``k`` tokens, runs the target once over ``[last, d1..dk]``, keeps the accepted prefix plus
one target token (correction or bonus) and trims exactly the rejected positions from the target's caches
(the drafter rolls back its own). At temperature 0 the output is token-identical to greedy `Generate`; at
temperature > 0 modified rejection sampling makes it distributed exactly like `Generate`'s samples, with the
same sampler filters and logits processors applied to target and draft distributions alike. Tokens go
through the same `TextAssembler`, so EOS, stop strings and ``max_tokens`` end generation at the same token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import mlx.core as mx
from mlx_core.cache import can_trim_prompt_cache, trim_prompt_cache
from mlx_core.generate import (
    DefaultSampler,
    GenerateBuilder,
    Response,
    TokenEventStream,
    default_caches,
    forward_logits,
    prefill,
)

from .draft_length import AdaptiveDraftLength, DraftLengthPolicy, FixedDraftLength
from .drafters import (
    Draft,
    Drafter,
    DraftModelDrafter,
    PromptLookupDrafter,
    empty_draft,
    model_vocab_size,
    token_list,
)
from .errors import DraftError, SpeculativeError
from .metrics import SpecMetrics
from .verify import greedy_verify, rejection_verify

__all__ = ["SpeculativeGenerate", "SpeculativeGenerateBuilder", "SpeculativeResponse", "speculative_generate"]

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]
ProgressCallback = Callable[[int, int], None]

#: Default draft length for a draft model (mlx-lm's default); prompt lookup uses its ``num_tokens``.
DEFAULT_NUM_DRAFT_TOKENS = 3


@dataclass
class SpeculativeResponse(Response):
    """A `Response` plus the speculative `SpecMetrics` (acceptance, mean accepted length, forwards)."""

    metrics: SpecMetrics = field(default_factory=SpecMetrics)


def _draft_length_policy(num_draft_tokens: int | str | DraftLengthPolicy | None, drafter: Any) -> Any:
    default = drafter.num_tokens if isinstance(drafter, PromptLookupDrafter) else DEFAULT_NUM_DRAFT_TOKENS
    if num_draft_tokens is None:
        return FixedDraftLength(default)
    if num_draft_tokens == "adaptive":
        return AdaptiveDraftLength(initial=min(default, 16), maximum=max(16, default))
    if isinstance(num_draft_tokens, int) and not isinstance(num_draft_tokens, bool):
        return FixedDraftLength(num_draft_tokens)
    if isinstance(num_draft_tokens, DraftLengthPolicy):
        return num_draft_tokens
    raise SpeculativeError(
        f"num_draft_tokens must be an int >= 1, 'adaptive' or a DraftLengthPolicy, got {num_draft_tokens!r}"
    )


class SpeculativeGenerate(TokenEventStream):
    """Iterator of generated token ids, produced by speculative decoding (single use).

    Same keywords as `Generate`, plus ``drafter`` (a `Drafter`), or ``draft_model`` (shorthand for
    ``DraftModelDrafter(draft_model)``); with neither, prompt lookup is used. ``num_draft_tokens`` is an
    int, ``"adaptive"`` or a `DraftLengthPolicy` (default: 3 for a draft model, ``num_tokens`` for prompt
    lookup). ``.run()`` returns a `SpeculativeResponse` (with ``.metrics``); ``.stream()`` yields
    `GenerationChunk`s; iterating yields ids (EOS excluded).

    The target's caches (and a draft model's) must be trimmable: rejected tokens are rolled back every round.
    """

    def __init__(
        self,
        model: Any,
        prompt: Any,
        tokenizer: Any = None,
        temperature: float = 0.0,
        max_tokens: int | None = 256,
        sampler: Any = None,
        logits_processors: Sequence[LogitsProcessor] = (),
        caches: list[Any] | None = None,
        prefill_step_size: int = 2048,
        stop: Iterable[str] | str = (),
        seed: int | None = None,
        *,
        drafter: Drafter | None = None,
        draft_model: Any = None,
        num_draft_tokens: int | str | DraftLengthPolicy | None = None,
        top_p: float = 1.0,
        min_p: float = 0.0,
        top_k: int = 0,
        eos_token_ids: Iterable[int] | None = None,
        max_kv_size: int | None = None,
        prompt_progress: ProgressCallback | None = None,
    ) -> None:
        self._init_common(
            model,
            prompt,
            tokenizer,
            sampler,
            temperature,
            top_p,
            min_p,
            top_k,
            logits_processors,
            prefill_step_size,
            seed,
            prompt_progress,
            eos_token_ids,
            stop,
            max_tokens,
        )
        if drafter is not None and draft_model is not None:
            raise SpeculativeError("give either drafter=... or draft_model=..., not both")
        if drafter is None:
            drafter = (
                DraftModelDrafter(draft_model, prefill_step_size=prefill_step_size)
                if draft_model is not None
                else PromptLookupDrafter()
            )
        if not isinstance(drafter, Drafter):
            raise SpeculativeError(
                f"drafter must implement the Drafter protocol (reset, draft, deterministic), "
                f"got {type(drafter).__name__}"
            )
        self.drafter = drafter
        self.greedy = getattr(self.sampler, "temperature", None) == 0
        if not self.greedy:
            if not callable(getattr(self.sampler, "probabilities", None)):
                raise SpeculativeError(
                    "speculative sampling at temperature > 0 needs the sampler's distribution: pass a "
                    "sampler with .probabilities(logprobs) and .temperature (make_sampler makes one)"
                )
            if getattr(self.sampler, "xtc_probability", 0.0) > 0.0:
                raise SpeculativeError(
                    "XTC sampling is itself random, so its distribution cannot be verified; "
                    "set xtc_probability=0"
                )
        self.caches = caches if caches is not None else default_caches(model, max_kv_size)
        if not can_trim_prompt_cache(self.caches):
            raise SpeculativeError(
                "the target's caches cannot be trimmed, but speculative decoding rolls back rejected draft "
                "tokens every round; use KVCache/RotatingKVCache-style trimmable caches"
            )
        self._check_windows()
        self.draft_length = _draft_length_policy(num_draft_tokens, drafter)
        self.metrics = SpecMetrics()

    def _windows(self) -> list[tuple[int, int]]:
        """(offset, max_size) of every target cache with a bounded window (sliding or fixed capacity)."""
        return [
            (int(c.offset), int(c.max_size)) for c in self.caches if getattr(c, "max_size", None) is not None
        ]

    def _check_windows(self) -> None:
        """Refuse runs that would fill a bounded cache: trimming a sliding window after it has wrapped
        cannot restore the tokens that slid out, so the output would no longer equal plain decoding."""
        needed = self.prompt.shape[1] + (self.max_tokens if self.max_tokens is not None else 0)
        for offset, size in self._windows():
            if self.max_tokens is None or offset + needed > size:
                raise SpeculativeError(
                    f"a target cache holds at most {size} tokens but this run needs "
                    f"{offset + needed if self.max_tokens is not None else 'an unbounded number of'}; "
                    "speculative decoding is lossless only while a sliding window has not filled. Use "
                    "unbounded caches, a larger max_kv_size, or plain Generate."
                )

    def _window_room(self) -> int | None:
        """Tokens a round may still feed before a bounded cache would fill (None: unbounded)."""
        rooms = [size - offset for offset, size in self._windows()]
        return min(rooms) if rooms else None

    @staticmethod
    def builder() -> SpeculativeGenerateBuilder:
        """Fluent builder: ``SpeculativeGenerate.builder().model(m).draft_model(d).prompt(p).build()``."""
        return SpeculativeGenerateBuilder()

    # -- one round --------------------------------------------------------------------------------
    def _process(self, logits: mx.array, history: mx.array | None, draft: mx.array) -> mx.array:
        """Logits processors row by row: row ``i`` sees the history plus ``d1..di`` (as `Generate` would)."""
        if not self.logits_processors or history is None:
            return logits
        rows = []
        context = history
        for i in range(logits.shape[0]):
            if i > 0:
                context = mx.concatenate([context, draft[i - 1 : i]])
            row = logits[i : i + 1]
            for processor in self.logits_processors:
                row = processor(context, row)
            rows.append(row)
        return mx.concatenate(rows, axis=0)

    def _round(self, history: list[int], history_arr: mx.array | None, k: int) -> tuple[list[int], int, int]:
        """Draft, verify and roll back once; return (new tokens, drafted, accepted)."""
        draft: Draft = self.drafter.draft(history, k) if k > 0 else empty_draft()
        if len(draft) > k:
            raise DraftError(f"{type(self.drafter).__name__} proposed {len(draft)} tokens, more than k={k}")
        kd = len(draft)
        drafted = draft.tokens.astype(mx.int32)
        inputs = mx.concatenate([mx.array(history[-1:], dtype=mx.int32), drafted])[None]
        logits = forward_logits(self.model, inputs, self.caches)[0].astype(mx.float32)  # [kd + 1, V]
        vocab = logits.shape[-1]
        if draft.vocab_size is not None and draft.vocab_size != vocab:
            raise DraftError(
                f"draft vocabulary ({draft.vocab_size}) differs from the target's ({vocab}); speculative "
                "decoding needs a draft model with the same tokenizer and vocabulary size"
            )
        logits = self._process(logits, history_arr, drafted)
        if self.greedy:
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            n_arr, t_arr = greedy_verify(drafted, logprobs)  # same argmax input as Generate (ties)
        else:
            # `DefaultSampler`'s filters and softmax are shift-invariant: a max shift replaces the
            # log-sum-exp pass over [k + 1, V]; other samplers get log-probabilities as their contract says.
            shift = (
                mx.max(logits, axis=-1, keepdims=True)
                if type(self.sampler) is DefaultSampler
                else mx.logsumexp(logits, axis=-1, keepdims=True)
            )
            probs = self.sampler.probabilities(logits - shift)
            n_arr, t_arr = rejection_verify(
                drafted, probs, None if self.drafter.deterministic else draft.probs
            )
        mx.eval(n_arr, t_arr, drafted)
        n, t = int(cast(int, n_arr.item())), int(cast(int, t_arr.item()))
        rejected = kd - n
        if rejected:
            if not can_trim_prompt_cache(self.caches):
                raise SpeculativeError(
                    f"cannot roll back {rejected} rejected draft token(s): the target caches stopped being "
                    "trimmable; use KVCache or a larger max_kv_size"
                )
            trimmed = trim_prompt_cache(self.caches, rejected)
            if trimmed != rejected:
                raise SpeculativeError(f"target cache trimmed {trimmed} tokens instead of {rejected}")
        return [*token_list(drafted)[:n], t], kd, n

    def _raw_rounds(self) -> Iterator[list[int]]:
        """Token lists, one per round, until ``max_tokens`` (the caller handles EOS and stop strings)."""
        if self._started:
            raise RuntimeError("a SpeculativeGenerate runs once; build a new one.")
        self._started = True
        if self.seed is not None:
            mx.random.seed(self.seed)
        total = self.prompt.shape[1]
        progress = self.prompt_progress
        t0 = time.perf_counter()
        if progress is not None:
            progress(0, total)
        # Drafter set-up (and its vocabulary check) before the prefill, so a mismatch fails fast.
        self.drafter.reset(self.sampler, self.logits_processors)
        check = getattr(self.drafter, "check_vocab", None)
        if callable(check):
            check(model_vocab_size(self.model))
        prefill(self.model, self.prompt[:, :-1], self.caches, self.prefill_step_size, progress)
        history = token_list(self.prompt[0])
        history_arr = self.prompt[0] if self.logits_processors else None
        emitted = 0
        t1 = t0
        while self.max_tokens is None or emitted < self.max_tokens:
            budget = None if self.max_tokens is None else self.max_tokens - emitted
            k = self.draft_length.next_length()
            if budget is not None:
                k = min(k, budget - 1)
            room = self._window_room()
            if room is not None:
                k = min(k, room - 1)  # the verify pass feeds k + 1 tokens; never past the window
            new, kd, n = self._round(history, history_arr, max(k, 0))
            if self.metrics.target_forwards == 0:
                t1 = time.perf_counter()
                self.prompt_tps = total / max(t1 - t0, 1e-9)
                if progress is not None:
                    progress(total, total)
            self.metrics.record(kd, n)
            self.draft_length.update(kd, n)
            history.extend(new)
            if history_arr is not None:
                history_arr = mx.concatenate([history_arr, mx.array(new, dtype=mx.int32)])
            emitted += len(new)
            self.metrics.elapsed_s = time.perf_counter() - t1
            self.generation_tps = emitted / max(self.metrics.elapsed_s, 1e-9)
            if self.metrics.target_forwards % 64 == 0:
                mx.clear_cache()
            yield new

    def _events(self) -> Iterator[tuple[int, str, str | None]]:
        """(token, released text, finish reason) for every emitted token, up to the first stop."""
        asm = self.assembler
        if asm.finished:  # max_tokens == 0
            return
        for new in self._raw_rounds():
            for i, token in enumerate(new):
                segment, reason = asm.add(token)
                if reason is not None:
                    self._drop_overshoot(len(new) - 1 - i)
                    self._commit_last(token)
                yield token, segment, reason
                if reason is not None:
                    return

    def _drop_overshoot(self, extra: int) -> None:
        """A stop fired ``extra`` tokens before the round's end: un-cache those tokens."""
        if extra > 0 and can_trim_prompt_cache(self.caches):
            trim_prompt_cache(self.caches, extra)

    def _commit_last(self, token: int) -> None:
        """Feed the last emitted token so the target's caches hold the prompt and every emitted token,
        the state `Generate` leaves them in, and a next turn passes only its new tokens either way."""
        mx.eval(forward_logits(self.model, mx.array([[token]], dtype=mx.int32), self.caches))

    def response(self) -> SpeculativeResponse:
        """A `SpeculativeResponse` describing what has been generated so far."""
        return SpeculativeResponse(**self._response_fields(), metrics=self.metrics)

    def run(self) -> SpeculativeResponse:
        """Generate to the end and return the whole `SpeculativeResponse`."""
        return cast(SpeculativeResponse, super().run())


class SpeculativeGenerateBuilder(GenerateBuilder):
    """`GenerateBuilder` plus ``drafter``, ``draft_model`` and ``num_draft_tokens``; builds a
    `SpeculativeGenerate`."""

    def drafter(self, drafter: Drafter) -> SpeculativeGenerateBuilder:
        self._kwargs["drafter"] = drafter
        return self

    def draft_model(self, draft_model: Any) -> SpeculativeGenerateBuilder:
        self._kwargs["draft_model"] = draft_model
        return self

    def num_draft_tokens(self, num: int | str | DraftLengthPolicy) -> SpeculativeGenerateBuilder:
        self._kwargs["num_draft_tokens"] = num
        return self

    def build(self) -> SpeculativeGenerate:  # type: ignore[override]
        self._require_model_and_prompt(SpeculativeError, "SpeculativeGenerate")
        return SpeculativeGenerate(**self._kwargs)


def speculative_generate(model: Any, prompt: Any, **kwargs: Any) -> SpeculativeResponse:
    """Run `SpeculativeGenerate` (same keywords) to the end and return its `SpeculativeResponse`."""
    return SpeculativeGenerate(model, prompt, **kwargs).run()
