"""Kernels declare only the inputs a launch reads (`mlx_core.kernels._inputs`); checked on any backend by
standing in for ``mx.fast.cuda_kernel`` and recording what each launch passes."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import _inputs
from mlx_core.kernels._inputs import inputs_read, kernel_reading
from mlx_core.kernels._sources import kernel_source
from mlx_core.kernels.matvec import MatvecWeights


class Recorder:
    """Stands in for ``mx.fast.cuda_kernel``: keeps each kernel's declaration and each launch's arrays."""

    def __init__(self) -> None:
        self.kernels: list[dict[str, Any]] = []
        self.launches: list[tuple[dict[str, Any], list[mx.array]]] = []
        self.settings: list[dict[str, Any]] = []  # each launch's template, grid and threadgroup

    def __call__(self, **declared: Any) -> Any:
        self.kernels.append(declared)

        def launch(
            *, inputs: list[mx.array], output_shapes: Any, output_dtypes: Any, **settings: Any
        ) -> list[mx.array]:
            self.launches.append((declared, list(inputs)))
            self.settings.append(settings)
            return [mx.zeros(s, dtype=d) for s, d in zip(output_shapes, output_dtypes, strict=True)]

        return launch


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    monkeypatch.setattr(mx.fast, "cuda_kernel", rec)
    _inputs._kernel.cache_clear()
    yield rec
    _inputs._kernel.cache_clear()


NAMES = ("x", "w", "scales", "residual")
ALIASES = {"scales": "x", "scales_strides": "x_strides", "residual": "x"}


def test_kernel_declares_the_inputs_read_and_aliases_the_rest(recorder: Recorder) -> None:
    kernel_reading("k", NAMES, frozenset({"x", "w"}), ALIASES, ("y",), "matvec.cu", ("common.cuh",))
    declared = recorder.kernels[-1]
    assert declared["input_names"] == ["x", "w"]
    assert declared["name"] == "k_rc"  # inputs 2 and 3 left out
    defines = [line for line in declared["header"].splitlines() if line.startswith("#define scales")]
    assert defines == ["#define scales x", "#define scales_strides x_strides"]
    assert declared["header"].rstrip().endswith("#define scales_strides x_strides")
    assert "#define residual x" in declared["header"]


def test_views_share_an_output_and_name_a_kernel_of_their_own(recorder: Recorder) -> None:
    views = {"part_ml": "part + 8"}
    a = kernel_reading("k", NAMES, frozenset(NAMES), ALIASES, ("part",), "matvec.cu", (), views=views)
    b = kernel_reading("k", NAMES, frozenset(NAMES), ALIASES, ("part_o", "part_ml"), "matvec.cu", ())
    assert a is not b
    first, second = recorder.kernels
    assert first["name"].startswith("k_v") and second["name"] == "k"
    assert first["header"].endswith("#define part_ml (part + 8)\n")
    assert first["output_names"] == ["part"]


def test_every_input_read_keeps_the_plain_kernel(recorder: Recorder) -> None:
    kernel_reading("k", NAMES, frozenset(NAMES), ALIASES, ("y",), "matvec.cu", ("common.cuh",))
    declared = recorder.kernels[-1]
    assert declared["name"] == "k" and declared["input_names"] == list(NAMES)
    assert declared["header"] == kernel_source("common.cuh")  # no aliases appended


def test_one_kernel_per_set_of_inputs(recorder: Recorder) -> None:
    a = kernel_reading("k", NAMES, frozenset({"x", "w"}), ALIASES, ("y",), "matvec.cu", ())
    b = kernel_reading("k", NAMES, frozenset({"w", "x"}), ALIASES, ("y",), "matvec.cu", ())
    c = kernel_reading("k", NAMES, frozenset({"x", "w", "scales"}), ALIASES, ("y",), "matvec.cu", ())
    assert a is b and a is not c
    assert len(recorder.kernels) == 2


def test_an_input_without_alias_or_an_unknown_name_is_refused(recorder: Recorder) -> None:
    with pytest.raises(ValueError, match=r"\['w'\] of k have no alias"):
        kernel_reading("k", NAMES, frozenset({"x"}), ALIASES, ("y",), "matvec.cu", ())
    with pytest.raises(ValueError, match=r"k has no inputs \['z'\]"):
        kernel_reading("k", NAMES, frozenset({"x", "w", "z"}), ALIASES, ("y",), "matvec.cu", ())


def test_inputs_read_orders_by_the_kernel_and_checks_the_names() -> None:
    x, w, r = mx.array([1.0]), mx.array([2.0]), mx.array([3.0])
    read, arrays = inputs_read(NAMES, {"residual": r, "w": w, "scales": None, "x": x})
    assert read == {"x", "w", "residual"}
    assert [a is b for a, b in zip(arrays, [x, w, r], strict=True)] == [True, True, True]
    with pytest.raises(ValueError, match="expected arrays for"):
        inputs_read(NAMES, {"x": x, "w": w})


def rand(*shape: int, seed: int = 0) -> mx.array:
    return mx.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32)).astype(mx.bfloat16)


def quantized(out: int, inp: int) -> MatvecWeights:
    return MatvecWeights(*mx.quantize(rand(out, inp), group_size=64, bits=4), 4, 64)


def launches_pass_their_declared_inputs(recorder: Recorder) -> list[list[str]]:
    """Every launch passed one array per declared input; the declared names of each launch."""
    for declared, arrays in recorder.launches:
        assert len(arrays) == len(declared["input_names"])
    return [declared["input_names"] for declared, _ in recorder.launches]


def test_matvec_and_mlp_launches_leave_out_unread_inputs(recorder: Recorder) -> None:
    from mlx_core.kernels.matvec import matvec_cuda
    from mlx_core.kernels.mlp import _mlp_cuda

    x, norm = rand(1, 1, 256), rand(256)
    w = rand(512, 256)
    q = quantized(256, 256)
    y = matvec_cuda(
        x, w, None, None, bits=None, group_size=64, norm_weight=norm, eps=1e-5, residual=None, swiglu=False
    )
    matvec_cuda(
        x,
        q.weight,
        q.scales,
        q.biases,
        bits=4,
        group_size=64,
        norm_weight=None,
        eps=1e-5,
        residual=x,
        swiglu=False,
    )
    counters = mx.zeros((4,), dtype=mx.int32)
    _mlp_cuda(x, MatvecWeights(rand(1024, 256)), MatvecWeights(rand(256, 512)), norm, 1e-5, counters)
    _mlp_cuda(x, quantized(1024, 256), quantized(256, 512), norm, 1e-5, counters)
    assert y.shape == (1, 1, 512)
    assert launches_pass_their_declared_inputs(recorder) == [
        ["x", "w", "norm_w", "params"],
        ["x", "w", "scales", "biases", "residual", "params"],
        ["x", "gu_w", "norm_w", "down_w", "params", "counters"],
        [
            "x",
            "gu_w",
            "gu_scales",
            "gu_biases",
            "norm_w",
            "down_w",
            "down_scales",
            "down_biases",
            "params",
            "counters",
        ],
    ]
    # the arrays are the ones named: the dense MLP's fourth input is the down weight
    assert recorder.launches[2][1][3].shape == (256, 512)


def test_decode_attention_launches_leave_out_unread_inputs(recorder: Recorder) -> None:
    attention = importlib.import_module("mlx_core.kernels.decode_attention")
    q, k, v = rand(1, 8, 1, 64), rand(1, 2, 100, 64, seed=1), rand(1, 2, 100, 64, seed=2)
    lengths = mx.array([90, 0, 0, 0], dtype=mx.int32)
    attention.decode_attention_cuda(q, k, v, 0.1, lengths)
    attention.decode_attention_cuda(q, k, v, 0.1, lengths, counters=mx.zeros((2,), dtype=mx.int32))
    attention.decode_attention_cuda(q, k, v, 0.1, lengths, append=(rand(1, 2, 1, 64), rand(1, 2, 1, 64)))
    inv_freq = mx.array(np.linspace(0.01, 1.0, 32).astype(np.float32))
    prep = attention.TokenPrep(rand(64), rand(64), 1e-6, 1, inv_freq, 1.0)
    qkv = rand(1, 1, (8 + 4) * 64)
    counters = mx.zeros((8,), dtype=mx.int32)
    o = attention.OutputProjection(quantized(256, 512), residual=rand(1, 1, 256))
    position = mx.array(89, dtype=mx.int32)  # a scalar, passed as it is (no reshape primitive)
    attention._launch(qkv, k, v, 0.1, position, packed=(8, prep), counters=counters, oproj=o)
    partial = [names for names in launches_pass_their_declared_inputs(recorder) if "queries" in names]
    assert partial == [
        ["queries", "keys", "values", "lengths", "params"],
        ["queries", "keys", "values", "lengths", "params", "counters"],
        ["queries", "keys", "values", "lengths", "params", "k_new", "v_new"],
        ["queries", "keys", "values", "position", "params", "q_norm", "k_norm", "inv_freq", "counters", "o_w",
         "o_scales", "o_biases", "o_residual"],
    ]  # fmt: skip
    declared, arrays = recorder.launches[-1]
    assert arrays[3] is position
    # the folded launch's partials and attention output are views of one scratch output
    assert declared["output_names"] == ["part", "next_pos", "h"]
    assert "#define part_ml (part + " in declared["header"]
    assert "#define out (reinterpret_cast<T*>(part + " in declared["header"]
    assert "#define lengths position" in declared["header"]
    assert "#define lengths_strides queries_strides" in declared["header"]


def test_in_launch_merge_is_sized_for_the_splits_launched(recorder: Recorder) -> None:
    """The merge's per-split arrays (template FOLD_SPLITS) hold every split of the launch: 32 up to 32
    splits, 256 beyond (two instantiations, not one per cache length)."""
    attention = importlib.import_module("mlx_core.kernels.decode_attention")
    counters = mx.zeros((64,), dtype=mx.int32)
    for dtype, length in ((mx.bfloat16, 100), (mx.bfloat16, 4096), (mx.float32, 4096)):
        q = rand(1, 8, 1, 64).astype(dtype)
        k, v = rand(1, 2, length, 64, seed=1).astype(dtype), rand(1, 2, length, 64, seed=2).astype(dtype)
        lengths = mx.array([length - 3, 0, 0, 0], dtype=mx.int32)
        attention.decode_attention_cuda(q, k, v, 0.1, lengths, counters=counters)
    seen = []
    for settings in recorder.settings:
        splits = settings["grid"][0] // settings["threadgroup"][0] // 2  # one block per (kv head, split)
        bound = dict(settings["template"])["FOLD_SPLITS"]
        assert bound == (32 if splits <= 32 else 256) and bound >= splits
        seen.append(bound)
    assert sorted(set(seen)) == [32, 256], f"both sizes exercised: {seen}"
