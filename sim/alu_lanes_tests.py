"""cocotb tests of dpu_alu_lanes, the ALU instruction's arithmetic on one entry a cycle.

The reference model is written here from docs/isa.md (ALU) in exact Python integers,
wrapped to int32. Run by tests/test_rtl_alu_lanes.py, which sets DPU_ALU_COLS to the DUT's
Cols parameter.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, FallingEdge
from cocotb.types import LogicArray

from dpukit.compiler.isa import AluOp

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT32_EDGES = (INT32_MIN, INT32_MIN + 1, -2, -1, 0, 1, 2, INT32_MAX - 1, INT32_MAX)
OPS = [int(op) for op in AluOp]
ILLEGAL_OPS = [v for v in range(8) if v not in OPS]


def wrap32(x: int) -> int:
    return (x - INT32_MIN) % 2**32 + INT32_MIN


REF = {
    AluOp.MOV: lambda d, s, imm: s,
    AluOp.ADD: lambda d, s, imm: d + s,
    AluOp.MAX: lambda d, s, imm: max(d, s),
    # docs/isa.md: MULI multiplies by imm's low 25 bits, sign-extended
    AluOp.MULI: lambda d, s, imm: s * (((imm + 2**24) % 2**25) - 2**24),
    AluOp.ADDI: lambda d, s, imm: s + imm,
}


@dataclass(frozen=True)
class Entry:
    op: int
    dst: tuple[int, ...]
    src: tuple[int, ...]
    imm: int


def reference(e: Entry) -> tuple[bool, tuple[int, ...]]:
    """(illegal, out lanes): the ISA's ALU lane-wise with int32 wrap; 0s for an illegal op."""
    if e.op not in OPS:
        return True, (0,) * len(e.dst)
    f = REF[AluOp(e.op)]
    return False, tuple(wrap32(f(d, s, e.imm)) for d, s in zip(e.dst, e.src, strict=True))


def int32(rng: random.Random) -> int:
    if rng.random() < 0.3:
        return rng.choice(INT32_EDGES)
    return rng.randint(INT32_MIN, INT32_MAX)


def random_entry(rng: random.Random, cols: int, op: int | None = None) -> Entry:
    op = rng.choice(OPS) if op is None else op
    dst = tuple(int32(rng) for _ in range(cols))
    src = tuple(int32(rng) for _ in range(cols))
    return Entry(op, dst, src, int32(rng))


def pack(values: Iterable[int], cols: int) -> LogicArray:
    """int32 lanes little-endian into one packed vector, lane i at [32*i +: 32]."""
    word = sum((v & 0xFFFF_FFFF) << (32 * i) for i, v in enumerate(values))
    return LogicArray.from_unsigned(word, 32 * cols)


