"""cocotb tests of dpu_regs, the AXI4-Lite control/status register file.

Offsets, fields and reset values come from dpukit.host.regmap, the same map the host's
register driver uses. Every channel of the AXI4-Lite master gets a pause generator, so
the DUT sees idle cycles and B/R backpressure. Run by tests/test_rtl_regs.py, which sets
DPU_REGS_FINGERPRINT to the DUT's ConfigFingerprint parameter (hex).
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator

import cocotb
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from dpukit.host import regmap
from dpukit.host.regmap import COUNTERS, REGISTERS, Access, register

MASK32 = 0xFFFF_FFFF


def bit(reg: str, field: str) -> int:
    return 1 << register(reg).field(field).lsb


def pauses(rng: random.Random) -> Iterator[int]:
    """Idle cycles on a channel: runs of 0 to 3, about a third of the time."""
    while True:
        yield from [0] * rng.randint(0, 3)
        yield from [1] * rng.randint(0, 2)


class CoreModel:
    """Drives the core-side inputs: status levels, done pulses and the 64-bit counters."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.counters = [0] * len(COUNTERS)
        self.step = [0] * len(COUNTERS)  # added to each counter every clock cycle
        dut.busy_i.value = 0
        dut.done_i.value = 0
        dut.error_i.value = 0
        dut.error_code_i.value = 0
        self.put_counters()

    def put_counters(self) -> None:
        word = sum((c & (2**64 - 1)) << (64 * i) for i, c in enumerate(self.counters))
        self.dut.counters_i.value = word

    async def run_counters(self) -> None:
        while True:
            await RisingEdge(self.dut.clk_i)
            self.counters = [c + s for c, s in zip(self.counters, self.step, strict=True)]
            self.put_counters()

    async def pulse_done(self) -> None:
        await RisingEdge(self.dut.clk_i)
        self.dut.done_i.value = 1
        await RisingEdge(self.dut.clk_i)
        self.dut.done_i.value = 0


class PulseMonitor:
    """Records the clock cycles in which a one-bit output is high."""

    def __init__(self, dut: SimHandleBase, signal: SimHandleBase):
        self.dut, self.signal = dut, signal
        self.cycles: list[int] = []
        self.cycle = 0

    async def run(self) -> None:
        while True:
            await RisingEdge(self.dut.clk_i)
            await ReadOnly()
            self.cycle += 1
            if int(self.signal.value):
                self.cycles.append(self.cycle)

    def widths(self) -> list[int]:
        """Lengths of the runs of consecutive high cycles."""
        runs: list[int] = []
        for prev, cur in itertools.pairwise([None, *self.cycles]):
            if prev is not None and cur == prev + 1:
                runs[-1] += 1
            else:
                runs.append(1)
        return runs


class RegsTb:
    """Clock, reset, the AXI4-Lite master with pauses on every channel, the core model."""

    def __init__(self, dut: SimHandleBase, pause: bool = True):
        self.dut = dut
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.core = CoreModel(dut)
        self.axil = AxiLiteMaster(
            AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk_i, dut.rst_ni, reset_active_level=False
        )
        if pause:
            w, r = self.axil.write_if, self.axil.read_if
            for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel):
                ch.set_pause_generator(pauses(random.Random(self.rng.random())))
        self.start = PulseMonitor(dut, dut.start_o)
        self.soft_reset = PulseMonitor(dut, dut.soft_reset_o)

    async def reset(self) -> None:
        self.dut.rst_ni.value = 0
        Clock(self.dut.clk_i, 10, unit="ns").start()
        await ClockCycles(self.dut.clk_i, 3)
        self.dut.rst_ni.value = 1
        await RisingEdge(self.dut.clk_i)
        cocotb.start_soon(self.core.run_counters())
        cocotb.start_soon(self.start.run())
        cocotb.start_soon(self.soft_reset.run())

    async def read(self, name_or_offset: str | int, resp: AxiResp = AxiResp.OKAY) -> int:
        addr = name_or_offset if isinstance(name_or_offset, int) else regmap.offset(name_or_offset)
        r = await self.axil.read(addr, 4)
        assert r.resp == resp, f"read 0x{addr:03x}: {r.resp!r}, want {resp!r}"
        return int.from_bytes(r.data, "little")

    async def write(
        self, name_or_offset: str | int, value: int, resp: AxiResp = AxiResp.OKAY
    ) -> None:
        addr = name_or_offset if isinstance(name_or_offset, int) else regmap.offset(name_or_offset)
        w = await self.axil.write(addr, (value & MASK32).to_bytes(4, "little"))
        assert w.resp == resp, f"write 0x{addr:03x}: {w.resp!r}, want {resp!r}"


