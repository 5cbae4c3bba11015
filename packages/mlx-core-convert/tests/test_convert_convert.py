"""convert(): dtype casts, quantization layout, sharding, side files, mappings and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import (
    ConvertError,
    CorruptCheckpointError,
    DestinationExistsError,
    PickleCheckpointError,
    WeightMapping,
    convert,
)


def load_all(directory: Path) -> dict[str, mx.array]:
    """Every tensor of an output directory, read with MLX's own safetensors loader."""
    out: dict[str, mx.array] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(mx.load(str(file)))
    return out


def bf16_bits_reference(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns with round-to-nearest-even, computed in integer numpy."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def test_float16_cast_is_exact_and_ints_untouched(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=1)
    rng = np.random.default_rng(2)
    tensors["extra.position_ids"] = rng.integers(-(2**40), 2**40, size=(3, 7), dtype=np.int64)
    tensors["extra.mask"] = rng.integers(0, 2, size=(5,), dtype=np.uint8)
    src = llama_dir(tensors=tensors)
    dest = convert(src, tmp_path / "out", dtype="float16", quiet=True)
    out = load_all(dest)
    assert set(out) == set(tensors)
    for name, ref in tensors.items():
        got = np.array(out[name])
        if ref.dtype.kind == "f":
            assert out[name].dtype == mx.float16
            np.testing.assert_array_equal(got, ref.astype(np.float16))
        else:
            assert got.dtype == ref.dtype
            np.testing.assert_array_equal(got, ref)
    config = json.loads((dest / "config.json").read_text())
    assert config["torch_dtype"] == "float16"
    assert "quantization" not in config


def test_bfloat16_cast_matches_round_to_nearest_even(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=3)
    src = llama_dir(tensors=tensors)
    out = load_all(convert(src, tmp_path / "out", dtype="bfloat16", quiet=True))
    for name, ref in tensors.items():
        assert out[name].dtype == mx.bfloat16
        got = np.array(out[name].view(mx.uint16))
        np.testing.assert_array_equal(got, bf16_bits_reference(ref), err_msg=name)


def test_bfloat16_source_read_and_cast_to_float32(tmp_path: Path) -> None:
    # A bf16 checkpoint written by hand (numpy cannot hold bf16): bit patterns then view as float32.
    rng = np.random.default_rng(4)
    bits = bf16_bits_reference(rng.standard_normal((8, 64)).astype(np.float32))
    header = {"w.weight": {"dtype": "BF16", "shape": [8, 64], "data_offsets": [0, bits.nbytes]}}
    blob = json.dumps(header).encode()
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + bits.tobytes())
    out = load_all(convert(src, tmp_path / "out", dtype="float32", quiet=True))
    expected = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(np.array(out["w.weight"]), expected)


