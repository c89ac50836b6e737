"""`dpukit compile`: QDQ ONNX -> a checked .dpu program for one hardware config."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dpukit.cli.common import UsageError
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


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    """`--input-shape [NAME=]DIMS`, repeatable: fixed sizes for inputs with symbolic dims."""
    parser.add_argument(
        "--input-shape",
        action="append",
        type=_input_shape,
        metavar="[NAME=]DIMS",
        help="sizes for an input with symbolic dims, e.g. input=1x3x224x224 (or 1,3,224,224; "
        "NAME may be left out when the model has one input); repeat for several inputs",
    )


def _input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    name, named, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in re.split(r"[x,]", dims))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not [NAME=]DIMS such as input=1x3x224x224"
        ) from None
    return (name if named else None), shape


def input_shapes(
    given: list[tuple[str | None, tuple[int, ...]]] | None, inputs: list[str], model: str
) -> dict[str, tuple[int, ...]]:
    """The --input-shape options by input name; a shape without a name is the only input's."""
    shapes = {}
    for name, dims in given or []:
        if name is None:
            if len(inputs) != 1:
                raise UsageError(
                    f"{model}: --input-shape without a name, but the model has inputs "
                    f"{', '.join(inputs) or '(none)'}: give NAME=DIMS"
                )
            name = inputs[0]
        shapes[name] = dims
    return shapes


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
    names = []
    if any(name is None for name, _ in args.input_shape or []):  # read the model for its input
        from dpukit.compiler.frontend import graph_inputs, read_onnx

        names = [i.name for i in graph_inputs(read_onnx(args.model)[0])]
    shapes = input_shapes(args.input_shape, names, args.model)
    start = time.perf_counter()
    program = compile_model(args.model, cfg, shapes)
    elapsed = time.perf_counter() - start
    out = Path(args.output) if args.output else _default_dpu_path(Path(args.model))
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(out)
    _compile_summary(con, program, out, elapsed)
    return 0
