"""cocotb tests of dpu_load_dma, the LOAD instruction's DMA (AXI4 reads -> buffer entries).

The reference is the golden model's LOAD, `Dma.load_entries` of dpukit.compiler.dma, on the
bytes of the data window; the expected AR requests are `Dma.runs` split into bursts here,
and the cycle bound is the cycle model's LOAD cost (compiler/timing.py) plus OVERHEAD.
DRAM is a cocotbext-axi AxiRam with random backpressure on AR and R (and on the buffer
write port), or, for the cycle counts, the fixed-latency LatencyRam; monitors check every
AR request is a legal burst and holds still while it waits, and so does the write port.
Run by tests/test_rtl_load_dma.py, which sets DPU_MAX_BURST to the DUT's MaxBurstBeats and
DPU_DRAM_LATENCY to the latency of the hardware config the parameters come from.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiRam

from dpukit.compiler import isa
from dpukit.compiler.dma import Dma
from dpukit.compiler.isa import Buffer, Instr, Opcode
from dpukit.compiler.timing import dma_beats
from dpukit.sim.axi_latency_ram import LatencyRam
from dpukit.sim.axi_monitor import Burst, BurstMonitor, LatencyProbe

RAM_SIZE = 1 << 20
BASE = 0x2_0000  # data window base in the RAM
LIMIT = 0x1_0000  # data window size
ERR_NONE, ERR_RANGE, ERR_AXI, ERR_ELEM_BYTES = 0, 1, 2, 3  # error_o, hw/rtl/dpu_load_dma.sv
TIMEOUT_CYCLES = 200_000
PERIOD_NS = 10
# Cycles from the accepting edge to done_o beyond the model's dram_latency + max(beats,
# entries): the first AR handshake one cycle after the accepting edge, one cycle from the
# last beat to its entry, whose write is the last; one more when the first beat completes
# no entry.
OVERHEAD = 3


@dataclass(frozen=True)
class Result:
    error: int
    writes: list[tuple[int, bytes]]
    ars: list[Burst]
    cycles: int  # accepting edge to the first edge of the done_o cycle


def decode(instr: Instr) -> Dma:
    return Dma.of(isa.decode_array(isa.to_bytes([instr])), 0)


def reference(instr: Instr, window: np.ndarray, entry_bytes: int) -> dict[int, bytes]:
    """Entry address -> bytes, from the golden model's LOAD."""
    d = decode(instr)
    entries = d.load_entries(window, entry_bytes)
    return {(d.sram + i) % (1 << 16): e.tobytes() for i, e in enumerate(entries)}


