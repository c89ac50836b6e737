"""Whole programs on the RTL at Verilator speed: build and run sim/harness/dpu_harness.cpp.

The harness owns the clock, the DRAM model and the register driver in C++; Python only
writes the DRAM image, reads back the DRAM and the registers. One build per hardware
config and RTL version, cached under sim_build/ (several pytest workers share it through a
file lock).

    result = run_program(cfg, stream, dram)      # dram is updated in place
    result.registers["CYCLES"], result.cycles, result.wall_s
    first, then = run_programs(cfg, [Run(bad, dram_a), Run(good, dram_b)])  # one DPU
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
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
NAME_CHARS = 40  # of the config name in a build directory's name


@dataclass
class HarnessResult:
    registers: dict[str, int]  # every register of the map; counters as full 64-bit values
    cycles: int  # clock cycles from the start write to the done interrupt
    wall_s: float  # wall time of the simulated run (excludes build, image I/O)
    timed_out: bool
    outside_writes: int  # bytes outside the run's data window the run changed (must be 0)

    @property
    def error_code(self) -> regmap.ErrorCode:
        return regmap.ErrorCode(self.registers["ERROR_CODE"])

    @property
    def error(self) -> bool:
        return self._status("error")

    @property
    def done(self) -> bool:
        return self._status("done")

    def _status(self, name: str) -> bool:
        return bool(self.registers["STATUS"] & regmap.register("STATUS").field(name).mask)


@dataclass
class Run:
    """One program of a sequence run on the same DPU (no reset in between): its stream, its
    data window (updated in place), and register values written after the harness's own
    (tests of faults; e.g. {"CTRL": soft_reset} to reset the core first)."""

    stream: bytes
    dram: np.ndarray
    registers: dict[str, int] = field(default_factory=dict)


class _Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while a child process ran; raised once the child is gone."""


class _Children:
    """Runs child processes (the build, the harness) so that an interruption leaves nothing
    behind. For its duration SIGTERM and SIGINT, where Python's default handling applies,
    only kill the child's process group and are raised as _Interrupted once it is gone, so
    that `with` blocks around remove their temporary files; then the process ends as the
    signal would have ended it (SIGTERM by default ends Python at once, leaving both behind).
    A handler never raises: raised from inside Popen, it would leave a child running that
    nothing kills any more."""

    DEFAULTS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that arrived
        self.child: subprocess.Popen | None = None  # running now
        self.taken: list[int] = []  # the signals handled here

    def __enter__(self) -> _Children:
        if threading.current_thread() is threading.main_thread():
            for sig, default in self.DEFAULTS.items():
                if signal.getsignal(sig) is default:
                    signal.signal(sig, self._handler)
                    self.taken.append(sig)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        for sig in self.taken:
            signal.signal(sig, self.DEFAULTS[sig])
        if kind is _Interrupted:
            if self.signum == signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGTERM)  # its default action: the process ends
            raise KeyboardInterrupt from None

    def _handler(self, signum: int, frame) -> None:
        self.signum = signum
        if self.child is not None and self.child.returncode is None:
            self._kill(self.child)

    @staticmethod
    def _kill(child: subprocess.Popen) -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # its own group: make's compilers too
        except ProcessLookupError:
            pass

    def run(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run(cmd, capture_output=True, text=True), the child killed on an
        interruption or any exception."""
        if self.signum is not None:
            raise _Interrupted
        pipe = subprocess.PIPE
        child = subprocess.Popen(
            cmd, stdout=pipe, stderr=pipe, text=True, start_new_session=True, **kwargs
        )
        self.child = child
        try:
            if self.signum is not None:  # it came while the child started
                raise _Interrupted
            out, err = child.communicate()
            if self.signum is not None:
                raise _Interrupted
        except BaseException:
            self._kill(child)
            child.communicate()
            raise
        finally:
            self.child = None
        return subprocess.CompletedProcess(cmd, child.returncode, out, err)


def build_dir(cfg: HwConfig, digest: str) -> Path:
    """The build directory of `cfg`: always one directory right inside sim_build/, whatever
    the config's name holds (characters outside [A-Za-z0-9._-], such as '/', become '_';
    the prefix keeps '.' and '..' from being names of their own)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.name)[:NAME_CHARS]
    return BUILD / f"harness_{name}_{digest}"


