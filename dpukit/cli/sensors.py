"""`dpukit sensors`: the power sensors this machine offers, by the names `--power` takes, each
read once; for each known source that offers none, why (no hwmon, RAPL root-only, no pynq,
no NVIDIA driver, no pyvisa)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dpukit.cli.common import write_output


def add_sysfs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sysfs",
        metavar="DIR",
        help="where sysfs is mounted (default: $DPUKIT_SYSFS, else /sys)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sensors", help="list the power sensors on this machine (measured)")
    add_sysfs_option(s)
    s.add_argument(
        "--visa",
        nargs="?",
        const="",
        metavar="LIBRARY",
        help="also list the SCPI instruments a pyvisa library sees (default library: NI-VISA "
        "or pyvisa-py; e.g. psu.yaml@sim); probes serial and USB ports",
    )
    s.add_argument("--json", metavar="FILE", help="write the list as JSON")
    s.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.host.power import discover, sysfs_root

    root = sysfs_root(args.sysfs)
    offers, status = discover(root, args.visa)
    table = Table(title=f"power sensors, measured (sysfs {root})", title_justify="left")
    for col in ("name (for --power)", "reads", "now", "what"):
        table.add_column(col, justify="right" if col == "now" else "left")
    for o in offers:
        reads = "energy counter" if o.unit == "J" else "power"
        now = "-" if o.reading is None else f"{o.reading:.6g} {o.unit}"
        what = Text(o.description) if o.problem is None else Text(o.problem, style="red")
        table.add_row(Text(o.name), reads, now, what)
    if offers:
        con.print(table)
    else:
        con.print("no power sensors found on this machine", highlight=False)
    for source, line in status.items():
        con.print(f"  {source:6} {line}", highlight=False, markup=False, soft_wrap=True)
    if args.json:
        doc = {
            "sysfs": root,
            "kind": "measured",
            "sensors": [asdict(o) for o in offers],
            "sources": status,
        }
        write_output(args.json, json.dumps(doc, indent=2) + "\n")
        con.print(f"wrote {args.json}", highlight=False)
    return 0
