"""`dpukit inspect`: what a .dpu program holds: config, tensors, subgraphs, layers."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from dpukit.cli.common import add_config_option
from dpukit.cli.render import fmt_bytes, fmt_shape, print_subgraphs
from dpukit.errors import ProgramError


def add_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("inspect", help="show a program: config, tensors, subgraphs, layers")
    i.add_argument("program", help=".dpu program")
    add_config_option(i)
    i.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.hwconfig import load_config
    from dpukit.compiler.program import FORMAT_VERSION, Program

    program = Program.load(args.program)
    if args.config:
        program.check_config(load_config(args.config))
    c = program.config
    con.print(f"[bold]{args.program}[/]  (dpukit program format {FORMAT_VERSION})")
    con.print(f"  source      {program.source}", highlight=False)
    con.print(
        f"  config      {c['name']}  fingerprint {program.fingerprint}  "
        f"({c['rows']}x{c['cols']} array, {c['clock_mhz']:g} MHz, {c['fpga_part']})",
        highlight=False,
    )
    if args.config:
        con.print(f"  matches     --config {args.config}", highlight=False)
    con.print(
        f"  data window {fmt_bytes(program.dram_size)} ({fmt_bytes(program.const_base)} tensors + "
        f"{fmt_bytes(len(program.const))} constants)",
        highlight=False,
    )
    io = Table(title="graph inputs and outputs", title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind, specs in (("input", program.inputs), ("output", program.outputs)):
        for s in specs:
            io.add_row(kind, s.name, fmt_shape(s.shape), s.dtype)
    con.print(io)
    _check_cpu_models(program)
    print_subgraphs(con, program)
    return 0


def _check_cpu_models(program) -> None:
    """The ONNX CPU subgraphs parse, as the subgraph tables need (Program.load checks the
    numpy ones, and leaves ONNX ones to onnxruntime, which `inspect` does not start)."""
    import onnx
    from google.protobuf.message import DecodeError

    for sg in program.subgraphs:
        if sg.kind == "onnx":
            try:
                onnx.load_model_from_string(sg.payload)
            except DecodeError as exc:
                raise ProgramError(
                    f"{program.label}: CPU subgraph '{sg.name}' is not an ONNX model ({exc}); "
                    "recompile the model"
                ) from None
