"""Rendering for the CLI: number formats and the tables several commands print.

Every time or activity figure carries its kind: modeled (the golden model's cycle model) or
measured (the RTL's counters), so a user never mistakes one for the other.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dpukit.host.backends import CYCLES_KIND

OPCODE_ORDER = ("LOAD", "GEMM", "ALU", "POST", "STORE", "END")
BUFFERS = ("inp", "wgt", "acc", "out", "par")
MODELED = CYCLES_KIND["golden"]
MEASURED_RTL = CYCLES_KIND["rtl"]


# -- formatting helpers ----------------------------------------------------------------------


def fmt_int(n: float) -> str:
    return f"{int(round(n)):,}"


def fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n):,} B"
    if n < 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / (1024 * 1024):,.2f} MiB"


def fmt_pct(x: float) -> str:
    return f"{100 * x:.1f} %"


_SI = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))


def fmt_si(x: float, unit: str) -> str:
    """A number with an SI prefix: 2.875e-4 J -> '287.5 µJ'."""
    if x == 0 or not np.isfinite(x):
        return f"{x:g} {unit}"
    for k, prefix in _SI:
        if abs(x) >= k:
            return f"{x / k:.4g} {prefix}{unit}"
    return f"{x / 1e-15:.4g} f{unit}"


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def progress(con: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=con,
        transient=True,
        disable=not con.is_terminal,  # no bar in logs and pipes
    )


def cpu_nodes(sg) -> list:
    from dpukit.host.cpu import cpu_graph_nodes

    return cpu_graph_nodes(sg)


def instr_count(sg) -> int:
    from dpukit.compiler.isa import INSTR_BYTES

    return len(sg.payload) // INSTR_BYTES


def opcodes(layers: list[dict]) -> list[str]:
    seen = {op for layer in layers for op in layer.get("instructions", {})}
    return [op for op in OPCODE_ORDER if op in seen] + sorted(seen - set(OPCODE_ORDER))


# -- tables shared by several commands -------------------------------------------------------


def layer_table(sg, title: str | None = None) -> Table:
    """One row per DPU layer: MACs, instructions per opcode, buffer use, weights, tile."""
    ops = opcodes(sg.layers)
    table = Table(title=title, title_justify="left", show_footer=True)
    table.add_column("layer", footer="total", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    macs = fmt_int(sum(x["macs"] for x in sg.layers))
    table.add_column("MACs", justify="right", footer=macs, no_wrap=True)
    for op in ops:
        total = sum(x["instructions"].get(op, 0) for x in sg.layers)
        table.add_column(op, justify="right", footer=fmt_int(total), no_wrap=True)
    table.add_column("entries used\ninp/wgt/acc/out/par", justify="right", no_wrap=True)
    weights = fmt_bytes(sum(x["weight_bytes"] for x in sg.layers))
    table.add_column("weights", justify="right", footer=weights, no_wrap=True)
    table.add_column("tile")
    for layer in sg.layers:
        use = layer.get("buffer_use") or {}
        table.add_row(
            layer["name"],
            layer["kind"],
            fmt_int(layer["macs"]),
            *(fmt_int(layer["instructions"].get(op, 0)) for op in ops),
            "/".join(str(use.get(b, 0)) for b in BUFFERS) if use else "-",
            fmt_bytes(layer["weight_bytes"]),
            layer["tile"],
        )
    return table


def print_subgraphs(con: Console, program) -> None:
    for k, sg in enumerate(program.subgraphs):
        con.print()
        con.print(
            f"[bold]subgraph {k}[/] {sg.name}  device [bold]{sg.device}[/]   "
            f"inputs {', '.join(sg.inputs)}  ->  outputs {', '.join(sg.outputs)}",
            markup=True,
            highlight=False,
        )
        if sg.device == "DPU":
            con.print(f"  {instr_count(sg):,} instructions ({fmt_bytes(len(sg.payload))})")
            con.print(layer_table(sg))
        else:
            nodes = cpu_nodes(sg)
            ops = ", ".join(f"{n.op_type} ({n.name})" for n in nodes)
            runs_on = "numpy executor" if sg.kind == "numpy" else "onnxruntime"
            con.print(f"  host CPU ({runs_on}), {len(nodes)} node(s): {ops}")


def activity_table(act, images: int, cfg, model_macs: int, title: str) -> Table:
    """Totals and per-image numbers of a run's Activity, labelled as modeled."""
    per = 1 / max(images, 1)
    cycles_img = act.cycles * per
    latency_ms = cycles_img / (cfg.clock_mhz * 1e3)
    util = act.mac_cycles / act.cycles if act.cycles else 0.0
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("total", justify="right")
    table.add_column("per image", justify="right")
    table.add_row("cycles", fmt_int(act.cycles), fmt_int(cycles_img))
    table.add_row(
        f"latency at {cfg.clock_mhz:g} MHz, {MODELED}",
        f"{latency_ms * images:.3f} ms",
        f"{latency_ms:.4f} ms",
    )
    table.add_row("MACs of the model's layers", fmt_int(model_macs * images), fmt_int(model_macs))
    table.add_row(
        "MACs issued by the array (incl. padding)", fmt_int(act.macs), fmt_int(act.macs * per)
    )
    table.add_row("PE utilization (mac_cycles / cycles)", fmt_pct(util), fmt_pct(util))
    table.add_row(
        "DRAM bytes read", fmt_int(act.dram_read_bytes), fmt_int(act.dram_read_bytes * per)
    )
    table.add_row(
        "DRAM bytes written", fmt_int(act.dram_write_bytes), fmt_int(act.dram_write_bytes * per)
    )
    for b in BUFFERS:
        for what, d in (("reads", act.buffer_reads), ("writes", act.buffer_writes)):
            if b in d:
                table.add_row(
                    f"{b.upper()} buffer {what} (entries)", fmt_int(d[b]), fmt_int(d[b] * per)
                )
    if act.instructions:
        ops = [op for op in OPCODE_ORDER if op in act.instructions]
        ops += sorted(set(act.instructions) - set(OPCODE_ORDER))
        total = sum(act.instructions.values())
        table.add_row("instructions executed", fmt_int(total), fmt_int(total * per))
        table.add_row(
            f"  {'/'.join(ops)}",
            "/".join(fmt_int(act.instructions[op]) for op in ops),
            "/".join(fmt_int(act.instructions[op] * per) for op in ops),
        )
    return table


