"""`dpukit quantize`: float ONNX -> QDQ ONNX by static post-training quantization."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from dpukit.cli.common import (
    DIGITS_SHAPE,
    UsageError,
    add_input_shape_option,
    input_shapes,
    positive_int,
)
from dpukit.cli.render import fmt_shape

CALIBRATION_BYTES = 2 << 30  # random calibration data held at once: a bound for small hosts


def add_parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quantize", help="float ONNX -> QDQ ONNX (static post-training, int8)")
    q.add_argument("model", help="float ONNX model")
    q.add_argument("-o", "--output", help="output QDQ model (default: MODEL.qdq.onnx)")
    calib = q.add_mutually_exclusive_group()
    calib.add_argument(
        "--calib-digits",
        action="store_true",
        help="calibrate on the digits training images (input [N, 1, 8, 8])",
    )
    calib.add_argument(
        "--calib-random",
        type=positive_int,
        default=32,
        metavar="N",
        help="calibrate on N random uniform [0, 1) samples (default 32)",
    )
    q.add_argument("--per-channel", action="store_true", help="per-channel weight scales")
    q.add_argument("--activation-type", choices=("int8", "uint8"), default="int8")
    add_input_shape_option(q)
    q.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.frontend import set_input_shapes
    from dpukit.quantize import _graph_input, _load, quantize_model

    model, label = _load(args.model)
    input_name, shape = _graph_input(model, label)
    shapes = input_shapes(args.input_shape, [input_name], label)
    if shapes:  # the shape random calibration draws from; quantize_model fixes it too
        input_name, shape = _graph_input(set_input_shapes(model, label, shapes), label)
    if args.calib_digits:
        if len(shape) != 4 or list(shape[1:]) != DIGITS_SHAPE:
            raise UsageError(
                f"{label}: --calib-digits needs an input of shape [N, 1, 8, 8]; "
                f"'{input_name}' is {fmt_shape(['N' if d is None else d for d in shape])}; "
                "use --calib-random N"
            )
        from dpukit.models.digits import load_digits_split

        calib = load_digits_split()[0]
        what = f"{len(calib)} digits training images"
    else:
        if not shape or any(d is None for d in shape[1:]):
            raise UsageError(
                f"{label}: input '{input_name}' has symbolic dims besides the batch "
                f"({fmt_shape(['?' if d is None else d for d in shape])}); random calibration "
                f"needs a static shape: pass --input-shape {input_name}=1x... with its sizes, "
                "or export the model with fixed input dims"
            )
        n = args.calib_random
        size = n * int(np.prod(shape[1:])) * 4
        if size > CALIBRATION_BYTES:
            raise UsageError(
                f"{label}: {n} random samples of shape {fmt_shape([1, *shape[1:]])} take "
                f"{size:,} bytes in float32; calibrate on fewer (--calib-random) or give "
                "the model a smaller input"
            )
        calib = np.random.default_rng(0).random((n, *shape[1:]), dtype=np.float32)
        what = f"{n} random uniform [0, 1) samples of shape {fmt_shape([1, *shape[1:]])}"
    out = Path(args.output) if args.output else _default_qdq_path(Path(args.model))
    start = time.perf_counter()
    with con.status(f"quantizing {label} ({what})"):
        quantize_model(
            args.model,
            out,
            calib,
            per_channel=args.per_channel,
            activation_type=args.activation_type,
            input_shapes=shapes,
        )
    elapsed = time.perf_counter() - start
    import onnx

    nodes = onnx.load(out).graph.node
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes)
    con.print(f"wrote [bold]{out}[/] (QDQ ONNX, {len(nodes)} nodes, {qdq} Q/DQ) in {elapsed:.2f} s")
    granularity = "per-channel" if args.per_channel else "per-tensor"
    con.print(
        f"  calibration: {what}; weights int8 symmetric {granularity}, "
        f"activations {args.activation_type} (MinMax)",
        highlight=False,
    )
    con.print(f"  next: dpukit compile {out}", highlight=False)
    return 0


def _default_qdq_path(model: Path) -> Path:
    return model.with_name(model.name.removesuffix(".onnx") + ".qdq.onnx")
