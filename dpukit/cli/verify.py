"""`dpukit verify`: the DPU against onnxruntime, layer by layer and end to end (verify.py)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from dpukit.cli.common import build_simulator, inputs_for, positive_int, write_output
from dpukit.cli.render import fmt_int, fmt_pct, progress
from dpukit.host.backends import BACKENDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "verify",
        help="check the compiled program against onnxruntime, layer by layer",
        description="Compile a QDQ model (or take its compiled --program), run it, and for "
        "every DPU layer compare its output with onnxruntime (graph optimizations off) fed "
        "the very inputs the layer read: equal, 1 LSB apart at a rounding tie, or different "
        "away from a tie (a bug). End to end, differences must stay within what ties can "
        "explain. Exits 1 when a check finds a bug.",
    )
    v.add_argument("model", help="QDQ ONNX model (from `dpukit quantize`)")
    v.add_argument(
        "--program", metavar="FILE.dpu", help="a program compiled from MODEL (default: compile)"
    )
    v.add_argument(
        "--backend",
        choices=BACKENDS,
        default="golden",
        help="golden: the bit-exact model; rtl: the DPU's RTL in Verilator, also checked "
        "against the golden model bit for bit",
    )
    src = v.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="FILE", help=".npy (one input) or .npz (by input name)")
    src.add_argument("--digits", action="store_true", help="the held-out digits set")
    src.add_argument(
        "--random", type=positive_int, metavar="N", help="N random inputs (default: 1)"
    )
    v.add_argument("--json", metavar="FILE", help="write the report as JSON")
    v.add_argument(
        "--config",
        metavar="NAME|FILE.toml",
        help="hardware config to compile for (default pynq-z2); with --program, checks that "
        "the program was compiled for it",
    )
    v.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.compile import compile_model
    from dpukit.compiler.hwconfig import DEFAULT_CONFIG, load_config
    from dpukit.compiler.program import Program
    from dpukit.verify import VerificationError, verify_model

    if args.program:
        program = Program.load(args.program)
        if args.config:
            program.check_config(load_config(args.config))
    else:
        program = compile_model(args.model, args.config or DEFAULT_CONFIG)
    cfg = program.hwconfig()
    build_simulator(con, args.backend, cfg)
    inputs, _, what = inputs_for(args, program)
    con.print(
        f"verifying [bold]{args.model}[/] on {cfg.name}, {args.backend} backend: {what}",
        highlight=False,
    )
    with progress(con) as bar:
        task = bar.add_task("verify", total=len(next(iter(inputs.values()))))
        report = verify_model(
            args.model,
            inputs,
            program=program,
            backend=args.backend,
            progress=lambda done, _: bar.update(task, completed=done),
        )
    con.print(layer_table(report))
    con.print(output_table(report))
    if args.json:
        write_output(args.json, json.dumps(report.as_dict(), indent=2) + "\n")
        con.print(f"wrote {args.json}", highlight=False)
    bugs = report.bugs
    if bugs:
        more = f" (and {len(bugs) - 1} more: see the tables)" if len(bugs) > 1 else ""
        raise VerificationError(f"{args.model}: {bugs[0]}{more}")
    con.print(summary(report), highlight=False)
    return 0


def layer_table(report) -> Table:
    rtl = report.backend != "golden"
    table = Table(
        title=f"per DPU layer, {report.samples} sample(s): the {report.backend} backend against "
        "onnxruntime fed the same inputs, and end to end",
        title_justify="left",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("kind")
    for col in ("elements", "equal", "1 LSB at a tie", "away from ties"):
        table.add_column(col, justify="right")
    table.add_column("end to end\ndiffer / max LSB", justify="right")
    table.add_column("ties explain\nup to (LSB)", justify="right")
    if rtl:
        table.add_column("RTL != golden", justify="right")
    for c in report.layers:
        row = [
            c.layer,
            c.kind,
            fmt_int(c.elements),
            fmt_int(c.equal),
            fmt_int(c.ties),
            f"[bold red]{fmt_int(c.away)}[/]" if c.away else "0",
            f"{fmt_int(c.e2e_differ)} / {c.e2e_max_lsb}",
            "-" if c.e2e_bound_max is None else str(c.e2e_bound_max),
        ]
        if c.e2e_unexplained:
            row[6] = f"[bold red]{row[6]} ({fmt_int(c.e2e_unexplained)} beyond)[/]"
        if rtl:
            row.append(f"[bold red]{c.rtl_vs_golden_differ}[/]" if c.rtl_vs_golden_differ else "0")
        table.add_row(*row)
    return table


def output_table(report) -> Table:
    table = Table(title="graph outputs, end to end", title_justify="left")
    table.add_column("output")
    for col in ("elements", "equal", "max difference", "ties explain up to", "top-1 agree"):
        table.add_column(col, justify="right")
    for o in report.outputs:
        unit = " LSB" if o.unit == "LSB" else ""
        table.add_row(
            o.name,
            fmt_int(o.elements),
            f"{fmt_int(o.equal)} ({fmt_pct(o.equal / o.elements if o.elements else 1.0)})",
            f"{o.max_diff:g}{unit}",
            "-" if o.bound_max is None else f"{o.bound_max}{unit}",
            _top1(o, report.samples),
        )
    return table


def _top1(o, samples: int) -> str:
    if o.top1_agree is None:
        return "-"
    risk = "" if o.top1_at_risk is None else f" ({o.top1_at_risk} within reach of ties)"
    return f"{o.top1_agree}/{samples}{risk}"


def summary(report) -> str:
    ties = sum(c.ties for c in report.layers)
    elements = sum(c.elements for c in report.layers)
    worst = max((o.max_diff for o in report.outputs if o.unit == "LSB"), default=0)
    return (
        f"verified: every DPU layer equals onnxruntime fed the same inputs, except {ties:,} "
        f"rounding ties of {elements:,} elements (1 LSB each); end to end the outputs differ "
        f"by at most {worst:g} LSB, all within what those ties explain "
        f"({report.seconds:.1f} s)"
    )
