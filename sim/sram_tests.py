"""cocotb tests of dpu_sram, the simple dual-port block RAM (one write, one read port).

The reference model is a dict of the written entries plus the read register, following
the header of hw/rtl/dpu_sram.sv: 1-cycle synchronous read, read-first on a same-address
read during write, rdata_o held while re_i is low. Run by tests/test_rtl_sram.py, which sets
DPU_SRAM_DEPTH to the DUT's Depth parameter.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, FallingEdge


@dataclass(frozen=True)
class Op:
    """One cycle of both ports; None for an idle port."""

    write: tuple[int, int] | None = None  # (address, data)
    read: int | None = None  # address


class Model:
    """Written entries and the read register; None where the RTL's value is undefined."""

    def __init__(self) -> None:
        self.mem: dict[int, int] = {}
        self.rdata: int | None = None

    def step(self, op: Op) -> None:
        """One rising edge: the read samples the memory before this edge's write (read-first)."""
        if op.read is not None:
            self.rdata = self.mem.get(op.read)
        if op.write is not None:
            addr, data = op.write
            self.mem[addr] = data


class SramTb:
    """Clock, a driver of both ports on falling edges, the model and the checker."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.depth = int(os.environ["DPU_SRAM_DEPTH"])
        self.width = len(dut.wdata_i.value)
        assert len(dut.rdata_o.value) == self.width
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.model = Model()
        self.checked = 0

    async def start(self) -> None:
        self.put(Op())
        Clock(self.dut.clk_i, 10, unit="ns").start()
        await ClockCycles(self.dut.clk_i, 2)
        await FallingEdge(self.dut.clk_i)

    def put(self, op: Op) -> None:
        """Drive one cycle's ports; an idle port gets random junk on its address and data."""
        dut, rng = self.dut, self.rng
        addr, data = op.write or (rng.randrange(self.depth), rng.getrandbits(self.width))
        dut.we_i.value = int(op.write is not None)
        dut.waddr_i.value = addr
        dut.wdata_i.value = data
        dut.re_i.value = int(op.read is not None)
        dut.raddr_i.value = rng.randrange(self.depth) if op.read is None else op.read

    async def run(self, ops: list[Op]) -> None:
        """One op per cycle; after each rising edge rdata_o must equal the model's."""
        for op in ops:
            self.put(op)
            await FallingEdge(self.dut.clk_i)  # the rising edge in between took the op
            self.model.step(op)
            want = self.model.rdata
            if want is not None:
                got = self.dut.rdata_o.value.to_unsigned()
                assert got == want, f"after {op}: rdata_o {got:#x}, want {want:#x}"
                self.checked += 1
        self.put(Op())

    def address(self, hot: list[int]) -> int:
        """Mostly one of the hot addresses (collisions, first and last entry), else any."""
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(hot)
        return self.rng.randrange(self.depth)

    def random_ops(self, n: int, p_write: float, p_read: float) -> list[Op]:
        rng = self.rng
        hot = [0, self.depth - 1, *(rng.randrange(self.depth) for _ in range(6))]
        ops = []
        for _ in range(n):
            w = (self.address(hot), rng.getrandbits(self.width)) if rng.random() < p_write else None
            ops.append(Op(w, self.address(hot) if rng.random() < p_read else None))
        return ops


@cocotb.test()
@cocotb.parametrize(load=[(0.5, 0.5), (0.9, 0.9), (0.2, 0.8)])
async def test_random(dut: SimHandleBase, load: tuple[float, float]) -> None:
    """Random writes and reads, many to a few hot addresses, against the dict model."""
    tb = SramTb(dut)
    await tb.start()
    await tb.run(tb.random_ops(3000, *load))
    assert tb.checked > 1000


@cocotb.test()
async def test_fill_and_read_back(dut: SimHandleBase) -> None:
    """Every entry written, then read back in random order, back to back."""
    tb = SramTb(dut)
    await tb.start()
    await tb.run([Op(write=(a, tb.rng.getrandbits(tb.width))) for a in range(tb.depth)])
    order = list(range(tb.depth))
    tb.rng.shuffle(order)
    await tb.run([Op(read=a) for a in order])
    assert tb.checked == tb.depth


@cocotb.test()
async def test_read_during_write(dut: SimHandleBase) -> None:
    """Same address read and written at one edge: read-first (old data), new data next."""
    tb = SramTb(dut)
    await tb.start()
    a, old = tb.depth - 1, tb.rng.getrandbits(tb.width)
    new = old ^ (2**tb.width - 1)  # every bit differs
    await tb.run([Op(write=(a, old))])
    await tb.run([Op(write=(a, new), read=a)])
    assert dut.rdata_o.value.to_unsigned() == old
    await tb.run([Op(read=a)])
    assert dut.rdata_o.value.to_unsigned() == new
    # a different address written at the same edge does not disturb the read
    b = 0
    await tb.run([Op(write=(b, old)), Op(write=(a, new ^ 1), read=b), Op(read=a)])
    assert dut.rdata_o.value.to_unsigned() == new ^ 1
    assert tb.checked == 5


@cocotb.test()
async def test_rdata_holds_without_re(dut: SimHandleBase) -> None:
    """With re_i low rdata_o keeps its value, even when the entry it came from is rewritten."""
    tb = SramTb(dut)
    await tb.start()
    a = tb.rng.randrange(tb.depth)
    value = tb.rng.getrandbits(tb.width)
    await tb.run([Op(write=(a, value)), Op(read=a)])
    ops = [Op(write=(a, tb.rng.getrandbits(tb.width))) for _ in range(5)]
    await tb.run(ops + [Op()] * 3)
    assert dut.rdata_o.value.to_unsigned() == value
    assert tb.checked == 1 + len(ops) + 3
