"""Whole programs on the RTL at Verilator speed: build and run sim/harness/dpu_harness.cpp.

The harness owns the clock, the DRAM model and the register driver in C++; Python only
writes the DRAM image, reads back the DRAM and the registers. One build per hardware
config and RTL version, cached under sim_build/ (several pytest workers share it through a
file lock).

    result = run_program(cfg, stream, dram)      # dram is updated in place
    result.registers["CYCLES"], result.cycles, result.wall_s
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import INSTR_BYTES
from dpukit.errors import ExecutionError
from dpukit.host import regmap
from dpukit.hw.params import rtl_files, top_parameters
from dpukit.sim.verilator_env import verilator_bin, verilator_env

HARNESS_CPP = Path(__file__).resolve().parent / "harness" / "dpu_harness.cpp"
BUILD = Path(__file__).resolve().parents[1] / "sim_build"
PAGE = 4096
# C++ optimization of the model: -O3 on its per-cycle code gives about 6 % more simulated
# cycles per second than -O2 (bench/rtl.py, pynq-z2), for a few more seconds of build
MAKE_OPT = "OPT_FAST=-O3 OPT_SLOW=-O1 OPT_GLOBAL=-O2"
CXX_OPT = "-O3"


@dataclass
class HarnessResult:
    registers: dict[str, int]  # every register of the map; counters as full 64-bit values
    cycles: int  # clock cycles from the start write to the done interrupt
    wall_s: float  # wall time of the simulated run (excludes build, image I/O)
    timed_out: bool

    @property
    def error_code(self) -> regmap.ErrorCode:
        return regmap.ErrorCode(self.registers["ERROR_CODE"])

    @property
    def error(self) -> bool:
        return bool(self.registers["STATUS"] & regmap.register("STATUS").field("error").mask)


def _defines(cfg: HwConfig) -> list[str]:
    ctrl = regmap.register("CTRL")
    return [
        f"-DDPU_AXI_DATA_BITS={cfg.axi_data_bits}",
        f"-DDPU_CTRL_OFFSET={ctrl.offset}",
        f"-DDPU_CTRL_START={ctrl.field('start').mask}",
        f"-DDPU_CTRL_IRQ_ENABLE={ctrl.field('irq_enable').mask}",
        f"-DDPU_LAST_REG_OFFSET={max(r.offset for r in regmap.REGISTERS)}",
    ]


def build(cfg: HwConfig) -> Path:
    """The harness executable for `cfg`, built on first use (a few minutes for 16x16)."""
    params = top_parameters(cfg)
    sources = rtl_files()
    digest = hashlib.sha256()
    for p in [*sources, HARNESS_CPP]:
        digest.update(p.name.encode() + p.read_bytes())
    digest.update(repr(sorted(params.items())).encode())
    digest.update(verilator_bin().resolve().as_posix().encode())
    digest.update(f"{MAKE_OPT} {CXX_OPT}".encode())
    out_dir = BUILD / f"harness_{cfg.name}_{digest.hexdigest()[:12]}"
    exe = out_dir / "dpu_harness"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists():
            return exe
        env = verilator_env()
        env["MAKEFLAGS"] += " " + MAKE_OPT
        cmd = [
            str(verilator_bin()),
            "--cc",
            "--exe",
            "--build",
            "--build-jobs",
            "2",
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "--noassert",
            "-Wno-fatal",
            "-Wno-lint",
            "-Wno-style",
            "--top-module",
            "dpu_top",
            "--Mdir",
            str(out_dir / "obj"),
            "-o",
            str(exe),
            *(f"-G{k}={v}" for k, v in params.items()),
            "-CFLAGS",
            " ".join([CXX_OPT, *_defines(cfg)]),
            *map(str, sources),
            str(HARNESS_CPP),
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not exe.exists():
            log = (res.stdout + res.stderr)[-4000:]
            raise ExecutionError(f"building the RTL harness for {cfg.name} failed:\n{log}")
    return exe


def run_program(
    cfg: HwConfig,
    stream: bytes,
    dram: np.ndarray,
    *,
    max_cycles: int = 50_000_000,
    stall_pct: int = 0,
    seed: int = 1,
    latency: int | None = None,
    registers: dict[str, int] | None = None,
) -> HarnessResult:
    """Run one instruction stream on the RTL over `dram` (its data window; updated in place).

    The harness DRAM holds the instructions at address 0 and the data window at the next
    4 KiB boundary, so every run also checks that programs are relocatable. `registers`
    overrides the register values written before the start (tests of faults: the harness
    DRAM ends one page after the window and answers SLVERR beyond)."""
    exe = build(cfg)
    if len(stream) % INSTR_BYTES:
        raise ExecutionError(f"instruction stream of {len(stream)} bytes is not whole instructions")
    data_base = -(-max(len(stream), 1) // PAGE) * PAGE
    image = np.zeros(data_base + dram.size + PAGE, np.uint8)  # a page of slack past the window
    image[: len(stream)] = np.frombuffer(stream, np.uint8)
    image[data_base : data_base + dram.size] = dram
    writes = {
        "INSTR_BASE_LO": 0,
        "INSTR_BASE_HI": 0,
        "INSTR_COUNT": len(stream) // INSTR_BYTES,
        "DATA_BASE_LO": data_base,
        "DATA_BASE_HI": 0,
        "DATA_LIMIT": dram.size,
    } | dict(registers or {})
    with tempfile.TemporaryDirectory(prefix="dpu_harness_") as tmp:
        mem_in, mem_out = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        image.tofile(mem_in)
        args = [
            str(exe),
            str(mem_in),
            str(mem_out),
            str(cfg.dram_latency_cycles if latency is None else latency),
            str(max_cycles),
            str(seed),
            str(stall_pct),
            *(f"{regmap.offset(k)}={v}" for k, v in writes.items()),
        ]
        res = subprocess.run(args, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ExecutionError(f"RTL harness failed ({res.returncode}): {res.stderr[-2000:]}")
        after = np.fromfile(mem_out, np.uint8)
    words: dict[int, int] = {}
    info: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, *vals = line.split()
        if key == "reg":
            words[int(vals[0])] = int(vals[1])
        else:
            info[key] = vals[0]
    values = {r.name: words.get(r.offset, 0) for r in regmap.CONTROL_REGISTERS}
    for name, _ in regmap.COUNTERS:
        lo, hi = words[regmap.offset(name + "_LO")], words[regmap.offset(name + "_HI")]
        values[name] = (hi << 32) | lo
    dram[:] = after[data_base : data_base + dram.size]
    if np.any(after[:data_base] != image[:data_base]) or np.any(after[data_base + dram.size :]):
        raise ExecutionError("the RTL wrote DRAM outside its data window")
    return HarnessResult(
        registers=values,
        cycles=int(info["cycles"]),
        wall_s=float(info["wall_s"]),
        timed_out=info["timeout"] == "1",
    )
