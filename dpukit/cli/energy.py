"""`dpukit energy`: the modeled energy of one inference, per layer and in total.

A .dpu program gets the DPU-level model (its activity on its hardware config x the table of
the config's part); an ONNX model, float or QDQ, gets seed 001's network-level model.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from dpukit.cli.common import (
    UsageError,
    add_input_shape_option,
    model_input_shapes,
    write_output,
)
from dpukit.cli.render import energy_table, fmt_si
from dpukit.compiler.energy import available_tables


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "energy",
        help="modeled energy of one inference: per layer, split into MAC, SRAM, DRAM, static",
        description="Modeled energy of one inference. A .dpu program: the DPU's activity "
        "(cycle model) x the energy per event of its part (default: the config's FPGA part's "
        "table). An .onnx model: seed 001's network-level model (default table horowitz45).",
    )
    e.add_argument("source", metavar="PROGRAM.dpu|MODEL.onnx")
    e.add_argument(
        "--table",
        metavar="NAME|FILE",
        help=f"energy table: {', '.join(available_tables())}, or a .toml file (e.g. a "
        "calibrated one)",
    )
    e.add_argument(
        "--weight-bits",
        type=int,
        metavar="N",
        help="model weights of N bits (2, 4, 6, 8, 16) packed whole into memory words "
        "(seed 002's bit-packing); MAC energy unchanged",
    )
    add_input_shape_option(e)
    e.add_argument("--json", metavar="FILE", help="write the numbers (joules) as JSON")
    e.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler import energy

    source = str(args.source)
    if source.endswith(".dpu"):
        if args.input_shape:
            raise UsageError("--input-shape is for an ONNX model; a program's shapes are fixed")
        report = energy.program_energy(source, args.table, weight_bits=args.weight_bits)
    elif source.endswith(".onnx"):
        shapes = model_input_shapes(args.input_shape, source)
        report = energy.network_energy(
            source,
            args.table or energy.DEFAULT_TABLE,
            weight_bits=args.weight_bits,
            input_shapes=shapes,
        )
    else:
        raise UsageError(f"{source}: give a .dpu program or an .onnx model")
    level = "DPU level" if report.level == "dpu" else "network level (seed 001)"
    bits = f", {args.weight_bits}-bit weights bit-packed" if args.weight_bits else ""
    con.print(
        energy_table(
            report,
            f"modeled energy of one inference, {level}, table {report.table.label}{bits}",
        )
    )
    line = f"modeled energy per inference: [bold]{fmt_si(report.total.total, 'J')}[/]"
    if report.seconds:
        line += (
            f" over {fmt_si(report.seconds, 's')} of DPU time (cycle model): "
            f"{fmt_si(report.total.total / report.seconds, 'W')} average"
        )
    con.print(line, highlight=False)
    if args.json:
        write_output(args.json, json.dumps(report.as_dict(), indent=2) + "\n")
        con.print(f"wrote {args.json}", highlight=False)
    return 0