def subgraph_activity_table(program, per_subgraph: list, title: str) -> Table:
    """Per-DPU-subgraph activity of one image (the runner reports a batch's first image)."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("DPU subgraph", no_wrap=True)
    for col in ("cycles", "array MACs", "PE util.", "DRAM read", "DRAM written", "instr."):
        table.add_column(col, justify="right")
    table.add_column("busy cycles\nload/compute/store", justify="right")
    dpu = [sg for sg in program.subgraphs if sg.device == "DPU"]
    for sg, act in zip(dpu, per_subgraph, strict=False):
        busy = "/".join(fmt_int(act.busy.get(e, 0)) for e in ("load", "compute", "store"))
        table.add_row(
            sg.name,
            fmt_int(act.cycles),
            fmt_int(act.macs),
            fmt_pct(act.mac_cycles / act.cycles if act.cycles else 0.0),
            fmt_bytes(act.dram_read_bytes),
            fmt_bytes(act.dram_write_bytes),
            fmt_int(sum(act.instructions.values())),
            busy,
        )
    cpu = [sg.name for sg in program.subgraphs if sg.device == "CPU"]
    if cpu:
        table.caption = f"CPU subgraphs ({', '.join(cpu)}) run on the host and are not modeled"
    return table


def layer_activity_table(per_layer: list, title: str) -> Table:
    """What the DPU did for each layer of one image (Runner.layer_activity)."""
    table = Table(title=title, title_justify="left")
    table.add_column("layer", no_wrap=True)
    table.add_column("kind")
    for col in ("cycles", "layer MACs", "PE util.", "DRAM read", "DRAM written"):
        table.add_column(col, justify="right")
    table.add_column("buffer reads\ninp/wgt/acc/out/par", justify="right")
    table.add_column("buffer writes\ninp/wgt/acc/out/par", justify="right")
    for la in per_layer:
        act = la.activity
        table.add_row(
            la.layer,
            la.kind,
            fmt_int(act.cycles),
            fmt_int(la.macs),
            fmt_pct(act.mac_cycles / act.cycles if act.cycles else 0.0),
            fmt_bytes(act.dram_read_bytes),
            fmt_bytes(act.dram_write_bytes),
            "/".join(fmt_int(v) for v in act.buffer_reads.values()),
            "/".join(fmt_int(v) for v in act.buffer_writes.values()),
        )
    return table


def model_macs(program) -> int:
    return sum(layer["macs"] for sg in program.subgraphs for layer in sg.layers)


def outputs_table(outputs: dict[str, np.ndarray], show: int = 10) -> Table:
    table = Table(title="outputs", title_justify="left")
    for col in ("name", "shape", "dtype", "min", "max", f"argmax (first {show})"):
        table.add_column(col)
    for name, v in outputs.items():
        arg = "-"
        if v.ndim == 2:
            top = v.argmax(axis=1)
            arg = " ".join(str(int(a)) for a in top[:show]) + (" ..." if len(top) > show else "")
        table.add_row(
            name, fmt_shape(v.shape), str(v.dtype), f"{v.min():.4g}", f"{v.max():.4g}", arg
        )
    return table


ENERGY_COLUMNS = (
    ("mac", "MAC"),
    ("sram_weights", "SRAM\nweights"),
    ("sram_activations", "SRAM\nactivations"),
    ("dram", "DRAM"),
    ("logic", "logic"),
    ("static", "static"),
)


def energy_table(report, title: str) -> Table:
    """Per-layer and total energy of one inference (compiler.energy.EnergyReport)."""
    table = Table(title=title, title_justify="left", show_footer=True, caption_justify="left")
    table.add_column("layer", footer="total")
    table.add_column("kind")
    macs = fmt_int(sum(la.macs for la in report.layers))
    table.add_column("MACs", justify="right", footer=macs, no_wrap=True)
    # Columns every row leaves at zero (no static in a technology table) are left out.
    shown = [(c, h) for c, h in ENERGY_COLUMNS if getattr(report.total, c) > 0]
    for c, head in shown:
        footer = fmt_si(getattr(report.total, c), "J")
        table.add_column(head, justify="right", footer=footer, no_wrap=True)
    table.add_column("total", justify="right", footer=fmt_si(report.total.total, "J"), no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    grand = report.total.total or 1.0
    for la in report.layers:
        table.add_row(
            la.name,
            la.kind,
            fmt_int(la.macs) if la.macs else "-",
            *(fmt_si(getattr(la.energy, c), "J") for c, _ in shown),
            fmt_si(la.energy.total, "J"),
            fmt_pct(la.energy.total / grand),
        )
    table.caption = "\n".join(report.notes)
    return table


def activity_json(act) -> dict:
    return asdict(act)