RW_REGS = [r.name for r in REGISTERS if r.access is Access.RW and r.name != "CTRL"]
RO_REGS = [r.name for r in REGISTERS if r.access is Access.RO]


# -- tests ---------------------------------------------------------------------------------
@cocotb.test()
async def test_reset_values(dut: SimHandleBase) -> None:
    """Every register but the fingerprint reads its reset value from the map."""
    tb = RegsTb(dut)
    await tb.reset()
    for r in REGISTERS:
        if not r.name.startswith("CONFIG_FINGERPRINT"):
            assert await tb.read(r.name) == r.reset, f"{r.name} after reset"
    assert int(dut.irq_o.value) == 0 and int(dut.instr_base_o.value) == 0


@cocotb.test()
@cocotb.parametrize(pause=[False, True])
async def test_rw_round_trip(dut: SimHandleBase, pause: bool) -> None:
    """RW registers keep what is written, honour byte strobes and drive the core outputs."""
    tb = RegsTb(dut, pause)
    await tb.reset()
    want = {name: tb.rng.getrandbits(32) for name in RW_REGS}
    for name, value in want.items():
        await tb.write(name, value)
    for name in tb.rng.sample(RW_REGS, len(RW_REGS)):
        assert await tb.read(name) == want[name], name
    assert int(dut.instr_base_o.value) == want["INSTR_BASE_HI"] << 32 | want["INSTR_BASE_LO"]
    assert int(dut.data_base_o.value) == want["DATA_BASE_HI"] << 32 | want["DATA_BASE_LO"]
    assert int(dut.instr_count_o.value) == want["INSTR_COUNT"]
    assert int(dut.data_limit_o.value) == want["DATA_LIMIT"]
    # one byte lane at a time
    off = regmap.offset("DATA_LIMIT")
    await tb.write("DATA_LIMIT", 0x11223344)
    await tb.axil.write(off + 2, b"\xab")
    assert await tb.read("DATA_LIMIT") == 0x11AB3344
    await tb.axil.write(off, b"\xcd\xef")
    assert await tb.read("DATA_LIMIT") == 0x11ABEFCD
    # CTRL: only irq_enable holds a value; other bits read 0
    await tb.write("CTRL", MASK32 & ~(bit("CTRL", "start") | bit("CTRL", "soft_reset")))
    assert await tb.read("CTRL") == bit("CTRL", "irq_enable")
    await tb.write("CTRL", 0)
    assert await tb.read("CTRL") == 0


@cocotb.test()
async def test_ro_not_writable(dut: SimHandleBase) -> None:
    """Writes to RO registers answer OKAY and change nothing."""
    tb = RegsTb(dut)
    await tb.reset()
    dut.busy_i.value = 1
    dut.error_i.value = 1
    dut.error_code_i.value = 0x5A
    before = {name: await tb.read(name) for name in RO_REGS}
    for name in RO_REGS:
        await tb.write(name, ~before[name])
    for name in RO_REGS:
        assert await tb.read(name) == before[name], name
    status = bit("STATUS", "busy") | bit("STATUS", "error")
    assert before["STATUS"] == status and before["ERROR_CODE"] == 0x5A


