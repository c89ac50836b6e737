"""cocotb tests of dpu_store_dma, the STORE instruction's DMA (OUT entries -> AXI4 writes).

The reference is the ISA's STORE (docs/isa.md; the golden model's `_store`) applied with
numpy, entry by entry in raster order, to a copy of the DRAM; the whole DRAM image is
compared afterwards, so bytes outside the stored ones must be untouched. The expected AW
requests are `Dma.runs` split into bursts, and the cycle bound is the cycle model's STORE
cost (compiler/timing.py) plus OVERHEAD. DRAM is a cocotbext-axi AxiRam with random
backpressure on AW, W and B, or, for the cycle counts, the fixed-latency LatencyRam; the
OUT buffer is a numpy array answering the synchronous read port; monitors check every AW
request is a legal burst and AW and W hold still while they wait. Run by
tests/test_rtl_store_dma.py, which sets DPU_MAX_BURST to the DUT's MaxBurstBeats and
DPU_DRAM_LATENCY to the latency of the hardware config the parameters come from.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from dpukit.compiler.isa import Instr, Opcode, make
from dpukit.sim.axi_monitor import Burst, BurstMonitor, HoldCheck
from dpukit.sim.load_dma_tests import (
    BASE,
    LIMIT,
    RAM_SIZE,
    DmaTb,
    decode,
    expected_bursts,
    streaming_shapes,
    window_edges,
)

OUT_ENTRIES = 1 << 16  # rd_addr_o is 16 bits
ERR_NONE, ERR_RANGE, ERR_AXI, ERR_ELEM_BYTES = 0, 1, 2, 3  # error_o, hw/rtl/dpu_store_dma.sv
# Cycles from the accepting edge to done_o beyond the model's dram_latency + max(beats,
# entries): the first read one cycle after the accepting edge, its entry into the byte queue
# the next, then its W beat; one more when the last entry straddles two beats.
OVERHEAD = 3


@dataclass(frozen=True)
class Result:
    error: int
    reads: list[int]
    aws: list[Burst]
    cycles: int  # accepting edge to the first edge of the done_o cycle


def reference(instr: Instr, dram: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The DRAM image after the STORE: OUT entries' first elem_bytes lanes, raster order."""
    d = decode(instr)
    want = dram.copy()
    if not d.has_data:
        return want
    for z, y, x in itertools.product(range(d.planes), range(d.ys), range(d.xs)):
        a = BASE + d.offset + z * d.z_stride + y * d.y_stride + x * d.x_stride
        entry = (d.sram + (z * d.ys + y) * d.xs + x) % OUT_ENTRIES
        want[a : a + d.eb] = out[entry, : d.eb]
    return want


# -- stimulus ------------------------------------------------------------------------------
def store(**fields: int) -> Instr:
    """A STORE with unset fields 0 (one plane of one row of one entry)."""
    base = dict(sram_base=0, dram_offset=0, y_size=1, x_size=1, y_stride=0, x_stride=0)
    base |= dict(elem_bytes=1, z_size=1, z_stride=0)
    return make(Opcode.STORE, **(base | fields))


def random_store(rng: random.Random, entry_bytes: int) -> Instr:
    """A legal STORE with random geometry, strides and an unaligned offset."""
    eb = rng.choice([1, entry_bytes, rng.randint(1, entry_bytes)])
    xs, ys, zs = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3)
    x_stride = rng.choice([eb, rng.randint(0, 3 * entry_bytes)])
    y_stride = rng.choice([xs * x_stride, rng.randint(0, xs * x_stride + 64)])
    z_stride = rng.choice([ys * y_stride, rng.randint(0, 4096)])
    span = (zs - 1) * z_stride + (ys - 1) * y_stride + (xs - 1) * x_stride + eb
    near_page = rng.randrange(4096, LIMIT - span, 4096) - rng.randint(0, 2 * entry_bytes)
    offset = rng.choice([rng.randint(0, LIMIT - span), max(0, near_page)])
    return store(
        sram_base=rng.randint(0, OUT_ENTRIES - zs * ys * xs),
        dram_offset=offset,
        y_size=ys,
        x_size=xs,
        y_stride=y_stride,
        x_stride=x_stride,
        elem_bytes=eb,
        z_size=zs,
        z_stride=z_stride,
    )


def streaming_stores(rng: random.Random, entry_bytes: int, beat: int) -> list[Instr]:
    """`streaming_shapes` as STOREs, then random ones."""
    cases = [store(**shape) for shape in streaming_shapes(entry_bytes, beat)]
    return cases + [random_store(rng, entry_bytes) for _ in range(30)]


