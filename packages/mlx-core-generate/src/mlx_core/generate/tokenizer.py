"""Tokenizers loaded from a model directory with the Hugging Face ``tokenizers`` library.

``tokenizer.json`` gives the vocabulary and pipeline; EOS and BOS ids are gathered from
``tokenizer_config.json`` (``eos_token``/``bos_token``), ``generation_config.json`` and ``config.json``
(``eos_token_id``, int or list). Every EOS id found is kept: generation stops at any of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer

from .detokenizer import StreamingDetokenizer, WindowStreamingDetokenizer
from .errors import TokenizerFilesError


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or remove the file.") from exc
    return data if isinstance(data, dict) else {}


class Tokenizer:
    """Text ↔ token ids plus what generation needs: EOS ids, BOS id, vocabulary size, a detokenizer."""

    def __init__(
        self,
        tokenizer: _HFTokenizer,
        eos_token_ids: Iterable[int] = (),
        bos_token_id: int | None = None,
    ) -> None:
        self._tok = tokenizer
        self.eos_token_ids: set[int] = {int(t) for t in eos_token_ids}
        self.bos_token_id = bos_token_id
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._special_ids: set[int] = {
            i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special
        }
        self._detok_spec = self._detect_decoder()

    @property
    def eos_token_id(self) -> int | None:
        """The smallest EOS id (for APIs that want one), or None."""
        return min(self.eos_token_ids) if self.eos_token_ids else None

    @property
    def backend(self) -> _HFTokenizer:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (with the tokenizer's BOS/EOS template when ``add_special_tokens``)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}.")
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens dropped unless ``skip_special_tokens=False``)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary string, or None."""
        return self._tok.token_to_id(token)

    def _detect_decoder(self) -> tuple[str, bool] | None:
        decoder = json.loads(self._tok.to_str()).get("decoder") or {}
        kinds = [decoder] if decoder.get("type") != "Sequence" else list(decoder.get("decoders", []))
        types = [d.get("type") for d in kinds]
        if types == ["ByteLevel"]:
            return ("bytelevel", False)
        if types == ["Metaspace"]:
            d = kinds[0]
            strip = d.get("prepend_scheme", "always") != "never" and d.get("add_prefix_space", True)
            return ("sentencepiece", bool(strip))
        spm_parts = {"Replace", "ByteFallback", "Fuse", "Strip"}
        if types and set(types) <= spm_parts and "Replace" in types:
            replace = next(d for d in kinds if d.get("type") == "Replace")
            if replace.get("pattern", {}).get("String") != "\u2581" or replace.get("content") != " ":
                return None
            strips = [d for d in kinds if d.get("type") == "Strip"]
            if any(d.get("stop", 0) != 0 or d.get("start", 0) > 1 for d in strips):
                return None
            return ("sentencepiece", any(d.get("start", 0) == 1 for d in strips))
        return None

    def detokenizer(self) -> StreamingDetokenizer | WindowStreamingDetokenizer:
        """A fresh streaming detokenizer whose output equals ``decode`` of the streamed ids."""
        if self._detok_spec is None:
            return WindowStreamingDetokenizer(self.decode)
        mode, strip = self._detok_spec
        pieces = [
            None if i in self._special_ids else self._tok.id_to_token(i) for i in range(self.vocab_size)
        ]
        return StreamingDetokenizer(pieces, mode=mode, strip_leading_space=strip)


def load_tokenizer(path: str | Path, eos_token_ids: Iterable[int] = ()) -> Tokenizer:
    """Load ``tokenizer.json`` and the EOS/BOS ids from a model directory (extra EOS ids may be added)."""
    root = Path(path)
    if not root.is_dir():
        raise TokenizerFilesError(
            f"{root} is not a directory; pass the model directory holding tokenizer.json."
        )
    tok_file = root / "tokenizer.json"
    if not tok_file.is_file():
        raise TokenizerFilesError(
            f"{root} has no tokenizer.json; mlx_core.generate needs the fast-tokenizer file "
            "(save it with transformers' tokenizer.save_pretrained or tokenizers' Tokenizer.save)."
        )
    try:
        hf = _HFTokenizer.from_file(str(tok_file))
    except Exception as exc:
        raise ValueError(f"could not parse {tok_file}: {exc}") from exc
    tok_cfg = _read_json(root / "tokenizer_config.json")
    gen_cfg = _read_json(root / "generation_config.json")
    cfg = _read_json(root / "config.json")

    eos: set[int] = {int(t) for t in eos_token_ids}
    content = _token_content(tok_cfg.get("eos_token"))
    eos_id = hf.token_to_id(content) if content is not None else None
    if eos_id is not None:
        eos.add(eos_id)
    for source in (gen_cfg, cfg, cfg.get("text_config") or {}):
        eos.update(_ids(source.get("eos_token_id")))

    bos: int | None = None
    content = _token_content(tok_cfg.get("bos_token"))
    if content is not None:
        bos = hf.token_to_id(content)
    for source in (gen_cfg, cfg):
        if bos is None and _ids(source.get("bos_token_id")):
            bos = _ids(source.get("bos_token_id"))[0]
    return Tokenizer(hf, eos_token_ids=eos, bos_token_id=bos)
