"""cocotb tests of dpu_array, the weight-stationary systolic GEMM datapath.

Run by tests/test_rtl_array.py, which passes the array shape as DPU_ROWS / DPU_COLS.
Stimulus is planned cycle by cycle (a `Schedule`), either as dpu_compute runs GEMMs (and
compiler/timing.py counts them) or as tightly as the array's exact timing contract
(dpu_array.sv, "Timing contract") allows; every result is checked bit-exactly against
numpy and against the documented latency. `contract_results` predicts what the array
computes for any schedule, legal or not: schedules one cycle past the contract's bounds
must give exactly those (wrong) results, which shows that the bounds are tight.
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

from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.isa import LAYOUT, Opcode, decode_array, make, to_bytes
from dpukit.compiler.timing import gemm_interval, instr_cycles

ROWS = int(os.environ["DPU_ROWS"])
COLS = int(os.environ["DPU_COLS"])
LATENCY = ROWS + COLS - 1  # dpu_array.sv: result Rows + Cols - 1 cycles after its vector
# dpu_array.sv: grid row r multiplies the vector of port cycle k in cycle k + r + MUL_LEAD
# (Cols - 1 - ProdRegs, ProdRegs = 1 for Cols >= 2), with the weights written before.
MUL_LEAD = COLS - 1 - (1 if COLS >= 2 else 0)
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


def model_cfg() -> HwConfig:
    """The sim-small configuration with this array's shape."""
    return dataclasses.replace(load_config("sim-small"), rows=ROWS, cols=COLS)


def model_gemm_cycles(n_vectors: int) -> int:
    """The golden cycle model's cost (compiler/timing.py) of a GEMM of n_vectors."""
    fields = {f.name: 0 for f in LAYOUT[Opcode.GEMM]} | {"n_outer": 1, "n_inner": n_vectors}
    col = decode_array(to_bytes([make(Opcode.GEMM, **fields)]))
    return int(instr_cycles(model_cfg(), col)[0])


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


NEVER = [False]  # a pause pattern without pauses


@dataclasses.dataclass
class Schedule:
    """Stimulus cycle by cycle: at most one weight row and one activation vector a cycle.

    Cycles are relative (any integers, also negative); `placed` has the cycles of every
    tile's weight rows and vectors, `takes` the cycle each GEMM is taken in (`model`).
    """

    wgt: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    act: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    expected: list[np.ndarray] = dataclasses.field(default_factory=list)
    placed: list[tuple[list[int], list[int]]] = dataclasses.field(default_factory=list)
    takes: list[int] = dataclasses.field(default_factory=list)

    @property
    def first(self) -> int:
        return min([*self.wgt, *self.act, 0])

    @property
    def last(self) -> int:
        return max([*self.wgt, *self.act, 0])

    @staticmethod
    def place(
        port: dict[int, np.ndarray], lines: np.ndarray, earliest: list[int], pause: Iterator[bool]
    ) -> list[int]:
        """Put line i on the port in order, at the first cycle >= earliest[i] not paused."""
        cycles = []
        t = max(port) + 1 if port else min(earliest, default=0)
        for line, first in zip(lines, earliest, strict=True):
            t = max(t, first)
            while next(pause):
                t += 1
            port[t] = line
            cycles.append(t)
            t += 1
        return cycles

    def add(self, tile: Tile, w: list[int], v: list[int]) -> None:
        self.placed.append((w, v))
        self.expected += list(gemm_ref(tile.acts, tile.weights))

    def move(self, port: dict[int, np.ndarray], cycles: list[int], delta: int) -> None:
        """Move the lines in `cycles` by delta cycles (onto free cycles, order kept)."""
        order = [id(port[t]) for t in sorted(port)]
        lines = [port.pop(t) for t in cycles]
        for t, line in zip(cycles, lines, strict=True):
            assert t + delta not in port, f"cycle {t + delta} taken"
            port[t + delta] = line
        assert [id(port[t]) for t in sorted(port)] == order, "lines reordered"

    def assert_legal(self) -> None:
        """The schedule keeps dpu_array's contract: every vector sees its own tile."""
        got = contract_results(self)
        for i, (p, want) in enumerate(zip(got, self.expected, strict=True)):
            assert np.array_equal(p, want), f"schedule breaks the contract at vector {i}"

    @classmethod
    def model(cls, tiles: list[Tile]) -> Schedule:
        """As dpu_compute runs back-to-back GEMMs (dpu_compute.sv, "Timing") and
        compiler/timing.py counts them: GEMM i taken in cycle a_i, its vectors on the port in
        cycles a_i + 1 ..., tile row r in cycle a_i + r + MulLead, and the next GEMM taken
        in cycle a_i + max(n, Rows) (timing.gemm_interval)."""
        s = cls()
        a = 0
        for tile in tiles:
            n = len(tile.acts)
            rows = [a + r + MUL_LEAD for r in range(ROWS)]
            vecs = [a + 1 + i for i in range(n)]
            w = s.place(s.wgt, tile.weights, rows, itertools.repeat(False))
            v = s.place(s.act, tile.acts, vecs, itertools.repeat(False))
            assert (w, v) == (rows, vecs), "model schedule: port conflict"
            s.takes.append(a)
            s.add(tile, w, v)
            a += int(gemm_interval(model_cfg(), n))
        s.assert_legal()
        return s

    @classmethod
    def tight(cls, tiles: list[Tile], wgt_pause: list[bool], act_pause: list[bool]) -> Schedule:
        """As early as dpu_array's exact timing contract allows, with idle cycles.

        Weight row r of a tile goes no earlier than k_last + r + MulLead, k_last the cycle
        of the previous tile's last vector; the first vector no earlier than
        w_r - r - MulLead + 1 for every row r (for MulLead >= 2 the first tile's vectors
        may go before its first weight row).
        """
        s = cls()
        wp, ap = itertools.cycle(wgt_pause), itertools.cycle(act_pause)
        last_act = None
        for tile in tiles:
            rows = [0 if last_act is None else last_act + r + MUL_LEAD for r in range(ROWS)]
            w = s.place(s.wgt, tile.weights, rows, wp)
            first = max(w_r - r - MUL_LEAD + 1 for r, w_r in enumerate(w))
            if last_act is not None:
                first = max(first, last_act + 1)
            v = s.place(s.act, tile.acts, [first] * len(tile.acts), ap)
            last_act = v[-1]
            s.add(tile, w, v)
        s.assert_legal()
        return s


