"""cocotb tests of dpu_post, the POST instruction's requantization of one ACC entry a cycle.

The reference model is written here from docs/isa.md (POST) in exact Python integers: only
the low POST_MULT_BITS (23) bits of mult count, unsigned. `test_matches_golden_round_shift`
ties the RTL to the golden model's rounding as well.
Run by tests/test_rtl_post.py, which sets DPU_POST_COLS to the DUT's Cols parameter.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.types import LogicArray

from dpukit.compiler.golden import post_mult, round_shift
from dpukit.compiler.isa import POST_MULT_BITS

LATENCY = 4  # documented in hw/rtl/dpu_post.sv
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT32_EDGES = (INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX)
MULT_LIMIT = 2**POST_MULT_BITS  # the multipliers the ISA uses: [0, MULT_LIMIT)


def wrap32(x: int) -> int:
    return (x - INT32_MIN) % 2**32 + INT32_MIN


@dataclass(frozen=True)
class Lane:
    acc: int
    bias: int
    mult: int
    shift: int  # 0..63


@dataclass(frozen=True)
class Entry:
    lanes: tuple[Lane, ...]
    zero_point: int = 0
    clamp_lo: int = -128
    clamp_hi: int = 127


def used_mult(mult: int) -> int:
    """The multiplier POST uses: mult's low POST_MULT_BITS bits, unsigned."""
    return mult % MULT_LIMIT


def requantize(lane: Lane, zero_point: int, lo: int, hi: int) -> int:
    """The ISA's POST on one lane; Fraction's round() rounds half to even."""
    v = wrap32(lane.acc + lane.bias)
    r = round(Fraction(v * used_mult(lane.mult), 2 ** (lane.shift & 63)))
    return min(max(r + zero_point, lo), hi)


def reference(e: Entry) -> tuple[int, ...]:
    return tuple(requantize(ln, e.zero_point, e.clamp_lo, e.clamp_hi) for ln in e.lanes)


# -- stimulus ------------------------------------------------------------------------------
def factor(p: int) -> tuple[int, int] | None:
    """Some int32 v and mult = 2^b < MULT_LIMIT with v * mult == p (p: small odd times 2^k)."""
    if p == 0:
        return 0, 0
    k = (p & -p).bit_length() - 1
    for b in range(min(k, POST_MULT_BITS - 1), -1, -1):
        v = p >> b
        if INT32_MIN <= v <= INT32_MAX:
            return v, 1 << b
    return None


