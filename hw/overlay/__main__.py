"""Write a board's overlay flow and build it with Vivado when Vivado is on PATH.

    python -m dpukit.hw.overlay pynq-z2|ultra96v2 [--out DIR] [--config NAME|TOML]

Without Vivado it writes the folder, says which Vivado it was written for and how to run it
on another machine, and exits 3. Exit codes: 0 built (timing met), 1 a bad board or config
(one `error:` line) or Vivado failed, 2 timing not met (the .bit and .hwh are written), 3 no
Vivado.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from dpukit.errors import DpuKitError
from dpukit.hw.overlay.boards import BOARDS
from dpukit.hw.overlay.flow import OverlayFlow, run_instructions, write_flow

EXIT_NO_VIVADO = 3


def build(flow: OverlayFlow, vivado: str) -> int:
    """Run the flow in Vivado's batch mode; the exit code of `main`."""
    summary = flow.out / "reports" / "summary.json"
    summary.unlink(missing_ok=True)  # what a previous run left must not pass for this one's
    command = [vivado, "-mode", "batch", "-nojournal", "-log", "vivado.log", "-source"]
    run = subprocess.run([*command, "build.tcl"], cwd=flow.out, check=False)
    log = flow.out / "vivado.log"
    if not summary.is_file():
        print(
            f"error: Vivado stopped (exit code {run.returncode}) before the overlay was "
            f"written; its log is {log}",
            file=sys.stderr,
        )
        return 1
    result = json.loads(summary.read_text())
    timing = f"WNS {result['wns_ns']} ns, WHS {result['whs_ns']} ns"
    if not result["timing_met"]:
        print(
            f"error: timing not met at {result['clock_mhz_actual']} MHz ({timing}): "
            f"{flow.bitstream.name} and {flow.hwh.name} are written but may fail on the "
            f"board; see {summary.parent / 'timing_summary.rpt'}",
            file=sys.stderr,
        )
        return 2
    if run.returncode != 0:
        print(f"error: Vivado exited with code {run.returncode}; its log is {log}", file=sys.stderr)
        return 1
    print(
        f"built {flow.bitstream} and {flow.hwh.name} ({timing} at "
        f"{result['clock_mhz_actual']} MHz); reports in {summary.parent}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dpukit.hw.overlay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("board", help=f"one of: {', '.join(sorted(BOARDS))}")
    parser.add_argument("--out", type=Path, help="the flow's folder (build/overlay/BOARD)")
    parser.add_argument("--config", help="hardware config name or TOML (the board's own)")
    parser.add_argument("--jobs", type=int, default=4, help="parallel Vivado runs (4)")
    parser.add_argument(
        "--generate-only", action="store_true", help="write the folder, do not run Vivado"
    )
    args = parser.parse_args(argv)
    out = args.out or Path("build") / "overlay" / args.board
    try:
        flow = write_flow(args.board, out, args.config, args.jobs)
    except DpuKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write the overlay flow to {out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the {flow.board.name} overlay flow (hardware config {flow.cfg.name}) to {out}")
    if args.generate_only:
        print(run_instructions(flow))
        return 0
    vivado = shutil.which("vivado")
    if vivado is None:
        print(f"Vivado is not on PATH, so nothing was built. {run_instructions(flow)}")
        return EXIT_NO_VIVADO
    return build(flow, vivado)


if __name__ == "__main__":
    sys.exit(main())
