"""``mlx-core convert``: a Hugging Face checkpoint (directory or Hub id) to an MLX model directory.

Every option of ``mlx_core.convert.convert`` (dtype, quantization, recipes, shard size, revision); the
conversion streams tensor by tensor and shows a progress bar (``--quiet`` hides it). ``--dequantize`` turns
a quantized MLX model back into floats with ``mlx_core.convert.dequantize``.
"""

from __future__ import annotations

import argparse

from .errors import CLIError

DTYPE_CHOICES = ("float16", "bfloat16", "float32")
MODE_CHOICES = ("affine", "mxfp4", "nvfp4", "mxfp8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint to MLX (cast, quantize, shard)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("source", help="model directory or Hugging Face repo id")
    p.add_argument("dest", help="output directory (must not exist unless --overwrite)")
    p.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=None, help="cast floating weights (default: keep)"
    )
    p.add_argument("-q", "--quantize", action="store_true", help="quantize the linear/embedding weights")
    p.add_argument("--q-bits", type=int, default=None, help="bits per weight (affine default 4)")
    p.add_argument("--q-group-size", type=int, default=None, help="weights per scale (affine default 64)")
    p.add_argument("--q-mode", choices=MODE_CHOICES, default="affine", help="quantization mode (affine)")
    p.add_argument(
        "--quant-recipe",
        default=None,
        help="mixed-bit recipe, as mlx-lm's --quant-predicate: mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6",
    )
    p.add_argument("--max-shard-size", default="5GB", help="largest output shard, e.g. 2GB or 500MB (5GB)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    p.add_argument("--overwrite", action="store_true", help="replace dest if it exists")
    p.add_argument("--dequantize", action="store_true", help="dequantize a quantized MLX model instead")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlx_core.convert import convert, dequantize

    quant_options = args.q_bits is not None or args.q_group_size is not None or args.q_mode != "affine"
    if args.dequantize:
        if args.quantize or args.quant_recipe or quant_options:
            raise CLIError("--dequantize cannot be combined with quantization options")
        out = dequantize(
            args.source,
            args.dest,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            revision=args.revision,
            overwrite=args.overwrite,
            quiet=args.quiet,
        )
        print(f"wrote {out} (dequantized)")
        return 0
    if quant_options and not (args.quantize or args.quant_recipe):
        raise CLIError("--q-bits, --q-group-size and --q-mode need --quantize (or --quant-recipe)")
    quantize: bool | str = args.quant_recipe or bool(args.quantize)
    out = convert(
        args.source,
        args.dest,
        dtype=args.dtype,
        quantize=quantize,
        q_bits=args.q_bits,
        q_group_size=args.q_group_size,
        q_mode=args.q_mode,
        max_shard_size=args.max_shard_size,
        revision=args.revision,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    what = f", quantized ({quantize if isinstance(quantize, str) else args.q_mode})" if quantize else ""
    print(f"wrote {out}{what}")
    return 0