def _defines(cfg: HwConfig) -> list[str]:
    ctrl, irq = regmap.register("CTRL"), regmap.register("IRQ_STATUS")
    return [
        f"-DDPU_AXI_DATA_BITS={cfg.axi_data_bits}",
        f"-DDPU_CTRL_OFFSET={ctrl.offset}",
        f"-DDPU_CTRL_START={ctrl.field('start').mask}",
        f"-DDPU_CTRL_IRQ_ENABLE={ctrl.field('irq_enable').mask}",
        f"-DDPU_IRQ_STATUS_OFFSET={irq.offset}",
        f"-DDPU_IRQ_STATUS_DONE={irq.field('done').mask}",
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
    out_dir = build_dir(cfg, digest.hexdigest()[:12])
    exe = out_dir / "dpu_harness"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists():
            return exe
        if not sys.stderr.isatty():  # on a terminal the CLI shows its own status line
            print(
                f"building the RTL simulator for {cfg.name} (Verilator, a few minutes on first "
                f"use; cached in {out_dir.relative_to(BUILD.parent)})",
                file=sys.stderr,
                flush=True,
            )
        env = verilator_env()
        env["MAKEFLAGS"] += " " + MAKE_OPT
        # linked under another name and renamed when complete: an interrupted link must not
        # leave a truncated executable that later runs would take for the cached one
        partial = out_dir / "dpu_harness.partial"
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
            str(partial),
            *(f"-G{k}={v}" for k, v in params.items()),
            "-CFLAGS",
            " ".join([CXX_OPT, *_defines(cfg)]),
            *map(str, sources),
            str(HARNESS_CPP),
        ]
        with _Children() as children:
            res = children.run(cmd, env=env)
        if res.returncode != 0 or not partial.exists():
            log = (res.stdout + res.stderr)[-4000:]
            raise ExecutionError(f"building the RTL harness for {cfg.name} failed:\n{log}")
        partial.replace(exe)
    return exe


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def run_programs(
    cfg: HwConfig,
    runs: Sequence[Run],
    *,
    max_cycles: int = 50_000_000,
    stall_pct: int = 0,
    seed: int = 1,
    latency: int | None = None,
) -> list[HarnessResult]:
    """Run programs one after the other on one RTL DPU and DRAM, with no reset in between
    (as a board driver does: the next start follows the last one's done); each run's `dram`
    is updated in place. One result per run executed: a run that times out is the last.

    Each run has its own region of the harness DRAM: its instructions, its data window at
    the next 4 KiB boundary (so every run also checks that programs are relocatable), and a
    page of slack. The regions lie in reverse run order, so the first run's window is the
    last thing in the image but a page: the DRAM answers SLVERR from a page past it on (tests
    of faults reach there through `registers`)."""
    exe = build(cfg)
    for run in runs:
        if len(run.stream) % INSTR_BYTES:
            raise ExecutionError(
                f"instruction stream of {len(run.stream)} bytes is not whole instructions"
            )
    bases: list[tuple[int, int]] = [(0, 0)] * len(runs)
    end = 0
    for k in reversed(range(len(runs))):
        instr_base = _pages(end)
        data_base = instr_base + _pages(max(len(runs[k].stream), 1))
        bases[k] = (instr_base, data_base)
        end = data_base + runs[k].dram.size + PAGE
    image = np.zeros(end, np.uint8)
    args: list[str] = []  # each run's register writes, runs separated by "--"
    for k, (run, (instr_base, data_base)) in enumerate(zip(runs, bases, strict=True)):
        image[instr_base : instr_base + len(run.stream)] = np.frombuffer(run.stream, np.uint8)
        image[data_base : data_base + run.dram.size] = run.dram
        writes = {
            "INSTR_BASE_LO": instr_base,
            "INSTR_BASE_HI": 0,
            "INSTR_COUNT": len(run.stream) // INSTR_BYTES,
            "DATA_BASE_LO": data_base,
            "DATA_BASE_HI": 0,
            "DATA_LIMIT": run.dram.size,
        } | run.registers
        args += ["--"] if k else []
        args += [f"{regmap.offset(name)}={v}" for name, v in writes.items()]
    with _Children() as children, tempfile.TemporaryDirectory(prefix="dpu_harness_") as tmp:
        mem_in, mem_out = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        image.tofile(mem_in)
        latency = cfg.dram_latency_cycles if latency is None else latency
        head = [str(exe), str(mem_in), str(mem_out), str(latency), str(max_cycles), str(seed)]
        res = children.run([*head, str(stall_pct), *args])
        if res.returncode != 0:
            raise ExecutionError(f"RTL harness failed ({res.returncode}): {res.stderr[-2000:]}")
        images = np.fromfile(mem_out, np.uint8).reshape(-1, image.size)
    results = []
    before = image
    for run, (_, data_base), out, after in zip(
        runs, bases, _parse_runs(res.stdout), images, strict=False
    ):
        window = slice(data_base, data_base + run.dram.size)
        run.dram[:] = after[window]
        changed = after != before
        changed[window] = False
        results.append(_result(out, int(changed.sum())))
        before = after
    return results


def _parse_runs(stdout: str) -> list[tuple[dict[int, int], dict[str, str]]]:
    """Per run: register words by offset, and the other "key value" lines."""
    runs: list[tuple[dict[int, int], dict[str, str]]] = []
    for line in stdout.splitlines():
        key, *vals = line.split()
        if key == "run":
            runs.append(({}, {}))
        elif key == "reg":
            runs[-1][0][int(vals[0])] = int(vals[1])
        else:
            runs[-1][1][key] = vals[0]
    return runs


def _result(out: tuple[dict[int, int], dict[str, str]], outside_writes: int) -> HarnessResult:
    words, info = out
    values = {r.name: words.get(r.offset, 0) for r in regmap.CONTROL_REGISTERS}
    for name, _ in regmap.COUNTERS:
        lo, hi = words[regmap.offset(name + "_LO")], words[regmap.offset(name + "_HI")]
        values[name] = (hi << 32) | lo
    return HarnessResult(
        registers=values,
        cycles=int(info["cycles"]),
        wall_s=float(info["wall_s"]),
        timed_out=info["timeout"] == "1",
        outside_writes=outside_writes,
    )


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
    """Run one instruction stream on a fresh RTL DPU over `dram` (its data window; updated in
    place): `run_programs` with one run, its instructions at DRAM address 0. A write outside
    the window is an ExecutionError."""
    (res,) = run_programs(
        cfg,
        [Run(stream, dram, dict(registers or {}))],
        max_cycles=max_cycles,
        stall_pct=stall_pct,
        seed=seed,
        latency=latency,
    )
    if res.outside_writes:
        raise ExecutionError("the RTL wrote DRAM outside its data window")
    return res