def unpack(value: LogicArray) -> tuple[int, ...]:
    word = value.to_unsigned()
    return tuple(wrap32((word >> (32 * i)) & 0xFFFF_FFFF) for i in range(len(value) // 32))


class AluTb:
    """Clock, reset, and a cycle loop that drives an entry (or idles) and checks the last."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.cols = len(dut.out_o.value) // 32
        assert self.cols == int(os.environ["DPU_ALU_COLS"]), "DUT built with another Cols"
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.checked = 0

    async def start(self) -> None:
        self.dut.valid_i.value = 0
        self.dut.rst_ni.value = 0
        Clock(self.dut.clk_i, 10, unit="ns").start()
        await ClockCycles(self.dut.clk_i, 3)
        self.dut.rst_ni.value = 1
        await FallingEdge(self.dut.clk_i)

    def put(self, e: Entry | None) -> None:
        """valid_i with entry e, or valid_i low with random junk on the data (e is None)."""
        dut = self.dut
        dut.valid_i.value = int(e is not None)
        if e is None:
            e = random_entry(self.rng, self.cols, self.rng.randrange(8))
        dut.op_i.value = e.op
        dut.dst_i.value = pack(e.dst, self.cols)
        dut.src_i.value = pack(e.src, self.cols)
        dut.imm_i.value = e.imm & 0xFFFF_FFFF

    async def run(self, items: Iterable[Entry | None]) -> None:
        """Drive one item per cycle; each entry must be on the outputs one cycle later."""
        dut = self.dut
        for item in items:
            self.put(item)
            await FallingEdge(dut.clk_i)  # the rising edge in between took the item
            assert int(dut.valid_o.value) == int(item is not None), "valid_o != delayed valid_i"
            if item is None:
                assert int(dut.illegal_o.value) == 0, "illegal_o without valid_o"
                continue
            want_illegal, want = reference(item)
            assert int(dut.illegal_o.value) == int(want_illegal), f"illegal_o for op {item.op}"
            got = unpack(dut.out_o.value)
            bad = [c for c in range(self.cols) if got[c] != want[c]]
            assert not bad, (
                f"op {item.op} lane {bad[0]}: got {got[bad[0]]}, want {want[bad[0]]} for "
                f"dst={item.dst[bad[0]]} src={item.src[bad[0]]} imm={item.imm}"
            )
            self.checked += 1
        self.put(None)


@cocotb.test()
@cocotb.parametrize(p_gap=[0.0, 0.3])
async def test_random_ops(dut: SimHandleBase, p_gap: float) -> None:
    """Every op on random int32 lanes (30% extremes), back to back or with idle cycles."""
    tb = AluTb(dut)
    await tb.start()
    entries = [random_entry(tb.rng, tb.cols, op) for op in OPS for _ in range(300)]
    tb.rng.shuffle(entries)
    items = [None if tb.rng.random() < p_gap else e for e in entries]
    await tb.run(items)
    assert tb.checked == sum(e is not None for e in items)


@cocotb.test()
async def test_extremes(dut: SimHandleBase) -> None:
    """Every op on every pair of int32 extremes, with every extreme as imm: wrap and sign."""
    tb = AluTb(dut)
    await tb.start()
    pairs = [(d, s) for d in INT32_EDGES for s in INT32_EDGES]
    pairs += [(0, 0)] * (-len(pairs) % tb.cols)
    entries = []
    for op in OPS:
        for imm in INT32_EDGES:
            for i in range(0, len(pairs), tb.cols):
                dst, src = zip(*pairs[i : i + tb.cols], strict=True)
                entries.append(Entry(op, dst, src, imm))
    # the table is right: the wrap cases really wrap
    assert reference(Entry(AluOp.ADD, (INT32_MAX,), (1,), 0))[1] == (INT32_MIN,)
    assert reference(Entry(AluOp.MULI, (0,), (INT32_MIN,), -1))[1] == (INT32_MIN,)
    assert reference(Entry(AluOp.MAX, (-1,), (INT32_MIN,), 0))[1] == (-1,)
    await tb.run(entries)
    assert tb.checked == len(entries)


@cocotb.test()
async def test_illegal_op(dut: SimHandleBase) -> None:
    """Ops 5..7 raise illegal_o with valid_o (and out 0), interleaved with legal ones."""
    tb = AluTb(dut)
    await tb.start()
    assert ILLEGAL_OPS == [5, 6, 7]
    ops = ILLEGAL_OPS * 10 + OPS * 6
    tb.rng.shuffle(ops)
    entries = [random_entry(tb.rng, tb.cols, op) for op in ops]
    await tb.run(entries)
    assert tb.checked == len(entries)


@cocotb.test()
async def test_reset_flushes(dut: SimHandleBase) -> None:
    """An entry in flight when reset is asserted never comes out."""
    tb = AluTb(dut)
    await tb.start()
    tb.put(random_entry(tb.rng, tb.cols, ILLEGAL_OPS[0]))
    dut.rst_ni.value = 0
    await FallingEdge(dut.clk_i)
    tb.put(None)
    dut.rst_ni.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk_i)
        assert int(dut.valid_o.value) == 0 and int(dut.illegal_o.value) == 0
