"""Instruction streams on the RTL, one after the other, for tests and benchmarks of the DPU.

A test bench around the virtual board (sim/virtual_board.py) and the board driver
(host/driver.py): it lays programs out in the board's DRAM itself, so a test can put them
anywhere, reach past a window on purpose, write any register before the start (faults),
and read every register and byte afterwards. The Runner's `rtl` backend is the driver on
the same board, without this bench.

    result = run_program(cfg, stream, dram)      # dram is updated in place
    result.error_code, result.cycles (the CYCLES counter), result.wall_s
    first, then = run_programs(cfg, [Run(bad, dram_a), Run(good, dram_b)])  # one DPU
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import INSTR_BYTES
from dpukit.errors import ExecutionError
from dpukit.host import regmap
from dpukit.host.driver import DpuDriver, Finished
from dpukit.sim.virtual_board import VirtualBoard, build

PAGE = 4096
__all__ = ["PAGE", "HarnessResult", "Run", "build", "run_program", "run_programs"]


@dataclass
class HarnessResult(Finished):
    """What the driver read after a run (registers, `cycles`, `done`, `error`,
    `error_code`), and what this bench adds."""

    wall_s: float = 0.0  # wall time of the simulated run
    outside_writes: int = 0  # bytes outside the run's data window the run changed (must be 0)


@dataclass
class Run:
    """One program of a sequence run on the same DPU (no reset in between): its stream, its
    data window (updated in place), and register values written after the driver's own
    (tests of faults; e.g. {"CTRL": soft_reset} to reset the core first)."""

    stream: bytes
    dram: np.ndarray
    registers: dict[str, int] = field(default_factory=dict)


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
    is updated in place. One result per run executed: a run that times out (after
    `max_cycles`) is the last.

    Each run has its own region of the DRAM: its instructions, its data window at the next
    4 KiB boundary (so every run also checks that programs are relocatable), and a page of
    slack. The regions lie in reverse run order from address 0, so the first run's window
    is the last thing in the DRAM but a page: the DRAM answers SLVERR from a page past it
    on (tests of faults reach there through `registers`)."""
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
    results = []
    board = VirtualBoard(
        cfg, base=0, memory_bytes=end, latency=latency, stall_pct=stall_pct, seed=seed
    )
    with board:
        driver = DpuDriver(board, cfg)
        memory = board.memory(0, end)
        for run, (instr_base, data_base) in zip(runs, bases, strict=True):
            memory[instr_base : instr_base + len(run.stream)] = np.frombuffer(run.stream, np.uint8)
            memory[data_base : data_base + run.dram.size] = run.dram
        for run, (instr_base, data_base) in zip(runs, bases, strict=True):
            before = memory.copy()
            driver.program(instr_base, len(run.stream) // INSTR_BYTES, data_base, run.dram.size)
            for name, value in run.registers.items():
                board.mmio.write(regmap.offset(name), value)
            t = time.perf_counter()
            driver.start(0, budget_cycles=max_cycles)
            end_state = driver.finish()
            wall = time.perf_counter() - t
            window = slice(data_base, data_base + run.dram.size)
            run.dram[:] = memory[window]
            changed = memory != before
            changed[window] = False
            results.append(
                HarnessResult(
                    end_state.registers,
                    end_state.timed_out,
                    wall_s=wall,
                    outside_writes=int(changed.sum()),
                )
            )
            if end_state.timed_out:
                break
    return results


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
