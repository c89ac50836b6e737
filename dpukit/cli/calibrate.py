"""`dpukit calibrate`: fit an energy table to measured runs.

Each input is the `--json` of a `dpukit run ... --power SENSORS` on the board: it holds the
program's events per inference (what the energy model counts) and the recorder's measured
dynamic energy per inference (idle baseline subtracted). Runs of programs whose activity
mixes differ determine the energy per event by non-negative least squares
(`compiler.energy.calibrate`); the result is a table `dpukit energy --table` reads.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dpukit.cli.common import UsageError, write_output
from dpukit.cli.render import fmt_pct, fmt_si


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "calibrate",
        help="fit an energy table to measured runs (dpukit run --power ... --json)",
        description="Fit the energy per event (MAC, SRAM read/write, DRAM, logic) to the "
        "measured dynamic energy of several runs, by non-negative least squares, and write "
        "a calibrated table. Measure programs whose activity differs (conv-heavy, FC/DRAM-"
        "heavy, pooling): similar ones cannot separate the entries.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN.json", help="dpukit run --power ... --json")
    c.add_argument(
        "--table",
        metavar="NAME|FILE",
        help="the prior: entries the runs do not exercise keep its values (default: the "
        "table the runs were modeled with)",
    )
    c.add_argument("-o", "--output", required=True, metavar="TABLE.toml")
    c.add_argument("--name", help="the calibrated table's name (default: the file's stem)")
    c.add_argument("--json", metavar="FILE", help="write the fit (values, errors, residuals)")
    c.set_defaults(func=run)


def read_run(path: str) -> tuple[str, dict[str, float], float]:
    """A run's table name, events per inference and measured dynamic energy per inference."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({exc})") from None
    modeled = doc.get("energy_per_image_modeled") if isinstance(doc, dict) else None
    measured = doc.get("energy_measured") if isinstance(doc, dict) else None
    if not isinstance(modeled, dict) or not isinstance(modeled.get("events_per_inference"), dict):
        raise UsageError(f"{path}: not the --json of a `dpukit run` (no events per inference)")
    per = measured.get("per_inference") if isinstance(measured, dict) else None
    dynamic = per.get("dynamic_energy_j") if isinstance(per, dict) else None
    if not _is_number(dynamic):
        why = (per or {}).get("note") if isinstance(per, dict) else None
        raise UsageError(
            f"{path}: no measured dynamic energy per inference "
            f"({why or 'run it with --power SENSORS and an idle phase (--idle-s)'})"
        )
    if doc.get("backend") != "pynq":
        raise UsageError(
            f"{path}: a run on the {doc.get('backend')} backend measured the host that ran it, "
            "not the DPU: calibrate from runs on a board (--backend pynq)"
        )
    events = modeled["events_per_inference"]
    if not all(_is_number(v) for v in events.values()):
        raise UsageError(f"{path}: events per inference must be numbers")
    return str(modeled.get("table", "")), {str(k): float(v) for k, v in events.items()}, dynamic


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def run(args, con: Console) -> int:
    from dpukit.compiler import energy

    runs = [read_run(p) for p in args.runs]
    used = sorted({t for t, _, _ in runs})
    if args.table is None and len(used) != 1:
        raise UsageError(
            f"the runs were modeled with different tables ({', '.join(used)}): give --table"
        )
    prior = energy.load_table(args.table or used[0])
    name = args.name or Path(args.output).stem
    fit = energy.calibrate(prior, [e for _, e, _ in runs], [m for _, _, m in runs], name=name)

    con.print(
        f"calibrated table [bold]{escape(name)}[/]: fitted to {len(runs)} measured runs "
        f"(prior {prior.label})",
        highlight=False,
    )
    table = Table(caption_justify="left")
    for col in ("entry", "unit", "prior", "fitted", "standard error"):
        table.add_column(col, justify="left" if col in ("entry", "unit") else "right")
    for key in energy.ENTRY_UNITS:
        old, new = prior.entries[key], fit.table.entries[key]
        if key in fit.fitted:
            rel = fit.relative_error(key)
            err = f"{fit.std_error[key]:.3g} ({fmt_pct(rel)})" if math.isfinite(rel) else "-"
            table.add_row(key, new.unit, f"{old.value:.4g}", f"{new.value:.4g}", err)
        else:
            table.add_row(key, new.unit, f"{old.value:.4g}", "(prior kept)", "-")
    notes = [
        f"relative rms residual {fmt_pct(fit.relative_rms)}; condition number {fit.condition:.3g}",
        "static power is not fitted (the idle baseline holds it): the prior's is kept",
    ]
    if fit.poorly_determined():
        notes.append(
            f"poorly determined (standard error > 10 %): {', '.join(fit.poorly_determined())}; "
            "measure more runs, or programs whose activity differs more"
        )
    table.caption = "\n".join(notes)
    con.print(table)
    residuals = Table(title="per run: measured vs the calibrated model", title_justify="left")
    for col in ("run", "measured dynamic J/inference", "modeled", "residual"):
        residuals.add_column(col, justify="left" if col == "run" else "right")
    for path, (_, _, m), r in zip(args.runs, runs, fit.residuals_j, strict=True):
        residuals.add_row(path, fmt_si(m, "J"), fmt_si(m - r, "J"), fmt_pct(r / m))
    con.print(residuals)
    write_output(args.output, energy.table_toml(fit.table))
    con.print(f"wrote {args.output}: use it with dpukit energy --table {args.output}")
    if args.json:
        doc = {**fit.as_dict(), "runs": list(args.runs), "prior": prior.name}
        write_output(args.json, json.dumps(doc, indent=2) + "\n")
        con.print(f"wrote {args.json}", highlight=False)
    return 0
