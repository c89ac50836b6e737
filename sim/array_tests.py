"""cocotb tests of dpu_array, the weight-stationary systolic GEMM datapath.

Run by tests/test_rtl_array.py, which passes the array shape as DPU_ROWS / DPU_COLS.
Stimulus is planned cycle by cycle (a `Schedule`), either as the compiler's cycle model
runs a GEMM (preload, stream, drain) or as tightly as the array's documented
weight-stationary contract allows; every result is checked against numpy and against
the documented latency.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import zlib
from collections.abc import Iterator

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import LAYOUT, Opcode, decode_array, make, to_bytes
from dpukit.compiler.timing import instr_cycles

ROWS = int(os.environ["DPU_ROWS"])
COLS = int(os.environ["DPU_COLS"])
LATENCY = ROWS + COLS - 1  # dpu_array.sv: result Rows + Cols - 1 cycles after its vector
PERIOD_NS = 10

# Which cycles a port skips (True: idle), as cocotbext-axi's pause generators.
PAUSES = {
    "none": [False],
    "every_other": [False, True],
    "two_on_one_off": [False, False, True],
    "bursty": [False, False, False, True, True],
}


def cycle() -> int:
    """The current clock cycle: cycle n runs from rising edge n to rising edge n + 1."""
    return round(get_sim_time(unit="ns") / PERIOD_NS)


def wrap32(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int64)


def gemm_ref(acts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """p[t][c] = sum_r a[t][r]*W[r][c], wrapped to int32 (docs/isa.md, GEMM)."""
    return wrap32(acts.astype(np.int64) @ weights.astype(np.int64))


def model_gemm_cycles(n_vectors: int) -> int:
    """The golden cycle model's cost (compiler/timing.py) of a GEMM of n_vectors."""
    cfg = dataclasses.replace(load_config("sim-small"), rows=ROWS, cols=COLS)
    fields = {f.name: 0 for f in LAYOUT[Opcode.GEMM]} | {"n_outer": 1, "n_inner": n_vectors}
    col = decode_array(to_bytes([make(Opcode.GEMM, **fields)]))
    return int(instr_cycles(cfg, col)[0])


