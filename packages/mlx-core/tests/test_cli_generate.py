"""``mlx-core generate`` end to end: greedy text is deterministic, equals a cache-free greedy reference,
and speculative decoding (draft model, prompt lookup) gives the identical text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_core.models import load_model

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "mlx_core" / "models" / "demo" / "config.json"
PROMPT = "Return a new list containing"


def _reference_greedy(model_dir: Path | None, prompt: str, max_tokens: int) -> str:
    """Plain greedy loop over the model's own caches (no mlx_core.generate: no sampler, no detokenizer).

    It feeds the prompt as Generate does (all but the last token, then one token at a time) so the
    arithmetic, and hence every argmax, is the same even in bfloat16.
    """
    from mlx_core.models import demo_model_path

    model, tokenizer = load_model(model_dir or demo_model_path())
    ids = tokenizer.encode(prompt)
    caches = model.make_cache()
    if len(ids) > 1:
        model(mx.array([ids[:-1]]), cache=caches)
    token, out = ids[-1], []
    for _ in range(max_tokens):
        token = int(model(mx.array([[token]]), cache=caches)[0, -1].argmax().item())
        if token in tokenizer.eos_token_ids:
            break
        out.append(token)
    return tokenizer.decode(out)


@pytest.fixture(params=["tiny", "shipped"])
def model_dirs(
    request: pytest.FixtureRequest, tiny_models: tuple[Path, Path]
) -> tuple[str, str, Path | None]:
    """(--model, --draft-model, directory for the reference) for the tiny model and the shipped one."""
    if request.param == "tiny":
        return str(tiny_models[0]), str(tiny_models[1]), tiny_models[0]
    if not SHIPPED.is_file():
        pytest.skip("the shipped demo model has not been trained yet (scripts/train_demo_model.py)")
    return "demo", "demo-draft", None


@pytest.mark.slow
def test_greedy_is_deterministic_and_speculative_text_is_identical(
    cli: Callable[..., Any], model_dirs: tuple[str, str, Path | None]
) -> None:
    model, draft, reference_dir = model_dirs
    base = ["generate", "--model", model, "--prompt", PROMPT, "--max-tokens", "24"]
    first = cli(*base)
    assert first.returncode == 0, first.stderr
    assert "Prompt:" in first.stderr and "tokens-per-sec" in first.stderr and "Peak memory" in first.stderr
    assert cli(*base).stdout == first.stdout
    assert first.stdout == _reference_greedy(reference_dir, PROMPT, 24) + "\n"

    with_draft = cli(*base, "--draft-model", draft, "--num-draft-tokens", "3")
    assert with_draft.returncode == 0, with_draft.stderr
    assert with_draft.stdout == first.stdout
    assert "Speculative: acceptance" in with_draft.stderr
    lookup = cli(*base, "--prompt-lookup", "--quiet")
    assert lookup.returncode == 0, lookup.stderr
    assert lookup.stdout == first.stdout and lookup.stderr == ""


@pytest.mark.slow
def test_sampling_flags_and_quantized_kv(cli: Callable[..., Any], tiny_models: tuple[Path, Path]) -> None:
    """Seeded sampling repeats; every sampling/cache flag is accepted (kv-bits with head_dim 32)."""
    args = [
        "generate", "--model", str(tiny_models[0]), "--prompt", "-", "--max-tokens", "12",
        "--temperature", "0.8", "--top-p", "0.9", "--top-k", "20", "--min-p", "0.01",
        "--repetition-penalty", "1.1", "--seed", "3", "--max-kv-size", "64", "--quiet",
    ]  # fmt: skip
    a, b = cli(*args, stdin="Return the"), cli(*args, stdin="Return the")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    q = cli("generate", "--model", str(tiny_models[0]), "--max-tokens", "8", "--kv-bits", "8",
            "--kv-group-size", "32", "--quiet")  # fmt: skip
    assert q.returncode == 0, q.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-tokens", "0"], "positive integer"),
        (["--top-p", "1.5"], "--top-p"),
        (["--model", "/no/such/model"], "neither a local directory"),
        (["--num-draft-tokens", "3"], "needs --draft-model"),
        (["--draft-model", "x", "--prompt-lookup"], "not allowed with"),
    ],
)
def test_bad_input_is_one_line(cli: Callable[..., Any], args: list[str], message: str) -> None:
    done = cli("generate", *args)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
