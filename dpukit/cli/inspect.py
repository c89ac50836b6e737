"""`dpukit inspect`: what a .dpu program holds: config, tensors, subgraphs, layers."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from dpukit.cli.render import fmt_bytes, fmt_shape, print_subgraphs


def add_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("inspect", help="show a program: config, tensors, subgraphs, layers")
    i.add_argument("program", help=".dpu program")
    i.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.program import FORMAT_VERSION, Program

    program = Program.load(args.program)
    c = program.config
    con.print(f"[bold]{args.program}[/]  (dpukit program format {FORMAT_VERSION})")
    con.print(f"  source      {program.source}", highlight=False)
    con.print(
        f"  config      {c['name']}  fingerprint {program.fingerprint}  "
        f"({c['rows']}x{c['cols']} array, {c['clock_mhz']:g} MHz, {c['fpga_part']})",
        highlight=False,
    )
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
    print_subgraphs(con, program)
    return 0