def contract_results(s: Schedule) -> list[np.ndarray]:
    """What dpu_array computes for every vector of a schedule, legal or not, by its exact
    timing contract: grid row r multiplies the vector of cycle k in cycle k + r + MulLead,
    with the row last written to it in a cycle before that (weight beats go to grid rows
    0, 1, ..., Rows - 1, 0, ... in order)."""
    writes: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(ROWS)]
    for i, w in enumerate(sorted(s.wgt)):
        writes[i % ROWS].append((w, s.wgt[w]))
    out = []
    for k in sorted(s.act):
        rows = []
        for r in range(ROWS):
            seen = [line for w, line in writes[r] if w < k + r + MUL_LEAD]
            assert seen, f"vector of cycle {k}: grid row {r} not loaded yet"
            rows.append(seen[-1])
        out.append(gemm_ref(s.act[k][None, :], np.array(rows))[0])
    return out


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
        """Drive a schedule; returns the clock cycle of its cycle 0 and of every vector."""
        offset = cycle() - s.first
        act_cycles = []
        for t in range(s.first, s.last + 1):
            assert cycle() == offset + t
            self.wgt.drive(s.wgt.get(t))
            self.act.drive(s.act.get(t))
            if t in s.act:
                act_cycles.append(cycle())
            await RisingEdge(self.dut.clk_i)
        self.wgt.idle()
        self.act.idle()
        return offset, act_cycles

    async def run_and_check(self, s: Schedule) -> tuple[int, list[int]]:
        """Play a schedule, wait out the drain, and check values (bit-exact against
        s.expected), order and latency.

        Returns the clock cycle of the schedule's cycle 0 and the cycle of every result.
        """
        self.monitor.results.clear()
        offset, act_cycles = await self.play(s)
        await ClockCycles(self.dut.clk_i, LATENCY + 2)
        got = self.monitor.results
        assert len(got) == len(s.expected), f"{len(got)} results, expected {len(s.expected)}"
        for i, ((t_res, p), t_act, want) in enumerate(
            zip(got, act_cycles, s.expected, strict=True)
        ):
            assert np.array_equal(p, want), f"result {i}: got {p.tolist()}, want {want.tolist()}"
            assert t_res - t_act == LATENCY, f"result {i}: latency {t_res - t_act} != {LATENCY}"
        return offset, [t for t, _ in got]


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
@cocotb.parametrize(side=["row_early", "vector_early"])
async def test_contract_is_tight(dut: SimHandleBase, side: str) -> None:
    """The contract's bounds are exact, for every grid row r: tile B follows tile A as
    tightly as allowed (bit-exact), then one cycle tighter, where exactly one vector sees
    the other tile's row r, as `contract_results` predicts.

    B differs from A in row r only, so only grid row r can go wrong. row_early: B's rows
    one cycle early, so A's last vector multiplies in grid row r with B's row.
    vector_early: B's first vector one cycle early, so it sees A's row r.
    """
    tb = await new_tb(dut)
    rng = np.random.default_rng(zlib.crc32(side.encode()))
    for r in range(ROWS):
        a = Tile.random(rng, ROWS + 2)
        wb = a.weights.copy()
        wb[r] = -1 - wb[r]  # differs in every lane
        b = Tile(wb, rng.integers(-128, 128, size=(3, ROWS), dtype=np.int64))
        a.acts[-1, r] = b.acts[0, r] = -128  # the lanes that meet the wrong weights

        s = Schedule.tight([a, b], NEVER, NEVER)
        (_, _), (wb_cycles, vb) = s.placed
        if side == "vector_early":  # make room: B two cycles later, still legal
            s.move(s.act, vb, 2)
            s.move(s.wgt, wb_cycles, 2)
            vb = [t + 2 for t in vb]
        s.assert_legal()
        tb.dut._log.info("grid row %d: %s at the bound", r, side)
        await tb.run_and_check(s)

        if side == "row_early":
            s.move(s.wgt, sorted(s.wgt)[ROWS:], -1)
            wrong = ROWS + 2 - 1  # A's last vector
        else:
            s.move(s.act, vb[:1], -1)
            wrong = ROWS + 2  # B's first vector
        intended = s.expected
        s.expected = contract_results(s)
        diff = [
            i
            for i, (p, q) in enumerate(zip(s.expected, intended, strict=True))
            if not np.array_equal(p, q)
        ]
        assert diff == [wrong], f"contract model: wrong vectors {diff}, expected [{wrong}]"
        assert not np.array_equal(s.expected[wrong], intended[wrong])
        tb.dut._log.info("grid row %d: %s one cycle early", r, side)
        await tb.run_and_check(s)


