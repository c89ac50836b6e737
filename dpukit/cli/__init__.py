"""The `dpukit` command line: one module per command, each a few lines over the library API.

A `DpuKitError` ends a command with one red `error: ...` line and exit code 1; usage errors
exit with 2. Every time or activity figure is labelled modeled or measured (render.py).
"""

from __future__ import annotations

import argparse
import os
import sys

# A board's Python 3.10 installs dpukit without the laptop's libraries (pyproject.toml).
if sys.version_info < (3, 11):  # noqa: UP036 (ruff lints as 3.11; this runs on 3.10)
    raise SystemExit(
        "the dpukit command line needs Python >= 3.11; on a board (Python 3.10) run the board "
        "script: python3 -m dpukit.board_scripts.run_images --help"
    )

from rich.console import Console
from rich.text import Text

from dpukit import __version__
from dpukit.cli import (
    calibrate,
    compile,
    configs,
    demo,
    deploy,
    energy,
    flow,
    inspect,
    quantize,
    run,
    sensors,
    verify,
)
from dpukit.errors import DpuKitError

COMMANDS = (
    quantize, compile, run, energy, calibrate, inspect, verify, demo, configs, sensors, deploy,
    flow,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpukit",
        description="Quantized ONNX -> program for the open dpukit systolic DPU -> golden model.",
    )
    p.add_argument("--version", action="version", version=f"dpukit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    # Logs and pipes get 130 columns unless COLUMNS says otherwise (rich's default is 80).
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    con = Console(highlight=False, width=130 if wide else None)
    try:
        return args.func(args, con)
    except DpuKitError as exc:
        _error(" ".join(str(exc).split()) or type(exc).__name__)
        return 1
    except MemoryError as exc:  # a user's input larger than this host holds
        _error(f"out of memory ({' '.join(str(exc).split()) or 'no detail'}); use smaller "
               "or fewer inputs")  # fmt: skip
        return 1
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    """The one red line a failing command prints, on stderr."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        Text(f"error: {message}", style="red")
    )
