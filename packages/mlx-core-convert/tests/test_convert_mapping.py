"""WeightMapping: rename precedence, drops and transforms."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.convert import ConvertError, WeightMapping


def test_precedence_drop_exact_prefix_regex() -> None:
    m = WeightMapping(
        exact={"model.embed_tokens.weight": "tok.weight"},
        prefix={"model.": "m.", "model.layers.": "L."},
        regex=[(r"\.self_attn\.", ".attn."), (r"^L\.(\d+)\.attn", r"L.\1.a")],
        drop=[r"inv_freq$", r"^unused\."],
    )
    assert m.rename("model.embed_tokens.weight") == "tok.weight"  # exact wins, no further rules
    assert m.rename("model.layers.3.self_attn.q_proj.weight") == "L.3.a.q_proj.weight"  # longest prefix
    assert m.rename("model.norm.weight") == "m.norm.weight"
    assert m.rename("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert m.rename("unused.x") is None and m.rename("lm_head.weight") == "lm_head.weight"
    assert WeightMapping().is_identity and not m.is_identity


@settings(max_examples=30, deadline=None)
@given(st.from_regex(r"[a-z]{1,6}(\.[a-z0-9_]{1,6}){0,4}", fullmatch=True))
def test_identity_and_prefix_rename_are_reversible(name: str) -> None:
    assert WeightMapping().rename(name) == name
    there = WeightMapping(prefix={"": "pre."})
    back = WeightMapping(prefix={"pre.": ""})
    assert back.rename(there.rename(name)) == name


def test_transforms_apply_in_order_on_output_names() -> None:
    m = WeightMapping(
        prefix={"conv.": "c."},
        transforms=[
            (r"^c\.weight$", lambda a: mx.transpose(a, (0, 2, 1))),
            (r"weight$", lambda a: np.asarray(a) + 1),
        ],
    )
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    name = m.rename("conv.weight")
    out = m.transform(name, mx.array(x))
    np.testing.assert_array_equal(np.array(out), x.transpose(0, 2, 1) + 1)
    assert m.transform("other", mx.array(x)).shape == (2, 3, 4)


def test_bad_mappings() -> None:
    with pytest.raises(ConvertError, match="invalid regex"):
        WeightMapping(drop=["("])
    with pytest.raises(TypeError, match="sequence of regexes"):
        WeightMapping(drop="inv_freq")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        WeightMapping(transforms=[("x", 3)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"must return an mx\.array"):
        WeightMapping(transforms=[("x", lambda a: [1])]).transform("x", mx.ones((1,)))