def with_bias(rng: random.Random, v: int, mult: int, shift: int) -> Lane:
    """A lane whose wrapped acc + bias is v (a random bias, so the add often wraps) and whose
    used multiplier is mult, often with random bits above the used ones (the ISA ignores them).
    """
    bias = rng.randint(INT32_MIN, INT32_MAX)
    if rng.random() < 0.3:
        mult = wrap32(mult + rng.randrange(2**32 // MULT_LIMIT) * MULT_LIMIT)
    return Lane(wrap32(v - bias), bias, mult, shift)


def int32(rng: random.Random) -> int:
    if rng.random() < 0.1:
        return rng.choice(INT32_EDGES)
    return rng.randint(INT32_MIN, INT32_MAX)


def full_range_lane(rng: random.Random) -> Lane:
    """Every field random over all its bits (mult's used bits too)."""
    return Lane(int32(rng), int32(rng), int32(rng), rng.randrange(64))


def small_result_lane(rng: random.Random) -> Lane:
    """p = v * mult near t * 2^shift for a random t of a few hundred at most: r is visible."""
    while True:
        s = rng.randrange(54)
        bound = min(300, 2 ** (53 - s))  # |target| <= 2^53, below the largest |p|, 2^54
        target = Fraction(rng.randint(-4 * bound, 4 * bound), 4) * 2**s
        low = max(1, int(abs(target)).bit_length() - 30)  # |v| = |target| / mult < 2^31
        if target == 0 or low > POST_MULT_BITS:
            continue
        length = rng.randint(low, POST_MULT_BITS)
        mult = rng.randrange(2 ** (length - 1), 2**length)
        v = round(target / mult)
        if INT32_MIN <= v <= INT32_MAX:
            return with_bias(rng, v, mult, s)


def tie_lane(rng: random.Random) -> Lane:
    """p exactly halfway between two integers after the shift, or 2^k off it."""
    while True:
        s = rng.randint(1, 63)
        p = rng.randrange(-301, 302, 2) * 2 ** (s - 1)
        if rng.random() < 0.3:
            p += rng.choice((-1, 1)) * 2 ** max(0, s - 21)
        vm = factor(p)
        if vm is not None:
            return with_bias(rng, *vm, s)


def random_entry(rng: random.Random, cols: int) -> Entry:
    kinds = (full_range_lane, small_result_lane, tie_lane)
    lanes = tuple(rng.choices(kinds, weights=(3, 4, 2))[0](rng) for _ in range(cols))
    if rng.random() < 0.2:
        zp, lo, hi = rng.randint(-128, 127), -128, 127
    else:
        zp = rng.randint(-128, 127)
        lo, hi = sorted((rng.randint(-128, 127), rng.randint(-128, 127)))
    return Entry(lanes, zp, lo, hi)


def entries_of(lanes: list[Lane], cols: int, **out: int) -> list[Entry]:
    """Lanes packed cols to an entry, the last entry padded with lanes of zeros."""
    lanes = lanes + [Lane(0, 0, 0, 0)] * (-len(lanes) % cols)
    return [Entry(tuple(lanes[i : i + cols]), **out) for i in range(0, len(lanes), cols)]


def with_gaps(entries: Iterable[Entry], rng: random.Random, p_gap: float) -> Iterator[Entry | None]:
    """The entries, with runs of 1 to 3 idle cycles (None) inserted with probability p_gap."""
    for e in entries:
        if rng.random() < p_gap:
            yield from [None] * rng.randint(1, 3)
        yield e


# -- pins ----------------------------------------------------------------------------------
def pack(values: Iterable[int], bits: int, lanes: int) -> LogicArray:
    """Lanes little-endian into one packed vector, lane i at [bits*i +: bits]."""
    mask = (1 << bits) - 1
    word = sum((v & mask) << (bits * i) for i, v in enumerate(values))
    return LogicArray.from_unsigned(word, bits * lanes)


def unpack(value: LogicArray, bits: int, signed: bool) -> tuple[int, ...]:
    word, mask, top = value.to_unsigned(), (1 << bits) - 1, 1 << (bits - 1)
    fields = [(word >> (bits * i)) & mask for i in range(len(value) // bits)]
    return tuple(f - 2 * top if signed and f & top else f for f in fields)


class Driver:
    """Presents one entry per cycle with valid_i, or random junk with valid_i low."""

    def __init__(self, dut: SimHandleBase, cols: int, rng: random.Random):
        self.dut, self.cols, self.rng = dut, cols, rng

    def put(self, e: Entry | None) -> None:
        """valid_i high with the entry e, or low (e is None) with random junk on the data."""
        dut, cols = self.dut, self.cols
        dut.valid_i.value = int(e is not None)
        if e is None:
            e = random_entry(self.rng, cols)
        dut.acc_i.value = pack((ln.acc for ln in e.lanes), 32, cols)
        dut.bias_i.value = pack((ln.bias for ln in e.lanes), 32, cols)
        dut.mult_i.value = pack((ln.mult for ln in e.lanes), 32, cols)
        dut.shift_i.value = pack((ln.shift for ln in e.lanes), 6, cols)
        dut.zero_point_i.value = e.zero_point & 0xFF
        dut.clamp_lo_i.value = e.clamp_lo & 0xFF
        dut.clamp_hi_i.value = e.clamp_hi & 0xFF

    async def send(self, items: Iterable[Entry | None]) -> None:
        for item in items:
            await RisingEdge(self.dut.clk_i)
            self.put(item)
        await RisingEdge(self.dut.clk_i)
        self.dut.valid_i.value = 0


def read_entry(dut: SimHandleBase) -> Entry:
    acc, bias, mult = (unpack(s.value, 32, True) for s in (dut.acc_i, dut.bias_i, dut.mult_i))
    shift = unpack(dut.shift_i.value, 6, False)
    zp, lo, hi = (s.value.to_signed() for s in (dut.zero_point_i, dut.clamp_lo_i, dut.clamp_hi_i))
    lanes = tuple(Lane(*f) for f in zip(acc, bias, mult, shift, strict=True))
    return Entry(lanes, zp, lo, hi)


def read_out(dut: SimHandleBase) -> tuple[int, ...]:
    return unpack(dut.out_o.value, 8, True)


class Monitor:
    """After every rising edge records valid, and (cycle, sample()) when it is high."""

    def __init__(self, dut: SimHandleBase, valid: SimHandleBase, sample: Callable[[], object]):
        self.dut, self.valid, self.sample = dut, valid, sample
        self.trace: list[int] = []
        self.items: list[tuple[int, object]] = []

    async def run(self) -> None:
        while True:
            await RisingEdge(self.dut.clk_i)
            await ReadOnly()
            valid = int(self.valid.value)
            self.trace.append(valid)
            if valid:
                self.items.append((len(self.trace), self.sample()))


class PostTb:
    """Clock, reset, a driver, monitors on both sides and the checker."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.cols = len(dut.out_o.value) // 8
        assert self.cols == int(os.environ["DPU_POST_COLS"]), "DUT built with another Cols"
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.driver = Driver(dut, self.cols, self.rng)
        self.inputs = Monitor(dut, dut.valid_i, lambda: read_entry(dut))
        self.outputs = Monitor(dut, dut.valid_o, lambda: read_out(dut))

    async def start(self) -> None:
        self.dut.valid_i.value = 0
        self.dut.rst_ni.value = 0
        Clock(self.dut.clk_i, 10, unit="ns").start()
        await ClockCycles(self.dut.clk_i, 3)
        self.dut.rst_ni.value = 1
        await RisingEdge(self.dut.clk_i)
        cocotb.start_soon(self.inputs.run())
        cocotb.start_soon(self.outputs.run())

    async def run(self, items: Iterable[Entry | None]) -> None:
        """Drive the items, then wait until the last one has left the pipeline."""
        await self.driver.send(items)
        await ClockCycles(self.dut.clk_i, LATENCY + 2)

    def check(self, expect: Callable[[Entry], tuple[int, ...]] = reference) -> int:
        """Every entry seen at the input leaves LATENCY cycles later, as `expect` says."""
        sent, got = self.inputs.items, self.outputs.items
        assert len(got) == len(sent), f"{len(sent)} entries in, {len(got)} out"
        for (t_in, e), (t_out, y) in zip(sent, got, strict=True):
            assert t_out - t_in == LATENCY, f"entry of cycle {t_in} left in cycle {t_out}"
            want = expect(e)
            bad = [c for c in range(self.cols) if y[c] != want[c]]
            assert not bad, (
                f"cycle {t_in} lane {bad[0]}: got {y[bad[0]]}, want {want[bad[0]]} for "
                f"{e.lanes[bad[0]]} zp={e.zero_point} lo={e.clamp_lo} hi={e.clamp_hi}"
            )
        return len(sent)


# -- tests ---------------------------------------------------------------------------------
@cocotb.test()
@cocotb.parametrize(p_gap=[0.0, 0.3])
async def test_random_stream(dut: SimHandleBase, p_gap: float) -> None:
    """Random lanes over full int32 ranges, shifts 0..63, back to back or with idle gaps."""
    tb = PostTb(dut)
    await tb.start()
    entries = [random_entry(tb.rng, tb.cols) for _ in range(2000)]
    await tb.run(with_gaps(entries, tb.rng, p_gap))
    assert tb.check() == len(entries)


# (2q + 1) / 2 and its round-half-to-even result: even and odd quotients, both signs
TIES = [(1, 0), (3, 2), (5, 2), (7, 4), (-1, 0), (-3, -2), (-5, -2), (-7, -4)]
TIES += [(201, 100), (203, 102), (-201, -100), (-203, -102), (255, 128), (-255, -128)]


@cocotb.test()
async def test_ties(dut: SimHandleBase) -> None:
    """x.5 rounds to the even neighbour; a hair above or below it does not tie."""
    tb = PostTb(dut)
    await tb.start()
    lanes = []
    for odd, even in TIES:
        for s in (1, 2, 5, 17, 22, 23, 24, 31, 32, 40, 45, 47, 50, 52):
            p = odd * 2 ** (s - 1)
            eps = 2 ** max(0, s - 21)
            for p_, want in ((p, even), (p + eps, (odd + 1) // 2), (p - eps, (odd - 1) // 2)):
                vm = factor(p_)
                if vm is not None:
                    lane = with_bias(tb.rng, *vm, s)
                    assert requantize(lane, 0, -(2**20), 2**20) == want  # the table is right
                    lanes.append(lane)
    assert len(lanes) > 200
    # zero point -100 keeps the results of 128 and -128 inside the clamp
    for zp in (0, -100, 100):
        await tb.run(entries_of(lanes, tb.cols, zero_point=zp))
    tb.check()


@cocotb.test()
async def test_clamp_and_wrap(dut: SimHandleBase) -> None:
    """Clamp bounds hit exactly and by huge r (|p| up to 2^54); acc + bias wraps to int32."""
    tb = PostTb(dut)
    await tb.start()
    top = MULT_LIMIT - 1  # the largest multiplier; -1 and INT32_MIN use top and 0
    huge = [(INT32_MIN, top), (INT32_MAX, top), (INT32_MIN, -1), (INT32_MAX, INT32_MIN), (-1, 1)]
    entries = []
    for zp, lo, hi in [
        (0, -128, 127),
        (-128, -128, 127),
        (127, -128, 127),
        (-5, -5, 127),  # ReLU: lo is the zero point
        (-5, -5, 42),  # ReLU6-like
        (20, 7, 7),  # lo == hi
        (0, 50, -50),  # lo > hi: clamp_hi wins, as np.clip
    ]:
        rs = [b - zp + d for b in (lo, hi) for d in (-1, 0, 1)]
        rs += [255, 256, 383, 384, 511, 512, 513, -255, -256, -384, -385, -512, -513, -514]
        lanes = [with_bias(tb.rng, r, 1, 0) for r in rs]
        # the same r out of large products: p = r * 2^s
        lanes += [with_bias(tb.rng, *factor(r << s), s) for r in rs for s in (9, 23, 40)]
        lanes += [Lane(a, 0, m, s) for a, m in huge for s in (0, 1, 31, 53, 54, 62, 63)]
        entries += entries_of(lanes, tb.cols, zero_point=zp, clamp_lo=lo, clamp_hi=hi)
    # acc + bias wraps: v = -2^31 or 2^31 - 1, visible as -64 or 64 after >> 25
    wraps = [
        Lane(INT32_MAX, 1, 1, 25),
        Lane(INT32_MIN, -1, 1, 25),
        Lane(INT32_MAX, INT32_MAX, 1, 25),
    ]
    wraps += [Lane(INT32_MIN, INT32_MIN, 1, 25), Lane(2**30, 2**30, 1 + 5 * MULT_LIMIT, 25)]
    assert [requantize(ln, 0, -128, 127) for ln in wraps] == [-64, 64, 0, 0, -64]
    entries += entries_of(wraps, tb.cols)
    await tb.run(entries)
    tb.check()


@cocotb.test()
async def test_latency(dut: SimHandleBase) -> None:
    """valid_o is valid_i delayed by exactly LATENCY cycles: alone, in bursts, with gaps."""
    tb = PostTb(dut)
    await tb.start()
    e = random_entry(tb.rng, tb.cols)
    await tb.run([e])
    assert tb.inputs.trace.count(1) == 1 and tb.outputs.trace.count(1) == 1
    t_in, t_out = tb.inputs.trace.index(1), tb.outputs.trace.index(1)
    assert t_out - t_in == LATENCY, f"latency {t_out - t_in}, documented {LATENCY}"
    pattern = [1, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1]
    await tb.run(random_entry(tb.rng, tb.cols) if v else None for v in pattern)
    assert tb.outputs.trace == [0] * LATENCY + tb.inputs.trace[:-LATENCY]
    assert tb.check() == 1 + sum(pattern)


@cocotb.test()
async def test_reset_flushes(dut: SimHandleBase) -> None:
    """Entries in flight when reset is asserted never come out."""
    tb = PostTb(dut)
    await tb.start()
    await tb.driver.send(random_entry(tb.rng, tb.cols) for _ in range(3))
    dut.rst_ni.value = 0
    await ReadOnly()
    assert int(dut.valid_o.value) == 0
    await RisingEdge(dut.clk_i)
    dut.rst_ni.value = 1
    await ClockCycles(dut.clk_i, LATENCY + 2)
    assert tb.outputs.trace.count(1) == 0


@cocotb.test()
async def test_matches_golden_round_shift(dut: SimHandleBase) -> None:
    """The DUT equals the golden model's multiplier rule and rounding (golden.post_mult,
    golden.round_shift) on random lanes."""
    tb = PostTb(dut)
    await tb.start()
    rng = tb.rng
    kinds = (small_result_lane, tie_lane, full_range_lane)
    lanes = [rng.choices(kinds, weights=(6, 3, 1))[0](rng) for _ in range(3000)]
    entries = entries_of(lanes, tb.cols)

    def golden(e: Entry) -> tuple[int, ...]:
        v = np.array([wrap32(ln.acc + ln.bias) for ln in e.lanes], np.int64)
        p = v * post_mult(np.array([ln.mult for ln in e.lanes], np.int32))
        s = np.array([ln.shift for ln in e.lanes], np.int64)
        return tuple(int(y) for y in np.clip(round_shift(p, s), -128, 127))

    assert all(golden(e) == reference(e) for e in entries)
    visible = sum(-128 < y < 127 for e in entries for y in golden(e))
    assert visible > len(lanes) // 2, "most results must fall inside the output range"
    await tb.run(with_gaps(entries, rng, 0.2))
    tb.check(golden)
