"""cocotb tests of dpu_top at the bus protocol level: the host's view of the DPU.

The DPU is driven as the host's register driver drives it (cocotbext-axi AxiLiteMaster on
s_axil) and reads and writes a cocotbext-axi AxiRam on m_axi, with random pauses on every
channel of both buses. Whole networks run in the Verilator-native harness instead
(sim/rtl_harness.py); this bench checks the protocol paths the harness takes for granted.

The pytest runner (tests/test_rtl_top.py) writes the case file DPU_TOP_CASE (.npz): the
instruction stream, the DRAM window before, the golden model's DRAM window after, and the
config's fingerprint.
"""

from __future__ import annotations

import itertools
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiRamRead, AxiReadBus

from dpukit.compiler import isa
from dpukit.compiler.isa import Buffer, Opcode
from dpukit.host import regmap
from dpukit.host.regmap import ErrorCode, register

INSTR_BASE = 0x1000
DATA_BASE = 0x4000
RAM_BYTES = 0x10000


def bit(reg: str, field: str) -> int:
    return register(reg).field(field).mask


class Tb:
    def __init__(self, dut: SimHandleBase, seed: int):
        self.dut = dut
        self.rng = random.Random(seed)
        cocotb.start_soon(Clock(dut.clk_i, 10, unit="ns").start())
        self.regs = AxiLiteMaster(
            AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk_i, dut.rst_ni, reset_active_level=False
        )
        self.ram = AxiRam(
            AxiBus.from_prefix(dut, "m_axi"),
            dut.clk_i,
            dut.rst_ni,
            reset_active_level=False,
            size=RAM_BYTES,
        )
        # the instruction port reads the same memory
        self.instr_ram = AxiRamRead(
            AxiReadBus.from_prefix(dut, "m_axi_instr"),
            dut.clk_i,
            dut.rst_ni,
            reset_active_level=False,
            mem=self.ram.mem,
        )
        for channel in (
            self.regs.write_if.aw_channel,
            self.regs.write_if.w_channel,
            self.regs.write_if.b_channel,
            self.regs.read_if.ar_channel,
            self.regs.read_if.r_channel,
            self.ram.write_if.aw_channel,
            self.ram.write_if.w_channel,
            self.ram.write_if.b_channel,
            self.ram.read_if.ar_channel,
            self.ram.read_if.r_channel,
            self.instr_ram.ar_channel,
            self.instr_ram.r_channel,
        ):
            channel.set_pause_generator(
                itertools.cycle([self.rng.random() < 0.3 for _ in range(89)])
            )

    async def reset(self) -> None:
        self.dut.rst_ni.value = 0
        await ClockCycles(self.dut.clk_i, 5)
        self.dut.rst_ni.value = 1
        await ClockCycles(self.dut.clk_i, 2)

    async def write(self, name: str, value: int) -> None:
        await self.regs.write_dword(regmap.offset(name), value)

    async def read(self, name: str) -> int:
        return await self.regs.read_dword(regmap.offset(name))

    async def run(self, stream: bytes, dram: np.ndarray) -> None:
        """Load the program, start it with the interrupt enabled, wait for irq_o."""
        self.ram.write(INSTR_BASE, stream)
        self.ram.write(DATA_BASE, dram.tobytes())
        await self.write("INSTR_BASE_LO", INSTR_BASE)
        await self.write("INSTR_COUNT", len(stream) // 32)
        await self.write("DATA_BASE_LO", DATA_BASE)
        await self.write("DATA_LIMIT", dram.size)
        await self.write("CTRL", bit("CTRL", "irq_enable") | bit("CTRL", "start"))
        for _ in range(200_000):
            await RisingEdge(self.dut.clk_i)
            if self.dut.irq_o.value == 1:
                return
        raise AssertionError("no interrupt: the DPU did not finish")


def case() -> dict[str, np.ndarray]:
    return dict(np.load(os.environ["DPU_TOP_CASE"]))


@cocotb.test()
async def test_program_matches_golden(dut: SimHandleBase) -> None:
    """A program runs to done with an interrupt; DRAM equals the golden model's, status is
    clean, the interrupt clears by W1C, the busy cycles counted are plausible."""
    c = case()
    tb = Tb(dut, seed=1)
    await tb.reset()
    await tb.run(c["stream"].tobytes(), c["dram_before"])
    status = await tb.read("STATUS")
    assert status & bit("STATUS", "done") and not status & bit("STATUS", "error"), hex(status)
    assert not status & bit("STATUS", "busy")
    got = np.frombuffer(tb.ram.read(DATA_BASE, c["dram_after"].size), np.uint8)
    np.testing.assert_array_equal(got, c["dram_after"])
    # nothing written outside the window, instructions untouched
    assert tb.ram.read(INSTR_BASE, c["stream"].size) == c["stream"].tobytes()
    assert not any(tb.ram.read(DATA_BASE + c["dram_after"].size, 0x1000))
    # the counters read over the bus equal the golden model's activity
    for name in ("MAC_CYCLES", "DRAM_READ_BEATS", "DRAM_WRITE_BEATS", "ACC_WRITES", "OUT_READS"):
        value = await tb.read(f"{name}_LO") | (await tb.read(f"{name}_HI")) << 32
        assert value == int(c[name.lower()]), (name, value, int(c[name.lower()]))
    assert await tb.read("CYCLES_LO") > int(c["mac_cycles"])
    await tb.write("IRQ_STATUS", bit("IRQ_STATUS", "done"))
    await ClockCycles(dut.clk_i, 2)
    assert dut.irq_o.value == 0


@cocotb.test()
async def test_error_then_soft_reset_then_rerun(dut: SimHandleBase) -> None:
    """An illegal instruction stops the DPU with ERROR_CODE (while a LOAD of 800 entries
    runs: the core winds it down, under the bus pauses, before it reports done); soft reset
    clears the status; the same core then runs a good program to the golden result."""
    c = case()
    tb = Tb(dut, seed=2)
    await tb.reset()
    pads = dict.fromkeys(("pad_top", "pad_bottom", "pad_left", "pad_right", "pad_value"), 0)
    long_load = isa.make(
        Opcode.LOAD,
        buffer=Buffer.INP,
        sram_base=0,
        dram_offset=0,
        y_size=8,
        x_size=100,
        y_stride=400,
        x_stride=4,
        elem_bytes=1,
        **pads,
    )
    bad = isa.to_bytes([long_load]) + (6).to_bytes(isa.INSTR_BYTES, "little")
    await tb.run(bad, c["dram_before"])
    status = await tb.read("STATUS")
    assert status & bit("STATUS", "error") and status & bit("STATUS", "done")
    assert await tb.read("ERROR_CODE") == ErrorCode.ILLEGAL_OPCODE
    await tb.write("CTRL", bit("CTRL", "soft_reset"))
    await ClockCycles(dut.clk_i, 2)
    assert await tb.read("STATUS") == 0
    assert await tb.read("ERROR_CODE") == 0
    await tb.write("IRQ_STATUS", bit("IRQ_STATUS", "done"))
    await tb.run(c["stream"].tobytes(), c["dram_before"])
    assert not await tb.read("STATUS") & bit("STATUS", "error")
    got = np.frombuffer(tb.ram.read(DATA_BASE, c["dram_after"].size), np.uint8)
    np.testing.assert_array_equal(got, c["dram_after"])


@cocotb.test()
async def test_fingerprint(dut: SimHandleBase) -> None:
    """CONFIG_FINGERPRINT reads the config the RTL was built for."""
    tb = Tb(dut, seed=3)
    await tb.reset()
    lo, hi = await tb.read("CONFIG_FINGERPRINT_LO"), await tb.read("CONFIG_FINGERPRINT_HI")
    assert (hi << 32 | lo) == int(case()["fingerprint"])