@cocotb.test()
async def test_w1c_and_irq(dut: SimHandleBase) -> None:
    """done_i sets IRQ_STATUS.done and STATUS.done; W1C clears; irq_o needs irq_enable."""
    tb = RegsTb(dut)
    await tb.reset()
    done = bit("IRQ_STATUS", "done")
    await tb.core.pulse_done()
    assert await tb.read("IRQ_STATUS") == done
    assert await tb.read("STATUS") == bit("STATUS", "done")
    assert int(dut.irq_o.value) == 0, "irq_o without irq_enable"
    await tb.write("CTRL", bit("CTRL", "irq_enable"))
    await ReadOnly()
    assert int(dut.irq_o.value) == 1
    await tb.write("IRQ_STATUS", ~done)  # writing 0 to the bit has no effect
    assert await tb.read("IRQ_STATUS") == done and int(dut.irq_o.value) == 1
    await tb.write("IRQ_STATUS", done)
    assert await tb.read("IRQ_STATUS") == 0
    await ReadOnly()
    assert int(dut.irq_o.value) == 0
    assert await tb.read("STATUS") == bit("STATUS", "done"), "STATUS.done is not W1C"
    await tb.core.pulse_done()
    await ReadOnly()
    assert int(dut.irq_o.value) == 1
    await tb.write("CTRL", 0)
    await ReadOnly()
    assert int(dut.irq_o.value) == 0, "irq_enable masks irq_o"
    assert await tb.read("IRQ_STATUS") == done, "masking does not clear the status"
    # start clears STATUS.done, not IRQ_STATUS
    await tb.write("CTRL", bit("CTRL", "start"))
    assert await tb.read("STATUS") == 0
    assert await tb.read("IRQ_STATUS") == done


@cocotb.test()
async def test_start_and_soft_reset_pulses(dut: SimHandleBase) -> None:
    """CTRL.start and CTRL.soft_reset pulse their output for exactly one cycle, read 0."""
    tb = RegsTb(dut)
    await tb.reset()
    start, soft = bit("CTRL", "start"), bit("CTRL", "soft_reset")
    await tb.write("CTRL", start)
    await ClockCycles(dut.clk_i, 3)
    assert tb.start.widths() == [1] and tb.soft_reset.widths() == []
    assert await tb.read("CTRL") == 0
    await tb.write("CTRL", soft)
    await ClockCycles(dut.clk_i, 3)
    assert tb.start.widths() == [1] and tb.soft_reset.widths() == [1]
    await tb.write("CTRL", start | soft | bit("CTRL", "irq_enable"))
    await ClockCycles(dut.clk_i, 3)
    assert tb.start.widths() == [1, 1] and tb.soft_reset.widths() == [1, 1]
    assert tb.start.cycles[-1] == tb.soft_reset.cycles[-1]
    assert await tb.read("CTRL") == bit("CTRL", "irq_enable")
    for _ in range(4):  # back to back: one pulse per write
        await tb.write("CTRL", start)
    await ClockCycles(dut.clk_i, 3)
    assert len(tb.start.cycles) == 6 and set(tb.start.widths()) == {1}
    await tb.write("CTRL", 0)  # writing 0 pulses nothing
    await tb.axil.write(regmap.offset("CTRL") + 1, b"\xff")  # start is in byte lane 0
    await ClockCycles(dut.clk_i, 3)
    assert len(tb.start.cycles) == 6 and len(tb.soft_reset.cycles) == 2


