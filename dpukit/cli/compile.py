"""`dpukit compile`: QDQ ONNX -> a checked .dpu program for one hardware config."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dpukit.cli.common import add_input_shape_option, model_input_shapes, write_output
from dpukit.cli.render import cpu_nodes, fmt_bytes, fmt_int, instr_count
from dpukit.compiler.hwconfig import DEFAULT_CONFIG


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="QDQ ONNX -> .dpu program for a hardware config")
    c.add_argument("model", help="QDQ ONNX model (from `dpukit quantize`)")
    c.add_argument("-o", "--output", help="output program (default: MODEL.dpu)")
    c.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"hardware config name or .toml path (default {DEFAULT_CONFIG}; see `dpukit configs`)",
    )
    add_input_shape_option(c)
    c.add_argument(
        "--board",
        action="store_true",
        help="for a PYNQ board: refuse a CPU op the board's numpy executor lacks (a board has "
        "no onnxruntime), naming it",
    )
    c.add_argument(
        "--preprocess",
        metavar="JSON|FILE.json",
        help="the image preprocessing the board scripts apply, stored with the program, e.g. "
        '\'{"size": [224, 224], "color": "rgb", "scale": 0.00392, "mean": [0.485, 0.456, '
        '0.406], "std": [0.229, 0.224, 0.225], "labels": ["cat", "dog"]}\' '
        "(keys: docs/board_scripts.md)",
    )
    c.set_defaults(func=run)


def _preprocess(text: str | None) -> dict | None:
    """--preprocess: JSON given inline, or the path of a JSON file."""
    import json

    from dpukit.cli.common import UsageError

    if text is None:
        return None
    source = "--preprocess"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--preprocess {path}: cannot read it ({exc})") from None
        source = str(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source}: not valid JSON ({exc})") from None


def _default_dpu_path(model: Path) -> Path:
    stem = model.name.removesuffix(".onnx").removesuffix(".qdq")
    return model.with_name(stem + ".dpu")


def _compile_summary(con: Console, program, out: Path, elapsed: float) -> None:
    table = Table(title=f"{out}", title_justify="left")
    for col, just in (
        ("#", "right"),
        ("subgraph", "left"),
        ("device", "left"),
        ("layers / nodes", "right"),
        ("instructions", "right"),
        ("inputs -> outputs", "left"),
    ):
        table.add_column(col, justify=just)
    total_instr = 0
    for k, sg in enumerate(program.subgraphs):
        if sg.device == "DPU":
            count = f"{len(sg.layers)} layers"
            instr = instr_count(sg)
            total_instr += instr
            instr_text = fmt_int(instr)
        else:
            count = f"{len(cpu_nodes(sg))} node(s)"
            instr_text = "-"
        table.add_row(
            str(k), sg.name, sg.device, count, instr_text,
            f"{', '.join(sg.inputs)} -> {', '.join(sg.outputs)}",
        )  # fmt: skip
    con.print(table)
    tensors = program.const_base
    con.print(
        f"compiled for {program.config['name']} (fingerprint {program.fingerprint}) "
        f"in {elapsed:.2f} s\n{total_instr:,} DPU instructions; data window "
        f"{fmt_bytes(program.dram_size)} ({fmt_bytes(tensors)} tensors + "
        f"{fmt_bytes(len(program.const))} constants)",
        highlight=False,
    )
    for sg in program.subgraphs:
        if sg.kind == "onnx":  # a board has no onnxruntime
            con.print(
                f"note: {sg.name} runs on onnxruntime, so on a laptop only: the board's numpy "
                f"executor lacks {'; '.join(sg.unsupported)} (`--board` refuses such a model)",
                highlight=False,
            )


def run(args, con: Console) -> int:
    from dpukit.compiler.compile import compile_model
    from dpukit.compiler.hwconfig import load_config

    cfg = load_config(args.config)
    shapes = model_input_shapes(args.input_shape, args.model)
    start = time.perf_counter()
    preprocess = _preprocess(args.preprocess)
    program = compile_model(args.model, cfg, shapes, preprocess=preprocess, board=args.board)
    elapsed = time.perf_counter() - start
    out = Path(args.output) if args.output else _default_dpu_path(Path(args.model))
    write_output(out, program.to_bytes())
    _compile_summary(con, program, out, elapsed)
    return 0
