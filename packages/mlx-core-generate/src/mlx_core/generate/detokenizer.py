"""Streaming detokenization: text segments one token at a time, only complete UTF-8 characters.

Byte-level BPE (GPT-2 style, ``ByteLevel`` decoder) and SentencePiece-style vocabularies (``▁`` for
spaces, ``<0xXX>`` byte-fallback pieces) are decoded by mapping each token to its bytes and running an
incremental UTF-8 decoder, so each token costs O(token length). Any other tokenizer falls back to
re-decoding a short window of recent tokens. In every mode the concatenated segments plus
``finalize()`` equal ``tokenizer.decode(all_tokens)``.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable, Sequence

SPIECE_UNDERLINE = "\u2581"


@functools.lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's map from printable unicode stand-ins back to bytes (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class StreamingDetokenizer:
    """Incremental detokenizer over a fixed token → bytes table.

    ``mode`` is ``"bytelevel"`` or ``"sentencepiece"``; ``pieces[i]`` is token i's vocabulary string
    (None for tokens decoded to nothing, e.g. special tokens when skipped). ``strip_leading_space``
    drops one leading space of the whole text (SentencePiece's prepended ``▁``).
    """

    def __init__(
        self,
        pieces: Sequence[str | None],
        mode: str = "bytelevel",
        strip_leading_space: bool = False,
        literal_ids: Sequence[int] = (),
    ) -> None:
        if mode not in ("bytelevel", "sentencepiece"):
            raise ValueError(f"mode must be 'bytelevel' or 'sentencepiece', got {mode!r}.")
        self.mode = mode
        self.strip_leading_space = strip_leading_space
        literal = set(literal_ids)
        self._table: list[bytes] = [
            b"" if p is None else (p.encode("utf-8") if i in literal else self._piece_bytes(p, mode))
            for i, p in enumerate(pieces)
        ]
        self.reset()

    @staticmethod
    def _piece_bytes(piece: str, mode: str) -> bytes:
        if mode == "bytelevel":
            dec = byte_decoder()
            out = bytearray()
            for ch in piece:
                b = dec.get(ch)
                if b is None:
                    out += ch.encode("utf-8")
                else:
                    out.append(b)
            return bytes(out)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                return bytes([int(piece[3:5], 16)])
            except ValueError:
                pass
        return piece.replace(SPIECE_UNDERLINE, " ").encode("utf-8")

    def reset(self) -> None:
        """Forget all streamed tokens."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tokens: list[int] = []
        self.text = ""
        self._started = False

    def _emit(self, segment: str) -> str:
        if not self._started and segment:
            self._started = True
            if self.strip_leading_space and segment.startswith(" "):
                segment = segment[1:]
        self.text += segment
        return segment

    def add_token(self, token: int) -> str:
        """Consume one token id; return the newly completed text (may be empty)."""
        self.tokens.append(token)
        piece = self._table[token] if 0 <= token < len(self._table) else b""
        return self._emit(self._decoder.decode(piece, final=False))

    def finalize(self) -> str:
        """Flush bytes held back for an incomplete character (decoded with U+FFFD replacements)."""
        segment = self._emit(self._decoder.decode(b"", final=True))
        self._decoder.reset()
        return segment


class WindowStreamingDetokenizer:
    """Fallback for any tokenizer with ``decode(ids) -> str``: re-decodes a small window of tokens.

    Emits the difference between decoding ``tokens[prefix:]`` and ``tokens[prefix:read]`` once it does
    not end in U+FFFD (an incomplete character), as Hugging Face text-generation-inference does.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.reset()

    def reset(self) -> None:
        """Forget all streamed tokens."""
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = 0
        self._read = 0

    def add_token(self, token: int) -> str:
        """Consume one token id; return the newly completed text (may be empty)."""
        self.tokens.append(token)
        prefix_text = self._decode(self.tokens[self._prefix : self._read])
        new_text = self._decode(self.tokens[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            segment = new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.tokens)
            self.text += segment
            return segment
        return ""

    def finalize(self) -> str:
        """Emit whatever text the held-back tokens decode to."""
        full = self._decode(self.tokens)
        segment = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text += segment
        self._prefix = self._read = len(self.tokens)
        return segment
