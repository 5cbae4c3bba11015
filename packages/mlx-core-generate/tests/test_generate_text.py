"""TextAssembler: stop strings across token boundaries, EOS lists, max_tokens, flushing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlx_core.generate import Generate, TextAssembler, Tokenizer, load_tokenizer


class PieceTokenizer:
    """Each id decodes to a fixed string; lets tests choose token boundaries exactly."""

    def __init__(self, pieces: list[str], eos: set[int] = frozenset()) -> None:
        self.pieces = pieces
        self.eos_token_ids = set(eos)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


PIECES = ["Hello", " wor", "ld", ". ST", "OP", " more", "<eos>", "S", "T", "x"]


def _run(asm: TextAssembler, ids: list[int]) -> tuple[list[str], str | None]:
    out, reason = [], None
    for i in ids:
        seg, reason = asm.add(i)
        out.append(seg)
        if reason:
            break
    return out, reason


def test_stop_string_spanning_two_tokens_is_cut_and_held_back() -> None:
    asm = TextAssembler(PieceTokenizer(PIECES), stop_strings=["STOP"], max_tokens=50)
    out, reason = _run(asm, [0, 1, 2, 3, 4, 5])
    assert reason == "stop" and asm.text == "Hello world. " == "".join(out)
    assert out[3] == ". "  # "ST" held back: it may start "STOP"
    assert asm.tokens == [0, 1, 2, 3, 4]


def test_held_back_prefix_released_when_it_cannot_match() -> None:
    asm = TextAssembler(PieceTokenizer(PIECES), stop_strings=["STOP"], max_tokens=50)
    out, reason = _run(asm, [3, 9, 0])
    assert out == [". ", "STx", "Hello"] and reason is None
    assert asm.finish() == "" and asm.finish_reason == "length"


def test_earliest_of_several_stop_strings_wins() -> None:
    asm = TextAssembler(PieceTokenizer(PIECES), stop_strings=["ld. ", "world", "zzz"], max_tokens=50)
    _run(asm, [0, 1, 2, 3])
    assert asm.text == "Hello " and asm.finish_reason == "stop"


def test_eos_list_and_max_tokens() -> None:
    tok = PieceTokenizer(PIECES, eos={6, 8})
    asm = TextAssembler(tok, stop_strings=["STOP"], max_tokens=50)
    out, reason = _run(asm, [0, 3, 8])
    assert reason == "stop" and asm.text == "Hello. ST" and asm.tokens == [0, 3]
    assert asm.generation_tokens == 3
    asm = TextAssembler(tok, max_tokens=3)
    out, reason = _run(asm, [0, 1, 2, 5])
    assert reason == "length" and asm.text == "Hello world" and len(out) == 3
    with pytest.raises(RuntimeError, match="finished"):
        asm.add(0)


def test_max_tokens_flushes_held_back_text_but_honours_stop() -> None:
    asm = TextAssembler(PieceTokenizer(PIECES), stop_strings=["STOP"], max_tokens=2)
    out, reason = _run(asm, [0, 3])
    assert reason == "length" and "".join(out) == "Hello. ST"


def test_text_assembler_errors() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        TextAssembler(None, stop_strings=["x"])
    with pytest.raises(ValueError, match="non-empty"):
        TextAssembler(PieceTokenizer(PIECES), stop_strings=[""])
    with pytest.raises(ValueError, match="max_tokens"):
        TextAssembler(None, max_tokens=-1)


def test_real_bpe_multibyte_stop_string(bpe_dir: Path) -> None:
    tok = load_tokenizer(bpe_dir)
    text = "héllo 日本語 😀 the end of the story"
    ids = tok.encode(text)
    asm = TextAssembler(tok, stop_strings=["😀 the"], max_tokens=100)
    out, reason = _run(asm, ids)
    assert reason == "stop" and asm.text == "héllo 日本語 " == "".join(out)


class _ScriptedModel:
    """Emits a fixed token sequence regardless of input (logits one-hot on the scripted token)."""

    def __init__(self, script: list[int], vocab: int, prompt_len: int) -> None:
        self.script, self.vocab, self.layers = script, vocab, []
        self.seen, self.prompt_len = 0, prompt_len

    def make_cache(self) -> list[Any]:
        return []

    def __call__(self, x: Any, cache: Any = None) -> Any:
        import mlx.core as mx

        n = x.shape[1]
        self.seen += n
        tok = self.script[min(max(self.seen - self.prompt_len, 0), len(self.script) - 1)]
        row = mx.where(mx.arange(self.vocab) == tok, 10.0, 0.0)
        return mx.broadcast_to(row, (x.shape[0], n, self.vocab))


def test_generate_stops_on_stop_string_and_eos(bpe_dir: Path) -> None:
    tok: Tokenizer = load_tokenizer(bpe_dir)
    ids = tok.encode("the end. stop here. more", add_special_tokens=False)
    resp = Generate(
        _ScriptedModel(ids, tok.vocab_size, 2), [5, 6], tokenizer=tok, stop=["stop"], max_tokens=50
    ).run()
    assert resp.text == "the end. " and resp.finish_reason == "stop"
    model = _ScriptedModel([*ids[:3], 2, 7], tok.vocab_size, len(tok.encode("hello")))
    chunks = list(Generate(model, "hello", tokenizer=tok, max_tokens=50).stream())
    assert chunks[-1].token == 2 and chunks[-1].finish_reason == "stop"
    assert "".join(c.text for c in chunks) == tok.decode(ids[:3])
