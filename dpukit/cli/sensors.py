"""`dpukit sensors`: the power sensors this machine offers, by the names `--power` takes, each
read once; for each known source that offers none, why (no hwmon, RAPL root-only, no pynq,
no NVIDIA driver, no pyvisa). Also the `--power` options of `dpukit run`: record while the
run runs (idle baseline, warm-up batch, inference) and print energy per inference, measured."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dpukit.cli.common import UsageError, write_output
from dpukit.cli.render import fmt_si
from dpukit.errors import DpuKitError
from dpukit.options import add_sysfs_option
from dpukit.outfiles import why_unwritable


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


# ---- `dpukit run --power ...` -------------------------------------------------------------


@contextlib.contextmanager
def power_recording(args, con: Console, warm_up: Callable[[], object]) -> Iterator:
    """With --power: record an idle baseline (--idle-s), a warm-up batch, then the inference
    phase the block runs in; the recorder (stopped on leaving) or None."""
    if args.power_trace and not args.power:
        raise UsageError("--power-trace needs --power SENSOR[,SENSOR]")
    if args.power_trace:  # refused now, not after the run it would be the trace of
        trace = Path(args.power_trace)
        if trace.suffix.lower() == ".png":
            raise UsageError(
                f"--power-trace {trace}: give the CSV's name; the PNG is written beside it"
            )
        why = why_unwritable(trace)
        if why:
            raise UsageError(f"--power-trace {trace}: not a file path that can be written ({why})")
    if not args.power:
        yield None
        return
    from dpukit.host.power import recording_sensors

    def wait_idle(seconds: float) -> None:
        with con.status(f"recording {seconds:g} s of idle power (the baseline)"):
            time.sleep(seconds)

    with recording_sensors(args.power, args.sysfs, args.idle_s, warm_up, wait_idle) as rec:
        yield rec


def report_power(con: Console, args, rec, n: int) -> dict | None:
    """Print energy per inference, measured, and write the trace (CSV and PNG) if asked;
    the summary for --json (None without --power)."""
    if rec is None:
        return None
    from dpukit.host.power import csv_text, png_bytes

    s = rec.trace.summary(inferences=n)
    per = s["per_inference"]
    what = "" if args.backend == "pynq" else f", of this host running the {args.backend} model"
    head = f"energy per inference, {s['label']}{what}: "
    if per is None or not per["complete"]:
        con.print(head + f"[yellow]none: {per['note'] if per else 'no inference phase'}[/]")
    else:
        dyn = (
            f"{_pm(per['dynamic_energy_j'], per['dynamic_uncertainty_j'], 'J')} above idle "
            f"({fmt_si(per['idle_power_w'], 'W')})"
            if "dynamic_energy_j" in per
            else per["note"]
        )
        con.print(
            f"{head}[bold]{_pm(per['energy_j'], per['uncertainty_j'], 'J')}[/] total, {dyn}; "
            f"{_pm(per['avg_power_w'], per['avg_power_uncertainty_w'], 'W')} average over "
            f"{per['duration_s']:.3g} s",
            highlight=False,
        )
    for w in s["warnings"]:
        con.print(Text(f"warning: {w}", style="yellow"))
    if args.power_trace:
        csv_path = Path(args.power_trace)
        png = csv_path.with_suffix(".png")
        try:
            write_output(csv_path, csv_text(rec.trace))
            write_output(png, png_bytes(rec.trace))
        except DpuKitError as exc:  # the run's figures above and in --json are kept
            con.print(Text(f"warning: the power trace was not written: {exc}", style="yellow"))
        else:
            con.print(f"wrote {csv_path} and {png}", highlight=False)
    return s


def _pm(value: float, sigma: float, unit: str) -> str:
    if abs(value) < sigma * 1e-3:  # digits far below the uncertainty say nothing (-2e-19 J)
        value = 0.0
    return f"{fmt_si(value, unit)} ± {fmt_si(sigma, unit)}"
