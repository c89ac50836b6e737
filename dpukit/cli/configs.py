"""`dpukit configs`: the shipped hardware configs side by side."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from dpukit.cli.render import BUFFERS, fmt_bytes
from dpukit.compiler.hwconfig import DEFAULT_CONFIG


def add_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("configs", help="list the shipped hardware configs")
    g.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.hwconfig import available_configs, config_dir, load_config

    configs = [load_config(name) for name in available_configs()]
    table = Table(title=f"hardware configs shipped in {config_dir()}", title_justify="left")
    table.add_column("")
    for c in configs:
        table.add_column(f"{c.name} (default)" if c.name == DEFAULT_CONFIG else c.name)

    def row(label: str, fn) -> None:
        table.add_row(label, *(fn(c) for c in configs))

    row("FPGA part", lambda c: c.fpga_part)
    row("clock", lambda c: f"{c.clock_mhz:g} MHz")
    row("systolic array", lambda c: f"{c.rows} x {c.cols} ({c.peak_macs_per_cycle} MACs/cycle)")
    row("precision", lambda c: f"int{c.operand_bits} x int{c.operand_bits} -> "
        f"int{c.accumulator_bits}")  # fmt: skip
    for b in BUFFERS:
        row(
            f"{b.upper()} buffer",
            lambda c, b=b: (
                f"{fmt_bytes(getattr(c, f'{b}_entries') * getattr(c, f'{b}_entry_bytes'))}"
                f" ({getattr(c, f'{b}_entries'):,} x {getattr(c, f'{b}_entry_bytes')} B)"
            ),
        )
    row("AXI data bus", lambda c: f"{c.axi_data_bits} bit, bursts of {c.max_burst_beats}")
    row("DRAM latency (modeled)", lambda c: f"{c.dram_latency_cycles} cycles")
    row("queue depth", lambda c: str(c.queue_depth))
    row("fingerprint", lambda c: c.fingerprint)
    con.print(table)
    return 0