def expected_bursts(d: Dma, beat: int, max_burst: int) -> list[tuple[int, int]]:
    """(address, AxLEN) of each burst: every run of `Dma.runs` as the aligned beats it
    touches, split at max_burst beats and at 4 KiB boundaries."""
    starts, length = d.runs()
    bursts = []
    for s in starts.tolist():
        a, end = (BASE + s) // beat, (BASE + s + length - 1) // beat
        while a <= end:
            n = min(end - a + 1, max_burst, (4096 - a * beat % 4096) // beat)
            bursts.append((a * beat, n - 1))
            a += n
    return bursts


def model_cycles(d: Dma, beat: int, latency: int) -> int:
    """The cycle model's LOAD or STORE cost: dram_latency + max(data beats, entries)."""
    return latency + max(dma_beats(*d.runs(), beat), d.entries)


# -- stimulus ------------------------------------------------------------------------------
def load(**fields: int) -> Instr:
    """A LOAD with unset fields 0 (one plane of one row of one entry)."""
    base = dict(buffer=Buffer.INP, sram_base=0, dram_offset=0, y_size=1, x_size=1)
    base |= dict(y_stride=0, x_stride=0, elem_bytes=1, pad_top=0, pad_bottom=0, pad_left=0)
    base |= dict(pad_right=0, pad_value=0, z_size=1, z_stride=0)
    return isa.make(Opcode.LOAD, **(base | fields))


def random_load(rng: random.Random, entry_bytes: int) -> Instr:
    """A legal LOAD with random geometry, strides, padding and an unaligned offset."""
    eb = rng.choice([1, entry_bytes, rng.randint(1, entry_bytes)])
    xs, ys, zs = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3)
    x_stride = rng.choice([eb, rng.randint(0, 3 * entry_bytes)])
    y_stride = rng.choice([xs * x_stride, rng.randint(0, xs * x_stride + 64)])
    z_stride = rng.choice([ys * y_stride, rng.randint(0, 4096)])
    pads = {k: rng.randint(0, 3) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right")}
    span = (zs - 1) * z_stride + (ys - 1) * y_stride + (xs - 1) * x_stride + eb
    near_page = rng.randrange(4096, LIMIT - span, 4096) - rng.randint(0, 2 * entry_bytes)
    offset = rng.choice([rng.randint(0, LIMIT - span), max(0, near_page)])
    rows = pads["pad_top"] + ys + pads["pad_bottom"]
    cols = pads["pad_left"] + xs + pads["pad_right"]
    return load(
        buffer=rng.choice(list(Buffer)),
        sram_base=rng.randint(0, 2**16 - 1 - zs * rows * cols),
        dram_offset=offset,
        y_size=ys,
        x_size=xs,
        y_stride=y_stride,
        x_stride=x_stride,
        elem_bytes=eb,
        pad_value=rng.randint(-128, 127),
        z_size=zs,
        z_stride=z_stride,
        **pads,
    )


def streaming_shapes(entry_bytes: int, beat: int) -> list[dict[str, int]]:
    """DRAM sides of larger transfers, one per run shape, misaligned or across a page; sizes
    shrink with the entry so the spans stay in the window."""
    eb, small = entry_bytes, max(1, entry_bytes // 4)
    n = max(3, min(16, 2048 // eb))  # entries per row
    odd = max(1, eb - 1)
    under, over = min(eb, beat - 1), min(eb, beat + 1)
    return [
        # whole planes; whole rows; single entries, sparse, from the beat's last byte lane
        dict(elem_bytes=eb, x_size=n, x_stride=eb, y_size=6, y_stride=n * eb, z_size=2)
        | dict(z_stride=7 * n * eb + 3, dram_offset=5),
        dict(elem_bytes=eb, x_size=n, x_stride=eb, y_size=5, y_stride=n * eb + 1, z_size=2)
        | dict(z_stride=6 * n * eb),
        dict(elem_bytes=eb, x_size=n, x_stride=3 * eb, y_size=4, y_stride=3 * n * eb + 7)
        | dict(dram_offset=beat - 1),
        # small elements in planes; single bytes; overlapping entries; planes across a page
        dict(elem_bytes=small, x_size=3 * n, x_stride=small, y_size=4, y_stride=3 * n * small)
        | dict(dram_offset=3),
        dict(elem_bytes=1, x_size=30, x_stride=7, y_size=3, y_stride=300, dram_offset=1),
        dict(elem_bytes=eb, x_size=n, x_stride=max(1, eb // 2), y_size=3, y_stride=n * eb),
        dict(elem_bytes=eb, x_size=n, x_stride=eb, y_size=8, y_stride=n * eb)
        | dict(dram_offset=4096 - 3 * eb - 1),
        # odd element size, rows in three planes
        dict(elem_bytes=odd, x_size=n, x_stride=odd, y_size=3, y_stride=(n + 1) * eb, z_size=3)
        | dict(z_stride=4 * (n + 1) * eb, dram_offset=beat // 2 + 1),
        # elements of a beat less one byte, and of one more (as the entry allows), in rows
        dict(elem_bytes=under, x_size=16, x_stride=under, y_size=4, y_stride=17 * under)
        | dict(dram_offset=beat - 3),
        dict(elem_bytes=over, x_size=8, x_stride=over, y_size=4, y_stride=9 * over)
        | dict(dram_offset=1),
    ]


def streaming_loads(rng: random.Random, entry_bytes: int, beat: int) -> list[Instr]:
    """`streaming_shapes` with padding on every side or on some, elem_bytes 0, then random
    LOADs."""
    paddings = [
        {},
        dict(pad_left=1, pad_right=2, pad_top=1, pad_bottom=1, pad_value=3),
        dict(pad_top=2, pad_value=-4),
        dict(pad_left=1, pad_right=1),
        {},
        dict(pad_bottom=2, pad_value=-1),
        dict(pad_top=3, pad_bottom=3, pad_value=7),
        {},
        dict(pad_right=1, pad_value=2),
        {},
    ]
    shapes = streaming_shapes(entry_bytes, beat)
    cases = [load(**shape, **pads) for shape, pads in zip(shapes, paddings, strict=True)]
    cases.append(load(elem_bytes=0, x_size=5, y_size=4, pad_left=2, pad_top=1, pad_value=9))
    return cases + [random_load(rng, entry_bytes) for _ in range(30)]


def window_edges(entry_bytes: int) -> tuple[list[dict[str, int]], dict[str, int]]:
    """DRAM sides whose span passes the window's end: by one byte, or by a 32-bit offset or
    a stride that would wrap around; and the same first one, one byte lower, that fits."""
    eb = entry_bytes
    geometry = dict(elem_bytes=eb, x_size=3, x_stride=eb, y_size=2, y_stride=100, z_size=2)
    geometry |= dict(z_stride=7)
    span = 1 * 7 + 1 * 100 + 2 * eb + eb
    bad = [
        geometry | dict(dram_offset=LIMIT - span + 1),
        dict(dram_offset=LIMIT),
        dict(dram_offset=2**32 - 1, elem_bytes=2),
        dict(x_size=2, x_stride=2**24 - 1),
        dict(z_size=2, z_stride=2**32 - 1),
        dict(y_size=2, y_stride=2**32 - 1),
    ]
    return bad, geometry | dict(dram_offset=LIMIT - span)


# -- bus-functional pieces -----------------------------------------------------------------
class InstrDriver:
    """Presents one instruction word with instr_valid_i until the DUT takes it."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        dut.instr_valid_i.value = 0
        dut.instr_i.value = 0

    async def send(self, instr: Instr) -> float:
        """Returns the time (ns) of the accepting edge."""
        dut = self.dut
        dut.instr_i.value = isa.encode(instr)
        dut.instr_valid_i.value = 1
        while True:
            await RisingEdge(dut.clk_i)
            if int(dut.instr_ready_o.value):
                break
        dut.instr_valid_i.value = 0
        return get_sim_time("ns")


class WriteMonitor:
    """Records every buffer write (address, entry bytes); drives wr_ready_i, low in a random
    pattern if `pause`; checks the write port holds still while wr_ready_i is low."""

    def __init__(self, dut: SimHandleBase, rng: random.Random, pause: bool):
        self.dut = dut
        self.writes: list[tuple[int, bytes]] = []
        self.entry_bytes = len(dut.wr_data_o.value) // 8
        pattern = [not pause or rng.random() < 0.7 for _ in range(83)]
        self.ready = itertools.cycle(pattern)
        dut.wr_ready_i.value = 1

    async def run(self) -> None:
        dut = self.dut
        held = None
        while True:
            await RisingEdge(dut.clk_i)
            dut.wr_ready_i.value = int(next(self.ready))
            await ReadOnly()
            valid = int(dut.wr_valid_o.value)
            now = (int(dut.wr_addr_o.value), int(dut.wr_data_o.value)) if valid else None
            assert held is None or now == held, f"write port changed while stalled: {held}"
            if valid and int(dut.wr_ready_i.value):
                data = now[1].to_bytes(self.entry_bytes, "little")
                self.writes.append((now[0], data))
                held = None
            else:
                held = now


class DmaTb:
    """What the LOAD and STORE testbenches share: clock and reset, the memory (AxiRam with
    random pauses on `pauses` channels if `pause`, or LatencyRam with `latency`), the
    instruction driver, and running one instruction to done_o."""

    direction = "read"  # the memory latency that counts: "read" (LOAD) or "write" (STORE)

    def __init__(
        self,
        dut: SimHandleBase,
        pause: bool,
        latency: int | None,
        pauses: list[tuple[str, float, int]],  # channel, pause probability, pattern length
    ):
        self.dut = dut
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.beat = len(dut.m_axi_rdata.value) // 8
        self.max_burst = int(os.environ["DPU_MAX_BURST"])
        self.tasks: list = []  # coroutines started after reset
        if latency is None:
            ram = AxiRam(
                AxiBus.from_prefix(dut, "m_axi"),
                dut.clk_i,
                dut.rst_ni,
                reset_active_level=False,
                size=RAM_SIZE,
            )
            ram.read_if.log.setLevel(logging.WARNING)  # no line per burst
            ram.write_if.log.setLevel(logging.WARNING)
            for name, p, n in pauses if pause else []:
                side = ram.read_if if name in ("ar", "r") else ram.write_if
                pattern = [self.rng.random() < p for _ in range(n)]
                getattr(side, f"{name}_channel").set_pause_generator(itertools.cycle(pattern))
        else:
            ram = LatencyRam(dut, latency, RAM_SIZE)
            self.tasks.append(ram.run())
        self.ram = ram
        self.ram.write(0, self.rng.randbytes(RAM_SIZE))
        self.driver = InstrDriver(dut)

    async def start(self) -> None:
        dut = self.dut
        dut.base_i.value = BASE
        dut.limit_i.value = LIMIT
        dut.rst_ni.value = 0
        Clock(dut.clk_i, PERIOD_NS, unit="ns").start()
        await ClockCycles(dut.clk_i, 3)
        dut.rst_ni.value = 1
        await RisingEdge(dut.clk_i)
        for task in self.tasks:
            cocotb.start_soon(task)

    def at_done(self) -> None:
        """Checks in the done_o cycle (none here)."""

    async def execute(self, instr: Instr) -> tuple[int, int]:
        """Runs one instruction: its error code, and the cycles from its accepting edge to
        the first edge of its done_o cycle."""
        accepted = await self.driver.send(instr)
        for _ in range(TIMEOUT_CYCLES):
            await ReadOnly()
            if int(self.dut.done_o.value):
                self.at_done()
                error = int(self.dut.error_o.value)
                cycles = round((get_sim_time("ns") - accepted) / PERIOD_NS)
                await RisingEdge(self.dut.clk_i)
                return error, cycles
            await RisingEdge(self.dut.clk_i)
        raise AssertionError(f"no done_o within {TIMEOUT_CYCLES} cycles for {instr}")

    async def checked(self, instr: Instr) -> Any:
        """Runs a legal instruction, checks it against the reference, returns its result
        (with `cycles`)."""
        raise NotImplementedError

    async def check_cycles(self, instrs: list[Instr], fixed: int | None, overhead: int) -> None:
        """Runs and checks `instrs` with no backpressure, then asserts each was done within
        the cycle model's dram_latency + max(beats, entries) + overhead cycles of its
        accepting edge, dram_latency being the memory's latency as measured (and `fixed`,
        the LatencyRam's, when given): first R beat after AR for a LOAD, B after last W for
        a STORE."""
        probe = LatencyProbe(self.dut, self.direction)
        cocotb.start_soon(probe.run())
        runs = [(instr, (await self.checked(instr)).cycles) for instr in instrs]
        latency = min(probe.latencies)
        assert fixed is None or latency == fixed, f"LatencyRam answered in {latency} cycles"
        over = []
        for instr, cycles in runs:
            model = model_cycles(decode(instr), self.beat, latency)
            assert cycles <= model + overhead, f"{cycles} cycles, model {model}: {instr}"
            over.append(cycles - model)
        self.dut._log.info(
            "memory latency %d: cycles - model: min %d, max %d, mean %.2f",
            latency,
            min(over),
            max(over),
            sum(over) / len(over),
        )


class LoadDmaTb(DmaTb):
    """The LOAD engine's testbench: backpressure on AR, R and the write port; monitors of
    the writes and the AR requests; the checker."""

    def __init__(self, dut: SimHandleBase, pause: bool = True, latency: int | None = None):
        super().__init__(dut, pause, latency, [("ar", 0.3, 97), ("r", 0.4, 101)])
        self.entry_bytes = len(dut.wr_data_o.value) // 8
        self.writes = WriteMonitor(dut, self.rng, pause)
        self.ar = BurstMonitor(dut, "ar", self.max_burst)
        self.tasks += [self.writes.run(), self.ar.run()]

    def window(self) -> np.ndarray:
        return np.frombuffer(self.ram.read(BASE, LIMIT), np.uint8)

    async def run(self, instr: Instr) -> Result:
        """Execute one LOAD; returns its error code, the writes, the AR requests, cycles."""
        n_writes, n_ars = len(self.writes.writes), len(self.ar.bursts)
        error, cycles = await self.execute(instr)
        return Result(error, self.writes.writes[n_writes:], self.ar.bursts[n_ars:], cycles)

    async def checked(self, instr: Instr) -> Result:
        res = await self.run(instr)
        self.check(instr, res)
        return res

    def check(self, instr: Instr, res: Result) -> None:
        """No error, each reference entry written exactly once with its bytes, and the AR
        requests exactly the instruction's runs as bursts."""
        assert res.error == ERR_NONE, f"error {res.error} for {instr}"
        want = reference(instr, self.window(), self.entry_bytes)
        got = dict(res.writes)
        assert len(got) == len(res.writes), f"an entry written twice for {instr}"
        assert got.keys() == want.keys(), f"entries {sorted(got)} != {sorted(want)}"
        for a, data in want.items():
            assert got[a] == data, f"entry {a}: got {got[a].hex()} want {data.hex()} ({instr})"
        ars = [(b.addr, b.len) for b in res.ars]
        assert ars == expected_bursts(decode(instr), self.beat, self.max_burst), instr


# -- tests ---------------------------------------------------------------------------------
@cocotb.test()
@cocotb.parametrize(pause=[False, True])
async def test_random_loads(dut: SimHandleBase, pause: bool) -> None:
    """Random legal LOADs compared entry for entry with the golden model."""
    tb = LoadDmaTb(dut, pause)
    await tb.start()
    for _ in range(40):
        instr = random_load(tb.rng, tb.entry_bytes)
        tb.check(instr, await tb.run(instr))


@cocotb.test()
@cocotb.parametrize(memory=["fixed", "axiram"])
async def test_cycles(dut: SimHandleBase, memory: str) -> None:
    """Every LOAD of `streaming_loads` (each run shape, padding, misalignment, random ones)
    is correct and within the cycle model plus OVERHEAD, on LatencyRam at the config's
    latency and on AxiRam at its own."""
    fixed = int(os.environ["DPU_DRAM_LATENCY"]) if memory == "fixed" else None
    tb = LoadDmaTb(dut, pause=False, latency=fixed)
    await tb.start()
    await tb.check_cycles(streaming_loads(tb.rng, tb.entry_bytes, tb.beat), fixed, OVERHEAD)


@cocotb.test()
async def test_page_and_window_edges(dut: SimHandleBase) -> None:
    """Whole entries straddling 4 KiB pages at every byte lane; the window's last byte."""
    tb = LoadDmaTb(dut)
    await tb.start()
    eb = tb.entry_bytes
    for off in range(4096 - eb - 17, 4096 + 1):
        instr = load(dram_offset=off, elem_bytes=eb, x_size=2, x_stride=eb + 1, pad_left=1)
        tb.check(instr, await tb.run(instr))
    instr = load(dram_offset=LIMIT - eb, elem_bytes=eb)
    tb.check(instr, await tb.run(instr))


@cocotb.test()
async def test_degenerate(dut: SimHandleBase) -> None:
    """No planes, no data rows or columns (padding only), elem_bytes 0, zero strides."""
    tb = LoadDmaTb(dut)
    await tb.start()
    cases = [
        load(z_size=0, pad_top=2, pad_left=1),
        load(y_size=0, pad_top=1, pad_bottom=2, pad_left=1, pad_value=-7),
        load(x_size=0, pad_left=2, pad_value=5),
        load(y_size=0, x_size=0),
        load(elem_bytes=0, x_size=3, pad_right=1, pad_value=9, dram_offset=LIMIT + 5),
        load(x_size=3, y_size=2, z_size=2, elem_bytes=tb.entry_bytes, dram_offset=123),
        load(buffer=Buffer.PAR, pad_top=1, pad_value=-1, elem_bytes=tb.entry_bytes),
        load(x_size=3, y_size=2, z_size=3, pad_top=1, elem_bytes=2, x_stride=2, y_stride=6),
        load(x_size=2, y_size=2, z_size=2, pad_bottom=1, elem_bytes=1, x_stride=1, y_stride=2),
        load(x_size=2, y_size=3, z_size=2, pad_left=1, pad_value=4, x_stride=0, y_stride=0),
    ]
    for instr in cases:
        res = await tb.run(instr)
        tb.check(instr, res)
        data_bytes = decode(instr).data_bytes
        assert bool(res.ars) == bool(data_bytes), f"{len(res.ars)} ARs for {data_bytes} bytes"


@cocotb.test()
async def test_out_of_window(dut: SimHandleBase) -> None:
    """A span past limit: error, done, no AR and no write; the next LOAD still works."""
    tb = LoadDmaTb(dut)
    await tb.start()
    outside, inside = window_edges(tb.entry_bytes)
    for instr in [load(**fields, pad_top=1) for fields in outside]:
        res = await tb.run(instr)
        assert res.error == ERR_RANGE, f"error {res.error} for {instr}"
        assert not res.ars, f"{len(res.ars)} AR requests issued for {instr}"
        assert not res.writes, f"{len(res.writes)} entries written for {instr}"
    await tb.checked(load(**inside, pad_top=1))
    res = await tb.run(load(elem_bytes=tb.entry_bytes + 1))
    assert res.error == ERR_ELEM_BYTES and not res.ars and not res.writes


@cocotb.test()
async def test_axi_error(dut: SimHandleBase) -> None:
    """SLVERR on a beat: error, done, outstanding beats drained; the entries whose bytes all
    came before the failing beat are written, no later one; later LOADs are correct."""
    tb = LoadDmaTb(dut)
    await tb.start()
    poison = range(BASE + 0x800, BASE + 0x800 + tb.beat)  # one beat answers SLVERR
    read_if = tb.ram.read_if
    good_read = read_if._read

    async def failing_read(address: int, length: int) -> bytes:
        if address < poison.stop and poison.start < address + length:
            raise OSError("poisoned")  # AxiRamRead answers SLVERR
        return await good_read(address, length)

    read_if._read = failing_read
    eb = tb.entry_bytes
    # entry 5 starts in the poisoned beat's last byte lane, so its burst has beats after the
    # failing one; entries 0 to 4 lie wholly below the poisoned beat
    stride = eb + 2 * tb.beat
    first = 0x800 + tb.beat - 1 - 5 * stride
    instr = load(
        dram_offset=first, elem_bytes=eb, x_size=9, x_stride=stride, y_size=2, y_stride=999
    )
    want = reference(instr, tb.window(), eb)
    res = await tb.run(instr)
    assert res.error == ERR_AXI, f"error {res.error}"
    assert len(res.writes) == 5, f"{len(res.writes)} entries written, want the 5 before"
    for a, data in res.writes:
        assert want[a] == data, f"entry {a} written wrong before the error"
    await ClockCycles(dut.clk_i, 50)
    assert not int(dut.m_axi_rvalid.value), "read beats left undrained"
    assert not int(dut.m_axi_arvalid.value), "a read request left pending"
    read_if._read = good_read
    for _ in range(5):
        instr = random_load(tb.rng, eb)
        tb.check(instr, await tb.run(instr))