@cocotb.test()
async def test_contract_random(dut: SimHandleBase) -> None:
    """Weight rows and vectors on random cycles, with no regard for tiles: the array
    computes exactly what the timing contract says (`contract_results`)."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(13)
    s = Schedule()
    for r in range(ROWS):  # a first full tile
        s.wgt[r] = rng.integers(-128, 128, size=COLS, dtype=np.int64)
    first = 1 - MUL_LEAD  # the first vector cycle every grid row is loaded for
    for t in range(first, first + 6 * ROWS + 40):
        if t >= ROWS and rng.random() < 0.4:
            s.wgt[t] = rng.integers(-128, 128, size=COLS, dtype=np.int64)
        if rng.random() < 0.7:
            s.act[t] = rng.integers(-128, 128, size=ROWS, dtype=np.int64)
    s.expected = contract_results(s)
    await tb.run_and_check(s)


@cocotb.test()
async def test_latency(dut: SimHandleBase) -> None:
    """The documented latency, and GEMM cycle counts against compiler/timing.py: counting
    the cycle a GEMM of n vectors is taken in as 1, its last result is on the port in cycle
    n + Rows + Cols, the model's cost; back-to-back GEMMs are taken max(n, Rows) apart."""
    tb = await new_tb(dut)
    rng = np.random.default_rng(5)

    # One GEMM (1 vector, many); then GEMMs in a row, shorter and longer than Rows.
    for sizes in ([1], [3 * ROWS], [1, 2 * ROWS, max(ROWS - 1, 1), ROWS + 1, 2]):
        s = Schedule.model([Tile.random(rng, n) for n in sizes])
        offset, done = await tb.run_and_check(s)
        assert np.diff(s.takes).tolist() == [max(n, ROWS) for n in sizes[:-1]]
        ends = np.cumsum(sizes)
        for n, take, end in zip(sizes, s.takes, ends, strict=True):
            gemm_done = done[end - n : end]
            assert gemm_done == list(range(gemm_done[0], gemm_done[0] + n)), "not one per cycle"
            cost = gemm_done[-1] - (offset + take) + 1
            assert cost == n + ROWS + COLS == model_gemm_cycles(n), f"GEMM of {n}: {cost}"

    # The tightest schedule: the first vector 1 - MulLead cycles after the first weight row
    # (before it for MulLead >= 2), every result exact and Rows + Cols - 1 after its vector.
    n = 3 * ROWS
    s = Schedule.tight([Tile.random(rng, n)], NEVER, NEVER)
    ((w, v),) = s.placed
    assert v[0] - w[0] == 1 - MUL_LEAD
    offset, done = await tb.run_and_check(s)
    assert done[-1] - (offset + w[0]) == 1 - MUL_LEAD + n - 1 + LATENCY