# -- bus-functional pieces -----------------------------------------------------------------
class OutBuffer:
    """The OUT buffer as a synchronous-read BRAM: the entry at the address sampled with
    rd_valid_o is on rd_data_i the next cycle; random bytes otherwise. Records the reads."""

    def __init__(self, dut: SimHandleBase, rng: random.Random, entry_bytes: int):
        self.dut, self.rng, self.entry_bytes = dut, rng, entry_bytes
        self.data = np.frombuffer(rng.randbytes(OUT_ENTRIES * entry_bytes), np.uint8)
        self.data = self.data.reshape(OUT_ENTRIES, entry_bytes)
        self.reads: list[int] = []
        dut.rd_data_i.value = 0

    async def run(self) -> None:
        dut = self.dut
        pending = None
        while True:
            await RisingEdge(dut.clk_i)
            if pending is None:
                dut.rd_data_i.value = self.rng.getrandbits(8 * self.entry_bytes)
            else:
                dut.rd_data_i.value = int.from_bytes(self.data[pending].tobytes(), "little")
            await ReadOnly()
            pending = None
            if int(dut.rd_valid_o.value):
                pending = int(dut.rd_addr_o.value)
                self.reads.append(pending)


class StoreDmaTb(DmaTb):
    """The STORE engine's testbench: backpressure on AW, W and B; the OUT buffer; monitors
    of the AW requests and of W holding still; the checker."""

    direction = "write"

    def __init__(self, dut: SimHandleBase, pause: bool = True, latency: int | None = None):
        pauses = [("aw", 0.3, 97), ("w", 0.4, 101), ("b", 0.5, 89)]
        super().__init__(dut, pause, latency, pauses)
        self.entry_bytes = len(dut.rd_data_i.value) // 8
        self.out = OutBuffer(dut, self.rng, self.entry_bytes)
        self.aw = BurstMonitor(dut, "aw", self.max_burst)
        w_hold = HoldCheck(dut, "w", ("data", "strb", "last"))
        self.tasks += [self.out.run(), self.aw.run(), w_hold.run(dut.clk_i)]

    def dram(self) -> np.ndarray:
        return np.frombuffer(self.ram.read(0, RAM_SIZE), np.uint8)

    def at_done(self) -> None:
        assert not int(self.dut.m_axi_awvalid.value), "done with a write request pending"
        assert not int(self.dut.m_axi_wvalid.value), "done with write beats pending"

    async def run(self, instr: Instr) -> Result:
        """Execute one STORE; returns its error code, the OUT reads, the AW requests and
        the cycles it took."""
        n_reads, n_aws = len(self.out.reads), len(self.aw.bursts)
        error, cycles = await self.execute(instr)
        return Result(error, self.out.reads[n_reads:], self.aw.bursts[n_aws:], cycles)

    async def checked(self, instr: Instr) -> Result:
        """Run a legal STORE: no error, each entry read once in order, DRAM as the ISA says,
        the AW requests exactly the instruction's runs as bursts."""
        before = self.dram()
        want = reference(instr, before, self.out.data)
        res = await self.run(instr)
        assert res.error == ERR_NONE, f"error {res.error} for {instr}"
        d = decode(instr)
        entries = d.planes * d.ys * d.xs if d.has_data else 0
        assert res.reads == [(d.sram + i) % OUT_ENTRIES for i in range(entries)], instr
        got = self.dram()
        bad = np.flatnonzero(got != want)
        assert not bad.size, f"{bad.size} DRAM bytes wrong, first at {bad[0]:#x} for {instr}"
        aws = [(b.addr, b.len) for b in res.aws]
        assert aws == expected_bursts(d, self.beat, self.max_burst), instr
        return res


# -- tests ---------------------------------------------------------------------------------
@cocotb.test()
@cocotb.parametrize(pause=[False, True])
async def test_random_stores(dut: SimHandleBase, pause: bool) -> None:
    """Random legal STOREs; the whole DRAM image compared with the ISA's STORE."""
    tb = StoreDmaTb(dut, pause)
    await tb.start()
    for _ in range(40):
        await tb.checked(random_store(tb.rng, tb.entry_bytes))


@cocotb.test()
@cocotb.parametrize(memory=["fixed", "axiram"])
async def test_cycles(dut: SimHandleBase, memory: str) -> None:
    """Every STORE of `streaming_stores` (each run shape, misalignment, random ones) is
    correct and within the cycle model plus OVERHEAD, on LatencyRam at the config's latency
    and on AxiRam at its own."""
    fixed = int(os.environ["DPU_DRAM_LATENCY"]) if memory == "fixed" else None
    tb = StoreDmaTb(dut, pause=False, latency=fixed)
    await tb.start()
    await tb.check_cycles(streaming_stores(tb.rng, tb.entry_bytes, tb.beat), fixed, OVERHEAD)


