"""TextAssembler: streamed text plus the stop rules (EOS ids, stop strings, max_tokens).

Both `Generate` and speculative decoding feed every sampled token through one assembler, so they stop
at the same token and emit the same text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .detokenizer import WindowStreamingDetokenizer


def _make_detokenizer(tokenizer: Any) -> Any:
    if tokenizer is None:
        return None
    factory = getattr(tokenizer, "detokenizer", None)
    if callable(factory):
        return factory()
    if hasattr(tokenizer, "decode"):
        return WindowStreamingDetokenizer(lambda ids: tokenizer.decode(ids))
    raise TypeError(f"tokenizer {type(tokenizer).__name__} has neither detokenizer() nor decode(ids).")


class TextAssembler:
    """Turns sampled tokens into text segments and decides when generation finishes.

    ``add(token)`` returns ``(segment, finish_reason)``: an EOS id finishes with ``"stop"`` (its text is
    not included); a stop string finishes with ``"stop"`` and the text is cut right before it (text that
    could be the start of a stop string is held back until it cannot); the ``max_tokens``-th token finishes
    with ``"length"``. ``finish()`` flushes what is still held back. ``tokens`` excludes EOS ids.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        eos_token_ids: Iterable[int] | None = None,
        stop_strings: Iterable[str] = (),
        max_tokens: int | None = 256,
    ) -> None:
        if isinstance(stop_strings, str):
            stop_strings = (stop_strings,)
        self.stop_strings = tuple(stop_strings)
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"stop strings must be non-empty str, got {self.stop_strings!r}.")
        if self.stop_strings and tokenizer is None:
            raise ValueError("stop strings need a tokenizer to turn tokens into text; pass tokenizer=...")
        if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 0):
            raise ValueError(f"max_tokens must be >= 0 or None (unbounded), got {max_tokens!r}.")
        if eos_token_ids is None:
            eos_token_ids = getattr(tokenizer, "eos_token_ids", None) or ()
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.max_tokens = max_tokens
        self._detok = _make_detokenizer(tokenizer)
        self._pending = ""
        self.text = ""
        self.tokens: list[int] = []
        self.generation_tokens = 0
        self.finish_reason: str | None = "length" if max_tokens == 0 else None

    @property
    def finished(self) -> bool:
        """True once a stop rule fired (or ``finish()`` ran)."""
        return self.finish_reason is not None

    def _held_back(self) -> int:
        """Length of the longest suffix of pending text that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stop_strings:
            for k in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:k]):
                    best = k
                    break
        return best

    def _release(self, final: bool) -> str:
        """Emit pending text up to a stop string (finishing) or up to what must be held back."""
        cut = -1
        for stop in self.stop_strings:
            i = self._pending.find(stop)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            out, self._pending = self._pending[:cut], ""
            self.finish_reason = "stop"
        else:
            keep = 0 if final else self._held_back()
            out = self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep :]
        self.text += out
        return out

    def _flush_detok(self) -> None:
        if self._detok is not None:
            self._pending += self._detok.finalize()

    def add(self, token: int) -> tuple[str, str | None]:
        """Consume one sampled token; return the text it releases and the finish reason (or None)."""
        if self.finished:
            raise RuntimeError(f"TextAssembler already finished ({self.finish_reason!r}); make a new one.")
        token = int(token)
        self.generation_tokens += 1
        if token in self.eos_token_ids:
            self._flush_detok()
            out = self._release(final=True)
            self.finish_reason = "stop"
            return out, "stop"
        self.tokens.append(token)
        if self._detok is not None:
            self._pending += self._detok.add_token(token)
        out = self._release(final=False)
        if self.finished:
            return out, self.finish_reason
        if self.max_tokens is not None and self.generation_tokens >= self.max_tokens:
            self._flush_detok()
            out += self._release(final=True)
            if self.finish_reason is None:
                self.finish_reason = "length"
        return out, self.finish_reason

    def finish(self, reason: str = "length") -> str:
        """Flush held-back text (stop strings are still honoured) and mark the assembler finished."""
        if self.finished and not self._pending:
            return ""
        self._flush_detok()
        out = self._release(final=True)
        if self.finish_reason is None:
            self.finish_reason = reason
        return out
