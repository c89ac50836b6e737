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
    c.set_defaults(func=run)


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


def run(args, con: Console) -> int:
    from dpukit.compiler.compile import compile_model
    from dpukit.compiler.hwconfig import load_config

    cfg = load_config(args.config)
    shapes = model_input_shapes(args.input_shape, args.model)
    start = time.perf_counter()
    program = compile_model(args.model, cfg, shapes)
    elapsed = time.perf_counter() - start
    out = Path(args.output) if args.output else _default_dpu_path(Path(args.model))
    write_output(out, program.to_bytes())
    _compile_summary(con, program, out, elapsed)
    return 0