def with_extremes(x: np.ndarray) -> np.ndarray:
    """Overwrite a few whole lines and single lanes with -128 and 127."""
    x = x.copy()
    x[0] = -128
    x[-1] = 127
    x[len(x) // 2, ::2] = -128
    x[len(x) // 2, 1::2] = 127
    return x


@dataclasses.dataclass
class Tile:
    """One GEMM pass: a weight tile (Rows x Cols) and the vectors streamed through it."""

    weights: np.ndarray
    acts: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n_vectors: int) -> Tile:
        w = rng.integers(-128, 128, size=(ROWS, COLS), dtype=np.int64)
        a = rng.integers(-128, 128, size=(n_vectors, ROWS), dtype=np.int64)
        return cls(with_extremes(w), with_extremes(a) if n_vectors >= 2 else a)


EDGES = np.array([-128, -127, -2, -1, 0, 1, 2, 126, 127], dtype=np.int64)


def extreme_tiles(rng: np.random.Generator) -> list[Tile]:
    """Tiles at the limits of dpu_array's arithmetic: two products share a multiplier, and
    column sums run just wide enough for Rows products of -128 * -128.

    All -128 (every product 2^14, the largest column sum); all weights 127 against -128
    (the most negative sum); columns of alternating sign, so the two lanes of a multiplier
    pull apart; single-lane spikes; and random picks from the int8 edge values.
    """
    n = ROWS + 2
    lowest = np.full((n, ROWS), -128, np.int64)
    highest = np.full((n, ROWS), 127, np.int64)
    edges = rng.choice(EDGES, size=(n, ROWS))
    spike = np.zeros((n, ROWS), np.int64)
    spike[np.arange(n), np.arange(n) % ROWS] = -128
    alt = np.tile(np.where(np.arange(COLS) % 2 == 0, -128, 127), (ROWS, 1))
    same = [np.full((ROWS, COLS), v, np.int64) for v in (-128, 127, -1)]
    return [
        Tile(same[0], lowest),
        Tile(same[1], lowest),
        Tile(same[0], highest),
        Tile(alt, lowest),
        Tile(-alt - 1, edges),
        Tile(same[2], np.vstack([lowest, highest, spike])),
        Tile(alt, spike),
        Tile(rng.choice(EDGES, size=(ROWS, COLS)), rng.choice(EDGES, size=(n, ROWS))),
    ]


@dataclasses.dataclass
class Schedule:
    """Stimulus cycle by cycle: at most one weight row and one activation vector a cycle."""

    wgt: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    act: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    expected: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def length(self) -> int:
        return max([*self.wgt, *self.act], default=-1) + 1

    @staticmethod
    def place(
        port: dict[int, np.ndarray], lines: np.ndarray, earliest: list[int], pause: Iterator[bool]
    ) -> list[int]:
        """Put line i on the port in order, at the first cycle >= earliest[i] not paused."""
        cycles = []
        t = max(port, default=-1) + 1
        for line, first in zip(lines, earliest, strict=True):
            t = max(t, first)
            while next(pause):
                t += 1
            port[t] = line
            cycles.append(t)
            t += 1
        return cycles

    @classmethod
    def model(cls, tiles: list[Tile]) -> Schedule:
        """As compiler/timing.py runs GEMMs: preload Rows, stream, drain Rows + Cols - 2."""
        s = cls()
        t = 0
        for tile in tiles:
            n = len(tile.acts)
            s.place(s.wgt, tile.weights, [t] * ROWS, itertools.repeat(False))
            s.place(s.act, tile.acts, [t + ROWS] * n, itertools.repeat(False))
            s.expected += list(gemm_ref(tile.acts, tile.weights))
            t += model_gemm_cycles(n)
        return s

    @classmethod
    def tight(cls, tiles: list[Tile], wgt_pause: list[bool], act_pause: list[bool]) -> Schedule:
        """As early as dpu_array's weight-stationary contract allows, with idle cycles.

        Weight row r of a tile goes no earlier than Cols - 1 + r cycles after the previous
        tile's last vector; a vector no earlier than w_r - r + 1 for every row r.
        """
        s = cls()
        wp, ap = itertools.cycle(wgt_pause), itertools.cycle(act_pause)
        last_act = 1 - COLS
        for tile in tiles:
            w = s.place(s.wgt, tile.weights, [last_act + COLS - 1 + r for r in range(ROWS)], wp)
            first = max(w_r - r + 1 for r, w_r in enumerate(w))
            last_act = s.place(s.act, tile.acts, [first] * len(tile.acts), ap)[-1]
            s.expected += list(gemm_ref(tile.acts, tile.weights))
        return s


class LaneDriver:
    """Drives one valid + packed-lanes port: a line per cycle, or valid low."""

    def __init__(self, valid: SimHandleBase, data: SimHandleBase, lanes: int, bits: int):
        assert len(data) == lanes * bits, f"port of {len(data)} bits, want {lanes} x {bits}"
        self.valid, self.data, self.bits = valid, data, bits
        self.idle()

    def idle(self) -> None:
        self.valid.value = 0
        self.data.value = 0

    def drive(self, line: np.ndarray | None) -> None:
        if line is None:
            self.idle()
            return
        mask = (1 << self.bits) - 1
        self.valid.value = 1
        self.data.value = sum((int(v) & mask) << (i * self.bits) for i, v in enumerate(line))


class ResultMonitor:
    """Collects (cycle, result vector) whenever res_valid_o is high."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.results: list[tuple[int, np.ndarray]] = []
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        while True:
            await RisingEdge(self.dut.clk_i)
            await ReadOnly()
            if self.dut.res_valid_o.value:
                word = self.dut.res_o.value.to_unsigned()
                lanes = [(word >> (32 * c)) & 0xFFFF_FFFF for c in range(COLS)]
                self.results.append((cycle(), wrap32(np.array(lanes, dtype=np.int64))))


class ArrayTb:
    """Clock, reset, the two input drivers and the result monitor of one dpu_array."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.wgt = LaneDriver(dut.wgt_valid_i, dut.wgt_i, COLS, 8)
        self.act = LaneDriver(dut.act_valid_i, dut.act_i, ROWS, 8)
        Clock(dut.clk_i, PERIOD_NS, unit="ns").start()
        self.monitor = ResultMonitor(dut)

    async def reset(self) -> None:
        self.dut.rst_ni.value = 0
        await ClockCycles(self.dut.clk_i, 3)
        self.dut.rst_ni.value = 1
        await RisingEdge(self.dut.clk_i)

    async def play(self, s: Schedule) -> tuple[int, list[int]]:
        """Drive a schedule; returns the cycle of its first line and the cycle of every vector."""
        start = cycle()
        act_cycles = []
        for t in range(s.length):
            self.wgt.drive(s.wgt.get(t))
            self.act.drive(s.act.get(t))
            if t in s.act:
                act_cycles.append(cycle())
            await RisingEdge(self.dut.clk_i)
        self.wgt.idle()
        self.act.idle()
        return start, act_cycles

    async def run_and_check(self, s: Schedule) -> tuple[int, list[int]]:
        """Play a schedule, wait out the drain, and check values, order and latency.

        Returns the schedule's start cycle and the cycle of every result.
        """
        start, act_cycles = await self.play(s)
        await ClockCycles(self.dut.clk_i, LATENCY + 2)
        got = self.monitor.results
        assert len(got) == len(s.expected), f"{len(got)} results, expected {len(s.expected)}"
        for i, ((t_res, p), t_act, want) in enumerate(
            zip(got, act_cycles, s.expected, strict=True)
        ):
            assert np.array_equal(p, want), f"result {i}: got {p.tolist()}, want {want.tolist()}"
            assert t_res - t_act == LATENCY, f"result {i}: latency {t_res - t_act} != {LATENCY}"
        return start, [t for t, _ in got]


async def new_tb(dut: SimHandleBase) -> ArrayTb:
    tb = ArrayTb(dut)
    await tb.reset()
    return tb


@cocotb.test()
async def test_random_stream(dut: SimHandleBase) -> None:
    """One tile, a gapless stream of random vectors with -128/127 extremes."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(1)
    await tb.run_and_check(Schedule.model([Tile.random(rng, 3 * ROWS)]))


@cocotb.test()
@cocotb.parametrize(wgt_pause=list(PAUSES), act_pause=list(PAUSES)[1:])
async def test_gaps(dut: SimHandleBase, wgt_pause: str, act_pause: str) -> None:
    """Valid low on patterned cycles on both ports, at the tightest legal schedule."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(zlib.crc32(f"{wgt_pause} {act_pause}".encode()))
    tiles = [Tile.random(rng, 2 * ROWS), Tile.random(rng, ROWS)]
    await tb.run_and_check(Schedule.tight(tiles, PAUSES[wgt_pause], PAUSES[act_pause]))


@cocotb.test()
async def test_random_gaps(dut: SimHandleBase) -> None:
    """Valid low on random cycles."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(7)
    tiles = [Tile.random(rng, int(n)) for n in rng.integers(1, 2 * ROWS, size=3)]
    pauses = [list(rng.random(37) < 0.3) for _ in range(2)]
    await tb.run_and_check(Schedule.tight(tiles, *pauses))


@cocotb.test()
@cocotb.parametrize(schedule=["model", "tight"])
async def test_extreme_values(dut: SimHandleBase, schedule: str) -> None:
    """Largest and smallest column sums, lanes of opposite sign, int8 edge values."""
    tb = await new_tb(dut)
    tiles = extreme_tiles(np.random.default_rng(11))
    sums = np.concatenate([gemm_ref(t.acts, t.weights) for t in tiles])
    assert sums.max() == ROWS * 2**14 and sums.min() == -ROWS * 127 * 128  # the bounds reached
    if schedule == "model":
        s = Schedule.model(tiles)
    else:
        s = Schedule.tight(tiles, PAUSES["two_on_one_off"], PAUSES["none"])
    await tb.run_and_check(s)


@cocotb.test()
@cocotb.parametrize(schedule=["model", "tight"])
async def test_back_to_back_tiles(dut: SimHandleBase, schedule: str) -> None:
    """Reload the weights and stream again, several tiles in a row (single-vector ones too)."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(3)
    tiles = [Tile.random(rng, n) for n in (ROWS, 1, 2 * COLS, 2, ROWS + 3)]
    if schedule == "model":
        s = Schedule.model(tiles)
    else:
        s = Schedule.tight(tiles, PAUSES["none"], PAUSES["none"])
    await tb.run_and_check(s)


@cocotb.test()
async def test_latency(dut: SimHandleBase) -> None:
    """The documented latency, and GEMM cycle counts against compiler/timing.py."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(5)

    # One vector: its result Rows + Cols - 1 cycles later (checked in run_and_check).
    await tb.run_and_check(Schedule.model([Tile.random(rng, 1)]))

    # The model's schedule: the last result is on the port exactly the model's cost after
    # the first weight row, i.e. in the first cycle after the GEMM's modelled window.
    n = 3 * ROWS
    tb.monitor.results.clear()
    start, done = await tb.run_and_check(Schedule.model([Tile.random(rng, n)]))
    assert done[-1] - start == 2 * ROWS + COLS - 2 + n == model_gemm_cycles(n)
    assert done == list(range(done[0], done[0] + n)), "results not one per cycle"

    # The tightest schedule: streaming from the cycle after the first weight row.
    tb.monitor.results.clear()
    start, done = await tb.run_and_check(Schedule.tight([Tile.random(rng, n)], [False], [False]))
    assert done[-1] - start == ROWS + COLS + n - 1
