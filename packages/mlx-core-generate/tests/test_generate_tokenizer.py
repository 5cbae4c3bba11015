"""Tokenizer loading (EOS/BOS ids from config files) and streaming detokenization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.generate import (
    StreamingDetokenizer,
    Tokenizer,
    TokenizerFilesError,
    WindowStreamingDetokenizer,
    load_tokenizer,
)

from .conftest import CORPUS


def _stream(tok: Tokenizer, ids: list[int]) -> tuple[list[str], str]:
    detok = tok.detokenizer()
    segments = [detok.add_token(i) for i in ids]
    segments.append(detok.finalize())
    return segments, detok.text


def test_load_bpe_reads_eos_and_bos(bpe_dir: Path) -> None:
    tok = load_tokenizer(bpe_dir)
    assert tok.eos_token_ids == {1, 2} and tok.bos_token_id == 0 and tok.vocab_size == 400
    assert isinstance(tok.detokenizer(), StreamingDetokenizer) and tok.detokenizer().mode == "bytelevel"
    text = "héllo wörld 日本語 😀🚀"
    assert tok.decode(tok.encode(text)) == text


def test_load_spm_reads_config_json(spm_dir: Path) -> None:
    tok = load_tokenizer(spm_dir, eos_token_ids=[0])
    assert tok.eos_token_ids == {0, 2} and tok.bos_token_id == 1
    detok = tok.detokenizer()
    assert isinstance(detok, StreamingDetokenizer) and detok.mode == "sentencepiece"


@pytest.mark.parametrize("fixture", ["bpe_dir", "spm_dir"])
def test_stream_of_real_text_equals_decode_and_is_complete_utf8(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    tok = load_tokenizer(request.getfixturevalue(fixture))
    for text in [*CORPUS[:5], "  leading spaces and ünïcödé 😀😀", "a"]:
        ids = tok.encode(text)
        segments, full = _stream(tok, ids)
        assert "".join(segments) == full == tok.decode(ids)
        assert all("\ufffd" not in s for s in segments)
    # multi-byte characters really are split across byte-level tokens here
    if fixture == "bpe_dir":
        ids = tok.encode("😀🚀")
        assert len(ids) > 2 and "" in _stream(tok, ids)[0][:-1]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_token_sequences_stream_equals_decode(
    bpe_dir: Path, spm_dir: Path, data: st.DataObject
) -> None:
    """Arbitrary ids, including special tokens and bytes that form invalid UTF-8, still match decode."""
    for path in (bpe_dir, spm_dir):
        tok = _cached(path)
        ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), min_size=0, max_size=40))
        segments, _ = _stream(tok, ids)
        assert "".join(segments) == tok.decode(ids)


_CACHE: dict[Path, Tokenizer] = {}


def _cached(path: Path) -> Tokenizer:
    if path not in _CACHE:
        _CACHE[path] = load_tokenizer(path)
    return _CACHE[path]


def test_window_detokenizer_matches_decode_for_other_decoders(tmp_path: Path) -> None:
    """A WordPiece tokenizer (not byte-level, not ▁) uses the windowed fallback and still matches."""
    from tokenizers import BertWordPieceTokenizer

    wp = BertWordPieceTokenizer()
    wp.train_from_iterator(CORPUS, vocab_size=200, min_frequency=1)
    wp.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok.detokenizer(), WindowStreamingDetokenizer)
    rng = np.random.default_rng(0)
    for _ in range(10):
        ids = rng.integers(5, tok.vocab_size, size=25).tolist()
        segments, _ = _stream(tok, ids)
        assert "".join(segments) == tok.decode(ids)


def test_sentencepiece_byte_fallback_pieces() -> None:
    """Llama-style ▁ pieces and <0xXX> byte pieces; one leading space is stripped."""
    pieces = ["<unk>", "▁hello", "▁wor", "ld", "<0xE6>", "<0x97>", "<0xA5>", "!"]
    detok = StreamingDetokenizer(pieces, mode="sentencepiece", strip_leading_space=True)
    out = [detok.add_token(i) for i in [1, 2, 3, 4, 5, 6, 7]]
    assert out == ["hello", " wor", "ld", "", "", "日", "!"]
    assert detok.finalize() == "" and detok.text == "hello world日!"


def test_missing_files_raise(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFilesError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(TokenizerFilesError, match="not a directory"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ValueError, match="could not parse"):
        load_tokenizer(tmp_path)


def test_bad_config_json_raises(bpe_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text((bpe_dir / "tokenizer.json").read_text())
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [7, 9], "bos_token_id": 3}))
    tok = load_tokenizer(tmp_path)
    assert tok.eos_token_ids == {7, 9} and tok.bos_token_id == 3