@cocotb.test()
async def test_page_and_window_edges(dut: SimHandleBase) -> None:
    """Whole entries straddling 4 KiB pages at every byte lane; the window's last byte;
    overlapping entries (the later one wins)."""
    tb = StoreDmaTb(dut)
    await tb.start()
    eb = tb.entry_bytes
    for off in range(4096 - eb - 17, 4096 + 1):
        await tb.checked(store(dram_offset=off, elem_bytes=eb, x_size=2, x_stride=eb + 1))
    await tb.checked(store(dram_offset=LIMIT - eb, elem_bytes=eb, sram_base=OUT_ENTRIES - 1))
    await tb.checked(store(dram_offset=5, elem_bytes=eb, x_size=3, x_stride=1, y_size=2))
    await tb.checked(store(dram_offset=77, elem_bytes=eb, z_size=3, y_size=2, x_size=2))


@cocotb.test()
async def test_degenerate(dut: SimHandleBase) -> None:
    """No planes, rows, columns or bytes: done without a read or a write request."""
    tb = StoreDmaTb(dut)
    await tb.start()
    cases = [
        store(z_size=0),
        store(y_size=0, x_size=3),
        store(x_size=0, y_size=2),
        store(elem_bytes=0, x_size=3, dram_offset=LIMIT + 5),
    ]
    for instr in cases:
        res = await tb.checked(instr)
        assert not res.aws, f"{len(res.aws)} AW requests for {instr}"


@cocotb.test()
async def test_out_of_window(dut: SimHandleBase) -> None:
    """A span past limit: error, done, no AW, no read; the next STORE still works."""
    tb = StoreDmaTb(dut)
    await tb.start()
    outside, inside = window_edges(tb.entry_bytes)
    for instr in [store(**fields) for fields in outside]:
        before = tb.dram()
        res = await tb.run(instr)
        assert res.error == ERR_RANGE, f"error {res.error} for {instr}"
        assert not res.aws, f"{len(res.aws)} AW requests issued for {instr}"
        assert not res.reads, f"{len(res.reads)} OUT entries read for {instr}"
        assert np.array_equal(tb.dram(), before), f"DRAM changed by {instr}"
    await tb.checked(store(**inside))
    res = await tb.run(store(elem_bytes=tb.entry_bytes + 1))
    assert res.error == ERR_ELEM_BYTES and not res.aws and not res.reads


@cocotb.test()
async def test_axi_error(dut: SimHandleBase) -> None:
    """SLVERR on a write response: error after all responses; later STOREs are correct."""
    tb = StoreDmaTb(dut)
    await tb.start()
    beat = len(dut.m_axi_wdata.value) // 8
    poison = range(BASE + 0x800, BASE + 0x800 + beat)  # writes to one beat answer SLVERR
    write_if = tb.ram.write_if
    good_write = write_if._write

    async def failing_write(address: int, data: bytes) -> None:
        if address < poison.stop and poison.start < address + len(data):
            raise OSError("poisoned")  # AxiRamWrite answers SLVERR
        await good_write(address, data)

    write_if._write = failing_write
    eb = tb.entry_bytes
    beat = tb.beat
    stride = eb + 2 * beat
    first = 0x800 + beat - 1 - 5 * stride  # entry 5 touches the poisoned beat
    rows = 100  # more bursts than can be outstanding: the STORE must stop early
    instr = store(
        dram_offset=first,
        elem_bytes=eb,
        x_size=9,
        x_stride=stride,
        y_size=rows,
        y_stride=9 * stride + 13,
    )
    want = reference(instr, tb.dram(), tb.out.data)
    res = await tb.run(instr)
    assert res.error == ERR_AXI, f"error {res.error}"
    assert len(res.reads) < 9 * rows, "all entries stored despite the error"
    assert res.reads == [i for i in range(len(res.reads))], "reads out of order"
    got = tb.dram()
    for x in range(5):  # the entries before the failing one are stored
        a = BASE + first + x * stride
        assert np.array_equal(got[a : a + eb], want[a : a + eb]), f"entry {x} not stored"
    await ClockCycles(dut.clk_i, 50)
    assert not int(dut.m_axi_bvalid.value), "write responses left uncollected"
    assert not int(dut.m_axi_awvalid.value), "a write request left pending"
    write_if._write = good_write
    for _ in range(5):
        await tb.checked(random_store(tb.rng, eb))
