"""`dpukit verify`: the DPU against onnxruntime, layer by layer and end to end (verify.py)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from dpukit.cli.common import (
    add_input_options,
    add_input_shape_option,
    build_simulator,
    inputs_for,
    model_input_shapes,
    write_output,
)
from dpukit.cli.render import fmt_int, fmt_pct, progress


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
        choices=("golden", "rtl"),  # verify needs onnxruntime: a laptop's, not a board's
        default="golden",
        help="golden: the bit-exact model; rtl: the DPU's RTL in Verilator, also checked "
        "against the golden model bit for bit",
    )
    add_input_options(v)
    v.add_argument("--json", metavar="FILE", help="write the report as JSON")
    v.add_argument(
        "--config",
        metavar="NAME|FILE.toml",
        help="hardware config to compile for (default pynq-z2); with --program, checks that "
        "the program was compiled for it",
    )
    add_input_shape_option(v)
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
        shapes = model_input_shapes(args.input_shape, args.model)
        program = compile_model(args.model, args.config or DEFAULT_CONFIG, shapes)
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
        title=f"per layer, {report.samples} sample(s): the {report.backend} backend against "
        "onnxruntime fed the same inputs, and end to end",
        title_justify="left",
        caption="1 LSB at a tie: the exact value is x.5, which float32 breaks either way. "
        "float32 off: the program rounds the exact value; onnxruntime's float32 sum did not. "
        "Away: a bug. CPU: a layer the host computes between DPU subgraphs.",
        caption_justify="left",
    )
    table.add_column("layer", no_wrap=True)
    table.add_column("device\nkind")
    for col in ("elements", "equal", "1 LSB at\na tie", "float32\noff", "away"):
        table.add_column(col, justify="right")
    table.add_column("end to end\ndiffer / max LSB", justify="right")
    table.add_column("ties explain\nup to (LSB)", justify="right")
    if rtl:
        table.add_column("RTL !=\ngolden", justify="right")
    for c in report.layers:
        row = [
            c.layer,
            f"{c.device} {c.kind}",
            fmt_int(c.elements),
            fmt_int(c.equal),
            fmt_int(c.ties),
            fmt_int(c.float32_off),
            f"[bold red]{fmt_int(c.away)}[/]" if c.away else "0",
            f"{fmt_int(c.e2e_differ)} / {c.e2e_max_lsb}",
            "no bound" if c.e2e_bound_max is None else str(c.e2e_bound_max),
        ]
        if c.e2e_unexplained:
            row[7] = f"[bold red]{row[7]} ({fmt_int(c.e2e_unexplained)} beyond)[/]"
        if rtl:
            differ = c.rtl_vs_golden_differ
            row.append("-" if differ is None else f"[bold red]{differ}[/]" if differ else "0")
        table.add_row(*row)
    return table


def output_table(report) -> Table:
    table = Table(title="graph outputs, end to end", title_justify="left")
    table.add_column("output")
    for col in ("elements", "equal", "max difference", "ties explain up to", "top-1 agree"):
        table.add_column(col, justify="right")
    for o in report.outputs:
        unit = " LSB" if o.unit == "LSB" else " (float)"
        table.add_row(
            o.name,
            fmt_int(o.elements),
            f"{fmt_int(o.equal)} ({fmt_pct(o.equal / o.elements if o.elements else 1.0)})",
            f"{o.max_diff:g}{unit}",
            "no bound" if o.bound_max is None else f"{o.bound_max} LSB",
            _top1(o, report.samples),
        )
    return table


def _top1(o, samples: int) -> str:
    if o.top1_agree is None:
        return "-"
    risk = "" if o.top1_at_risk is None else f" ({o.top1_at_risk} within reach of ties)"
    return f"{o.top1_agree}/{samples}{risk}"


def summary(report) -> str:
    """What was verified, and what was not."""
    dpu = [c for c in report.layers if c.device == "DPU"]
    ties = sum(c.ties for c in dpu)
    off = sum(c.float32_off for c in report.layers)
    lines = [
        f"verified: every checked layer equals onnxruntime fed the same inputs, except "
        f"{ties:,} rounding ties (1 LSB each) in {sum(c.elements for c in dpu):,} DPU layer "
        f"outputs" + (f" and {off:,} elements where onnxruntime's float32 is off" if off else "")
    ]
    bounded = [o for o in report.outputs if o.bound_max is not None]
    if bounded:
        worst = max(o.max_diff for o in bounded)
        lines.append(
            f"end to end the outputs differ by at most {worst:g} LSB, within what ties explain"
        )
    lines += [f"not checked: {what}" for what in report.unchecked]
    lines += [
        f"not checked end to end: layer {c.layer} ({c.kind}): no bound for its ops"
        for c in report.layers
        if c.e2e_bound_max is None
    ]
    lines.append(f"({report.seconds:.1f} s)")
    return "\n".join(lines)
