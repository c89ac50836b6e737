"""Command-line option types and groups shared by the `dpukit` commands and the board scripts
(which run on a board's Python without rich, so nothing here imports it)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in [0, 3600] s, not {value}")
    return value


def add_sysfs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sysfs",
        metavar="DIR",
        help="where sysfs is mounted (default: $DPUKIT_SYSFS, else /sys)",
    )


def add_power_options(
    parser: argparse.ArgumentParser,
    *,
    plot: bool = True,
    trace: bool = True,
    power_help: str = "record these sensors during the run (100 Hz) and print energy per inference",
    idle_help: str = "idle baseline recorded before the run, for dynamic energy (default 1 s)",
):
    """--power, --power-trace (with `trace`), --idle-s and --sysfs, in their group (returned,
    for a command's own power options); `plot`: the trace gets a PNG beside it."""
    g = parser.add_argument_group("power, measured (`dpukit sensors` lists the sensors)")
    g.add_argument("--power", metavar="SENSOR[,SENSOR]", help=power_help)
    if trace:
        g.add_argument(
            "--power-trace",
            metavar="FILE.csv",
            help="write the trace (and FILE.png)" if plot else "write the trace",
        )
    g.add_argument("--idle-s", type=seconds, default=1.0, metavar="S", help=idle_help)
    add_sysfs_option(g)
    return g