def test_dtype_none_keeps_stored_dtypes(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=5)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.float16)
    out = load_all(convert(llama_dir(tensors=tensors), tmp_path / "out", quiet=True))
    assert out["model.norm.weight"].dtype == mx.float16
    np.testing.assert_array_equal(np.array(out["lm_head.weight"]), tensors["lm_head.weight"])


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_tensors_identical_to_mx_quantize(kit, tmp_path: Path, llama_dir, bits: int) -> None:
    tensors = kit.tensors(seed=6)
    dest = convert(llama_dir(tensors=tensors), tmp_path / "out", quantize=True, q_bits=bits, quiet=True)
    out = load_all(dest)
    quantized = 0
    for name, ref in tensors.items():
        if ref.ndim == 2:
            path = name.removesuffix(".weight")
            wq, scales, biases = mx.quantize(mx.array(ref), group_size=64, bits=bits)
            for suffix, expected in (("weight", wq), ("scales", scales), ("biases", biases)):
                assert mx.array_equal(out[f"{path}.{suffix}"], expected), f"{path}.{suffix}"
            quantized += 1
        else:
            np.testing.assert_array_equal(np.array(out[name]), ref)
    assert quantized == 2 + 7 * 2
    config = json.loads((dest / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
    assert config["quantization_config"] == config["quantization"]


def test_quantize_after_cast_and_group_size_32(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=7)
    dest = convert(
        llama_dir(tensors=tensors),
        tmp_path / "o",
        dtype="float16",
        quantize=True,
        q_group_size=32,
        quiet=True,
    )
    out = load_all(dest)
    ref = mx.array(tensors["model.layers.1.mlp.up_proj.weight"]).astype(mx.float16)
    wq, _, biases = mx.quantize(ref, group_size=32, bits=4)
    assert out["model.layers.1.mlp.up_proj.scales"].dtype == mx.float16
    assert mx.array_equal(out["model.layers.1.mlp.up_proj.weight"], wq)
    assert mx.array_equal(out["model.layers.1.mlp.up_proj.biases"], biases)


@pytest.mark.parametrize(("mode", "group"), [("mxfp4", 32), ("nvfp4", 16), ("mxfp8", 32)])
def test_floating_point_modes_write_no_biases(kit, tmp_path: Path, llama_dir, mode: str, group: int) -> None:
    tensors = kit.tensors(seed=8)
    dest = convert(llama_dir(tensors=tensors), tmp_path / "o", quantize=True, q_mode=mode, quiet=True)
    out = load_all(dest)
    wq, scales = mx.quantize(mx.array(tensors["lm_head.weight"]), group_size=group, mode=mode)[:2]
    assert mx.array_equal(out["lm_head.weight"], wq) and mx.array_equal(out["lm_head.scales"], scales)
    assert "lm_head.biases" not in out
    assert json.loads((dest / "config.json").read_text())["quantization"]["mode"] == mode


def test_predicate_and_regex_rules(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=9)
    rules = {r"lm_head|embed_tokens": {"bits": 8}, r"\.mlp\.gate_proj": False}
    dest = convert(
        llama_dir(tensors=tensors), tmp_path / "o", quantize=True, quant_predicate=rules, quiet=True
    )
    out = load_all(dest)
    block = json.loads((dest / "config.json").read_text())["quantization"]
    assert block["lm_head"] == {"group_size": 64, "bits": 8, "mode": "affine"}
    assert block["model.embed_tokens"]["bits"] == 8 and "model.layers.0.mlp.up_proj" not in block
    wq8 = mx.quantize(mx.array(tensors["lm_head.weight"]), group_size=64, bits=8)[0]
    assert mx.array_equal(out["lm_head.weight"], wq8)
    np.testing.assert_array_equal(
        np.array(out["model.layers.0.mlp.gate_proj.weight"]), tensors["model.layers.0.mlp.gate_proj.weight"]
    )
    assert "model.layers.0.mlp.gate_proj.scales" not in out
    assert out["model.layers.0.mlp.up_proj.weight"].dtype == mx.uint32

    calls: list[tuple[str, tuple[int, ...]]] = []

    def predicate(path: str, shape: tuple[int, ...]) -> bool:
        calls.append((path, shape))
        return "self_attn" in path

    dest2 = convert(llama_dir("src2"), tmp_path / "o2", quantize=True, quant_predicate=predicate, quiet=True)
    assert ("model.layers.1.mlp.down_proj", (64, 128)) in calls
    out2 = load_all(dest2)
    assert "model.layers.0.self_attn.q_proj.scales" in out2 and "lm_head.scales" not in out2


def test_tensor_whose_input_dim_is_not_divisible_is_left_float_unless_forced(
    kit, tmp_path: Path, llama_dir
) -> None:
    tensors = kit.tensors(seed=10)
    tensors["odd.weight"] = np.ones((8, 48), np.float32) * np.arange(48, dtype=np.float32)
    out = load_all(convert(llama_dir(tensors=tensors), tmp_path / "o", quantize=True, quiet=True))
    assert out["odd.weight"].dtype == mx.float32 and "odd.scales" not in out
    with pytest.raises(ConvertError, match=r"group size 64 does not divide its input dimension 48"):
        convert(llama_dir("s2", tensors=tensors), tmp_path / "o2", quantize=True, quant_predicate={"odd": {}})
    assert not (tmp_path / "o2").exists()


def test_sharded_input_and_sharded_output(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=11)
    src = llama_dir(shards=3, seed=11)
    dest = convert(src, tmp_path / "o", max_shard_size=15_000, quantize=True, quiet=True)
    files = sorted(p.name for p in dest.glob("*.safetensors"))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    out_by_file = {f: mx.load(str(dest / f)) for f in files}
    for name, file in index["weight_map"].items():
        assert name in out_by_file[file]
    # quantized triples stay in one shard; shards respect the limit unless one group is larger
    for path in {n.rsplit(".", 1)[0] for n in index["weight_map"] if n.endswith(".scales")}:
        assert len({index["weight_map"][f"{path}.{s}"] for s in ("weight", "scales", "biases")}) == 1
    for f in files:
        size = sum(a.nbytes for a in out_by_file[f].values())
        assert size <= 15_000 or len(out_by_file[f]) <= 3
    assert index["metadata"]["total_size"] == sum(a.nbytes for d in out_by_file.values() for a in d.values())
    all_out = {k: v for d in out_by_file.values() for k, v in d.items()}
    np.testing.assert_array_equal(np.array(all_out["model.norm.weight"]), tensors["model.norm.weight"])
    # single-file output has no index
    single = convert(src, tmp_path / "single", quiet=True)
    assert [p.name for p in single.glob("*.safetensors")] == ["model.safetensors"]
    assert not (single / "model.safetensors.index.json").exists()


def test_side_files_copied_and_config_rewritten(tmp_path: Path, llama_dir) -> None:
    src = llama_dir()
    (src / "chat_template.jinja").write_text("{{ messages }}")
    (src / "pytorch_model.bin").write_bytes(b"not loaded")
    dest = convert(src, tmp_path / "o", quiet=True)
    names = {p.name for p in dest.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "chat_template.jinja" in names and "pytorch_model.bin" not in names
    assert (dest / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    assert json.loads((dest / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no temp dirs left behind


def test_weight_mapping_applied_while_streaming(kit, tmp_path: Path, llama_dir) -> None:
    tensors = kit.tensors(seed=12)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.arange(8, dtype=np.float32)
    mapping = WeightMapping(
        exact={"lm_head.weight": "output.weight"},
        prefix={"model.": "", "model.layers.": "blocks."},
        regex=[(r"\.self_attn\.", ".attn.")],
        drop=[r"rotary_emb\.inv_freq$"],
        transforms=[(r"^output\.weight$", lambda a: a.T), (r"norm\.weight$", lambda a: np.asarray(a) * 2)],
    )
    out = load_all(convert(llama_dir(tensors=tensors), tmp_path / "o", weight_map=mapping, quiet=True))
    assert "blocks.0.attn.q_proj.weight" in out and "embed_tokens.weight" in out and "norm.weight" in out
    assert not any("inv_freq" in k for k in out)
    np.testing.assert_array_equal(np.array(out["output.weight"]), tensors["lm_head.weight"].T)
    np.testing.assert_array_equal(np.array(out["norm.weight"]), tensors["model.norm.weight"] * 2)
    assert len(out) == len(tensors) - 1


def test_pickle_only_checkpoint_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickle that must never be loaded")
    with pytest.raises(PickleCheckpointError, match=r"pytorch_model\.bin.*never opens them"):
        convert(src, tmp_path / "o", quiet=True)
    assert not (tmp_path / "o").exists()


def test_index_naming_a_missing_shard(tmp_path: Path, llama_dir) -> None:
    src = llama_dir(shards=2)
    (src / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        CorruptCheckpointError, match=r"names shard 'model-00002-of-00002.safetensors'.*missing"
    ):
        convert(src, tmp_path / "o", quiet=True)
    assert not (tmp_path / "o").exists()


def test_index_disagreeing_with_shards(tmp_path: Path, llama_dir) -> None:
    src = llama_dir(shards=2)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.ghost.weight"] = "model-00001-of-00002.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match=r"ghost.*missing from every shard"):
        convert(src, tmp_path / "o", quiet=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float13"}, "unknown dtype 'float13'"),
        ({"quantize": True, "q_bits": 7}, r"bits \[2, 3, 4, 5, 6, 8\], got 7"),
        ({"quantize": True, "q_group_size": 48}, "group sizes"),
        ({"quantize": True, "q_mode": "int4"}, "unknown quantization mode"),
        ({"quantize": "mixed_9_9"}, "not a recipe"),
        ({"q_bits": 4}, "need quantize=True"),
        ({"max_shard_size": "5 parsecs"}, "cannot parse max_shard_size"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path: Path, llama_dir, kwargs: dict, message: str) -> None:
    with pytest.raises(ConvertError, match=message):
        convert(llama_dir(), tmp_path / "o", quiet=True, **kwargs)
    assert not (tmp_path / "o").exists()


def test_dest_inside_source_and_source_inside_dest(tmp_path: Path, llama_dir) -> None:
    src = llama_dir()
    with pytest.raises(ConvertError, match="inside the source"):
        convert(src, src / "mlx", quiet=True)
    with pytest.raises(ConvertError, match="inside the source"):
        convert(src, src, overwrite=True, quiet=True)
    with pytest.raises(ConvertError, match=r"source .* is inside the destination"):
        convert(src, tmp_path, overwrite=True, quiet=True)
    assert src.exists() and (src / "model.safetensors").exists()


def test_missing_source_and_file_source(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="neither an existing directory nor a Hub repo id"):
        convert(tmp_path / "nope" / "deeper", tmp_path / "o")
    (tmp_path / "f.safetensors").write_bytes(b"x")
    with pytest.raises(ConvertError, match="is a file"):
        convert(tmp_path / "f.safetensors", tmp_path / "o")


def test_already_quantized_source_refused(tmp_path: Path, llama_dir) -> None:
    q = convert(llama_dir(), tmp_path / "q", quantize=True, quiet=True)
    with pytest.raises(ConvertError, match=r"already quantized.*dequantize"):
        convert(q, tmp_path / "qq", quantize=True, quiet=True)


# --- atomicity -------------------------------------------------------------------------------------------


def test_exception_inside_transform_leaves_no_dest(tmp_path: Path, llama_dir) -> None:
    class Boom(RuntimeError):
        pass

    def explode(a: mx.array) -> mx.array:
        raise Boom("interrupted mid-conversion")

    mapping = WeightMapping(transforms=[(r"layers\.1\.mlp\.down_proj", explode)])
    with pytest.raises(Boom):
        convert(llama_dir(shards=2), tmp_path / "o", weight_map=mapping, max_shard_size=20_000, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_keyboard_interrupt_leaves_existing_dest_untouched(tmp_path: Path, llama_dir) -> None:
    dest = tmp_path / "o"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")

    def interrupt(a: mx.array) -> mx.array:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(
            llama_dir(),
            dest,
            overwrite=True,
            quiet=True,
            weight_map=WeightMapping(transforms=[("lm_head", interrupt)]),
        )
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "src"]


def test_existing_dest_untouched_without_overwrite_and_replaced_with_it(tmp_path: Path, llama_dir) -> None:
    src = llama_dir()
    dest = tmp_path / "o"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    with pytest.raises(DestinationExistsError, match="overwrite=True"):
        convert(src, dest, quiet=True)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    convert(src, dest, overwrite=True, quiet=True)
    assert not (dest / "keep.txt").exists() and (dest / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "src"]


@pytest.mark.parametrize("damage", ["truncate", "header", "length"])
def test_corrupt_input_leaves_no_dest(tmp_path: Path, llama_dir, damage: str) -> None:
    src = llama_dir(shards=2)
    shard = src / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[:-100])
        message = "truncated"
    elif damage == "header":
        shard.write_bytes(data[:8] + b"#" + data[9:])
        message = "corrupt safetensors header"
    else:
        shard.write_bytes((10**12).to_bytes(8, "little") + data[8:])
        message = "not a valid safetensors file"
    with pytest.raises(CorruptCheckpointError, match=message):
        convert(src, tmp_path / "o", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_checkpoint_without_tokenizer_or_config(kit, tmp_path: Path) -> None:
    src = kit.write(tmp_path / "src", {"w.weight": np.ones((4, 64), np.float32)}, tokenizer=False)
    (src / "config.json").unlink()
    dest = convert(src, tmp_path / "o", quantize=True, quiet=True)
    assert json.loads((dest / "config.json").read_text())["quantization"]["bits"] == 4


@pytest.mark.gpu
def test_quantize_on_gpu_matches_mx_quantize(tmp_path: Path, llama_dir, kit) -> None:
    if not mx.cuda.is_available():
        pytest.skip("needs MLX's CUDA backend")
    tensors = kit.tensors(seed=50)
    with mx.stream(mx.gpu):
        dest = convert(
            llama_dir(tensors=tensors), tmp_path / "o", quantize=True, dtype="bfloat16", quiet=True
        )
        ref = mx.quantize(mx.array(tensors["lm_head.weight"]).astype(mx.bfloat16), group_size=64, bits=4)
    out = load_all(dest)
    for suffix, expected in zip(("weight", "scales", "biases"), ref, strict=True):
        assert mx.array_equal(out[f"lm_head.{suffix}"], expected)