@cocotb.test()
async def test_counter_lo_hi_latching(dut: SimHandleBase) -> None:
    """LO then HI is one snapshot of a running counter, also when HI carries in between."""
    tb = RegsTb(dut)
    await tb.reset()
    core = tb.core
    core.step = [1 + i % 5 for i in range(len(COUNTERS))]
    straddled = 0
    for _ in range(4):
        for i, (name, _doc) in enumerate(COUNTERS):
            # a few cycles below a carry into bit 32, so the carry falls between LO and HI
            core.counters[i] = (i + 1 << 40) + 2**32 - core.step[i] * tb.rng.randint(1, 6)
            before = core.counters[i]
            lo = await tb.read(f"{name}_LO")
            await ClockCycles(dut.clk_i, tb.rng.randint(0, 20))  # the counter keeps running
            hi = await tb.read(f"{name}_HI")
            value = hi << 32 | lo
            assert before <= value <= core.counters[i], f"{name}: {value:#x} not a snapshot"
            assert (value - before) % core.step[i] == 0, f"{name}: {value:#x} torn"
            straddled += value >> 32 != core.counters[i] >> 32
    assert straddled > 0, "no LO/HI pair straddled a carry"

    # every counter has its own latch: interleaved pairs stay consistent
    core.step = [0] * len(COUNTERS)
    core.counters = [(i + 1) * 0x1_0000_0001 for i in range(len(COUNTERS))]
    await ClockCycles(dut.clk_i, 2)
    names = [n for n, _ in COUNTERS]
    los = [await tb.read(f"{n}_LO") for n in names]
    core.counters = [2**64 - 1] * len(COUNTERS)  # the live values change before HI is read
    await ClockCycles(dut.clk_i, 2)
    his = [await tb.read(f"{n}_HI") for n in reversed(names)][::-1]
    assert los == his == [i + 1 for i in range(len(COUNTERS))]
    assert await tb.read(f"{names[0]}_LO") == MASK32
    assert await tb.read(f"{names[0]}_HI") == MASK32


@cocotb.test()
async def test_unmapped_address_error(dut: SimHandleBase) -> None:
    """Reads and writes of unmapped offsets answer SLVERR; writes there change nothing."""
    tb = RegsTb(dut)
    await tb.reset()
    mapped = {r.offset for r in REGISTERS}
    top = 1 << len(dut.s_axil_awaddr)
    holes = [o for o in range(0, top, 4) if o not in mapped]
    picks = [0x030, 0x03C, max(mapped) + 4, top - 4, *tb.rng.sample(holes, 8)]
    await tb.write("INSTR_COUNT", 0x1234)
    for off in picks:
        assert off not in mapped
        assert await tb.read(off, AxiResp.SLVERR) == 0, f"0x{off:x}"
        await tb.write(off, MASK32, AxiResp.SLVERR)
    for r in REGISTERS:
        if r.access is not Access.RO:
            want = 0x1234 if r.name == "INSTR_COUNT" else r.reset
            assert await tb.read(r.name) == want, r.name
    # an error response does not disturb the next access
    await tb.write("INSTR_COUNT", 7)
    assert await tb.read("INSTR_COUNT") == 7
    assert tb.start.cycles == [] and tb.soft_reset.cycles == []


@cocotb.test()
async def test_fingerprint_readout(dut: SimHandleBase) -> None:
    """CONFIG_FINGERPRINT_LO/HI read the ConfigFingerprint parameter the DUT was built with."""
    tb = RegsTb(dut)
    await tb.reset()
    want = regmap.fingerprint_value(os.environ["DPU_REGS_FINGERPRINT"])
    lo = await tb.read("CONFIG_FINGERPRINT_LO")
    hi = await tb.read("CONFIG_FINGERPRINT_HI")
    assert hi << 32 | lo == want, f"{hi << 32 | lo:016x} != {want:016x}"


@cocotb.test()
async def test_concurrent_traffic(dut: SimHandleBase) -> None:
    """Reads and writes in flight together, with pauses everywhere, all land correctly."""
    tb = RegsTb(dut)
    await tb.reset()
    names = ["INSTR_BASE_LO", "INSTR_COUNT", "DATA_LIMIT", "DATA_BASE_HI"]
    for _ in range(20):
        values = {n: tb.rng.getrandbits(32) for n in names}
        writes = [cocotb.start_soon(tb.write(n, v)) for n, v in values.items()]
        reads = [cocotb.start_soon(tb.read("STATUS")) for _ in range(3)]
        for t in writes + reads:
            await t
        for n, v in values.items():
            assert await tb.read(n) == v, n
