"""cocotb tests of dpu_compute, the COMPUTE engine (GEMM, POST, ALU) around its buffers.

The five buffers are Python models of dpu_sram (numpy arrays, read data the cycle after the
read, held until the next read, writes applied at the clock edge, read-first). Every
instruction also runs on the golden model (`GoldenDPU` of compiler/golden.py, its buffers
preloaded with the same contents), in program order as the engine finishes them (done_o).
The engine overlaps instructions, so buffers are compared whenever it has nothing in flight:
then every entry of every buffer must match, and the read/write strobes and mac_active_o
since the last such point must count what the golden model's activity counts for the
instructions finished in between. Each instruction must be taken, and finish, in exactly
the cycles the cycle model (compiler/timing.py, `ComputeTimer`) gives for the cycles it was
offered in. Run by tests/test_rtl_compute.py, which passes the parameters as DPU_*
environment variables.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import deque
from collections.abc import Iterable

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from dpukit.compiler import check, isa
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.golden import _activity as golden_activity
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Instr, Opcode
from dpukit.compiler.timing import ComputeTimer, instr_cycles
from dpukit.errors import ExecutionError

ROWS = int(os.environ["DPU_ROWS"])
COLS = int(os.environ["DPU_COLS"])
CFG = dataclasses.replace(
    load_config("sim-small"),
    rows=ROWS,
    cols=COLS,
    inp_entries=int(os.environ["DPU_INP"]),
    wgt_entries=int(os.environ["DPU_WGT"]),
    acc_entries=int(os.environ["DPU_ACC"]),
    out_entries=int(os.environ["DPU_OUT"]),
    par_entries=int(os.environ["DPU_PAR"]),
)
IN_FLIGHT = int(os.environ["DPU_IN_FLIGHT"])  # the MaxInFlight parameter
ERR_RANGE, ERR_ALU_OP, ERR_OPCODE = 1, 2, 3  # error_code_o, hw/rtl/dpu_compute.sv
DRAM = np.zeros(64, np.uint8)  # the golden model wants a data window; compute never uses it
END = isa.make(Opcode.END)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT32_EDGES = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
BUFFERS = ("inp", "wgt", "acc", "out", "par")


def trips(instr: Instr) -> int:
    if instr.op == Opcode.POST:
        return instr.blocks * instr.count
    return instr.n_outer * instr.n_inner


def grid(base: int, n_outer: int, n_inner: int, so: int, si: int) -> list[int]:
    return [base + o * so + i * si for o in range(n_outer) for i in range(n_inner)]


def written_entries(instr: Instr) -> tuple[str, set[int]]:
    """The buffer an instruction writes and every entry it may write (ISA formulas)."""
    if instr.op == Opcode.GEMM:
        f = instr.fields
        return "acc", set(
            grid(
                f["acc_base"],
                f["n_outer"],
                f["n_inner"],
                f["acc_outer_stride"],
                f["acc_inner_stride"],
            )
        )
    if instr.op == Opcode.ALU:
        f = instr.fields
        return "acc", set(
            grid(
                f["dst_base"],
                f["n_outer"],
                f["n_inner"],
                f["dst_outer_stride"],
                f["dst_inner_stride"],
            )
        )
    f = instr.fields
    return "out", set(grid(f["out_base"], f["blocks"], f["count"], f["out_block_stride"], 1))


# -- stimulus ------------------------------------------------------------------------------
def int32(rng: random.Random) -> int:
    return rng.choice(INT32_EDGES) if rng.random() < 0.2 else rng.randint(INT32_MIN, INT32_MAX)


def stride(rng: random.Random, entries: int) -> int:
    return rng.choice([0, 0, 1, 1, 2, rng.randint(0, entries // 2), rng.randint(0, entries)])


def loop(rng: random.Random, entries: int, no: int, ni: int) -> tuple[int, int, int]:
    """(base, outer stride, inner stride) whose last entry, hence every one, is in range."""
    while True:
        so, si = stride(rng, entries), stride(rng, entries)
        span = max(no - 1, 0) * so + max(ni - 1, 0) * si
        if span < entries:
            return rng.randint(0, entries - 1 - span), so, si


def counts(rng: random.Random, zero: float = 0.05) -> tuple[int, int]:
    def one() -> int:
        if rng.random() < zero:
            return 0
        return rng.choice([1, 1, 2, 3, 4, 5, rng.randint(1, 12)])

    return one(), one()


def random_gemm(rng: random.Random, no: int | None = None, ni: int | None = None) -> Instr:
    if no is None or ni is None:
        no, ni = counts(rng)
    ib, ios, iis = loop(rng, CFG.inp_entries, no, ni)
    ab, aos, ais = loop(rng, CFG.acc_entries, no, ni)
    return isa.make(
        Opcode.GEMM,
        reset=rng.randint(0, 1),
        wgt_addr=rng.randrange(CFG.wgt_entries),
        inp_base=ib,
        acc_base=ab,
        n_outer=no,
        n_inner=ni,
        inp_outer_stride=ios,
        inp_inner_stride=iis,
        acc_outer_stride=aos,
        acc_inner_stride=ais,
    )


def block_loop(rng: random.Random, entries: int, blocks: int, count: int) -> tuple[int, int]:
    """(base, block stride) of POST's blocks of `count` consecutive entries, all in range."""
    while True:
        s = stride(rng, entries)
        span = max(blocks - 1, 0) * s + max(count - 1, 0)
        if span < entries:
            return rng.randint(0, entries - 1 - span), s


def post_fields(rng: random.Random) -> dict[str, int]:
    blocks = 0 if rng.random() < 0.05 else rng.randint(1, min(3, CFG.par_entries))
    count = 0 if rng.random() < 0.05 else rng.choice([1, 2, 3, rng.randint(1, 10)])
    ab, abs_ = block_loop(rng, CFG.acc_entries, blocks, count)
    ob, obs = block_loop(rng, CFG.out_entries, blocks, count)
    lo, hi = rng.randint(-128, 127), rng.randint(-128, 127)
    if rng.random() < 0.7:
        lo, hi = min(lo, hi), max(lo, hi)
    if rng.random() < 0.3:
        lo, hi = -128, 127
    return dict(
        acc_base=ab,
        out_base=ob,
        count=count,
        par_addr=rng.randint(0, CFG.par_entries - max(blocks, 1)),
        zero_point=rng.randint(-128, 127),
        clamp_lo=lo,
        clamp_hi=hi,
        blocks=blocks,
        acc_block_stride=abs_,
        out_block_stride=obs,
    )


def random_post(rng: random.Random) -> Instr:
    return isa.make(Opcode.POST, **post_fields(rng))


def random_alu(rng: random.Random, op: int | None = None) -> Instr:
    no, ni = counts(rng)
    db, dos, dis = loop(rng, CFG.acc_entries, no, ni)
    if rng.random() < 0.25:  # a reduction: every trip into one entry, or one per outer step
        dis = 0
        dos = rng.choice([0, dos])
        db = rng.randint(0, CFG.acc_entries - 1 - (no - 1) * dos) if no else db
    sb, sos, sis = loop(rng, CFG.acc_entries, no, ni)
    if rng.random() < 0.2 and no * ni:  # src runs one or two entries behind dst: forwarding
        sb, sos, sis = max(db - rng.randint(1, 2), 0), dos, dis
        span = (no - 1) * sos + (ni - 1) * sis
        sb = min(sb, CFG.acc_entries - 1 - span)
    return isa.make(
        Opcode.ALU,
        alu_op=rng.choice(list(AluOp)) if op is None else op,
        dst_base=db,
        src_base=sb,
        n_outer=no,
        n_inner=ni,
        dst_outer_stride=dos,
        dst_inner_stride=dis,
        src_outer_stride=sos,
        src_inner_stride=sis,
        imm=int32(rng) if rng.random() < 0.5 else rng.randint(-4, 4),
    )


def random_instr(rng: random.Random) -> Instr:
    return rng.choice([random_gemm, random_post, random_alu])(rng)


def random_contents(rng: np.random.Generator, tb: ComputeTb) -> None:
    """Random buffers with extremes: int8 -128/127 lines, int32 edges, PAR mult/shift edges."""
    g = tb.golden
    g.inp[:] = rng.integers(-128, 128, g.inp.shape)
    g.inp[rng.random(len(g.inp)) < 0.1] = -128
    g.wgt[:] = rng.integers(-128, 128, g.wgt.shape)
    g.wgt[0] = -128  # -128 * -128 everywhere: the largest column sums
    g.wgt[rng.random(len(g.wgt)) < 0.2] = 127
    g.acc[:] = rng.integers(INT32_MIN, INT32_MAX, g.acc.shape, endpoint=True)
    edges = rng.random(g.acc.shape) < 0.1
    g.acc[edges] = rng.choice(INT32_EDGES, edges.sum())
    g.out[:] = rng.integers(-128, 128, g.out.shape)
    n, c = CFG.par_entries, COLS
    g.par[:, 0] = rng.integers(INT32_MIN, INT32_MAX, (n, c), endpoint=True)  # bias
    # multipliers: non-negative int32s (bits the ISA ignores random too), extremes, and
    # 22-bit ones as the compiler emits
    mult = rng.integers(0, 2**31, (n, c))
    pick = rng.random((n, c))
    mult[pick < 0.15] = 2**31 - 1
    mult[(pick >= 0.15) & (pick < 0.2)] = 0
    small = (pick >= 0.2) & (pick < 0.5)
    mult[small] = rng.integers(0, 2**22, small.sum())
    g.par[:, 1] = mult
    shift = rng.integers(0, 64, (n, c))  # only the low 6 bits count: junk above them
    shift[rng.random((n, c)) < 0.2] = 62
    shift[rng.random((n, c)) < 0.1] = 0
    g.par[:, 2] = shift | (rng.integers(0, 2**25, (n, c)) << 6) * (rng.random((n, c)) < 0.3)
    g.inp_f[:] = g.inp  # the golden model's float copy of INP, kept in step by its LOAD
    tb.load_from_golden()


# -- bus-functional pieces -----------------------------------------------------------------
class Sram:
    """One buffer as dpu_sram: synchronous reads (data next cycle, held), read-first writes.

    `sample` (in the read-only phase of a cycle) records the cycle's strobes and checks their
    addresses; `edge` (just after the clock edge that ends it) drives the read data and then
    applies the write. Every strobe outside the buffer fails the test.
    """

    def __init__(
        self, dut: SimHandleBase, name: str, mem: np.ndarray, reads: list[str], write: bool
    ):
        self.name, self.mem = name, mem
        self.entry_bytes = mem[0].nbytes
        self.reads = [
            (getattr(dut, f"{p}_re_o"), getattr(dut, f"{p}_raddr_o"), getattr(dut, f"{p}_rdata_i"))
            for p in reads
        ]
        for _, _, rdata in self.reads:
            assert len(rdata) == 8 * self.entry_bytes, f"{name}: read port width"
        self.write = (
            (
                getattr(dut, f"{name}_we_o"),
                getattr(dut, f"{name}_waddr_o"),
                getattr(dut, f"{name}_wdata_o"),
            )
            if write
            else None
        )
        self.pending_reads: list[int | None] = [None] * len(self.reads)
        self.pending_write: tuple[int, bytes] | None = None
        self.n_reads = 0
        self.n_writes = 0
        self.writes: list[int] = []  # every address written, in order

    def _check(self, kind: str, addr: int) -> None:
        assert addr < len(self.mem), f"{self.name} {kind} of entry {addr} outside {len(self.mem)}"

    def sample(self) -> None:
        for k, (re, raddr, _) in enumerate(self.reads):
            if int(re.value):
                addr = int(raddr.value)
                self._check("read", addr)
                self.pending_reads[k] = addr
                self.n_reads += 1
        if self.write is not None and int(self.write[0].value):
            addr = int(self.write[1].value)
            self._check("write", addr)
            data = self.write[2].value.to_unsigned().to_bytes(self.entry_bytes, "little")
            self.pending_write = (addr, data)
            self.n_writes += 1
            self.writes.append(addr)

    def edge(self) -> None:
        for (_, _, rdata), addr in zip(self.reads, self.pending_reads, strict=True):
            if addr is not None:
                rdata.value = int.from_bytes(self.mem[addr].tobytes(), "little")
        if self.pending_write is not None:
            addr, data = self.pending_write
            self.mem[addr] = np.frombuffer(data, self.mem.dtype).reshape(self.mem.shape[1:])
        self.pending_reads = [None] * len(self.reads)
        self.pending_write = None


@dataclasses.dataclass
class Run:
    """One instruction as the DUT executed it."""

    instr: Instr | int  # an Instr, or a raw word (illegal opcodes)
    queued: int  # cycle it was first offered
    index: int = -1  # in the program the cycle model follows
    accepted: int = -1
    done: int = -1
    model_done: int = -1  # the cycle model's done cycle


class ComputeTb:
    """Clock, reset, the five buffer models, the instruction driver and the checker."""

    def __init__(self, dut: SimHandleBase, seed: int = 0):
        self.dut = dut
        self.rng = random.Random(cocotb.RANDOM_SEED + seed)
        self.golden = GoldenDPU(CFG)
        g = self.golden
        self.mem = {b: getattr(g, b).copy() for b in BUFFERS}
        self.srams = {
            "inp": Sram(dut, "inp", self.mem["inp"], ["inp"], False),
            "wgt": Sram(dut, "wgt", self.mem["wgt"], ["wgt"], False),
            "acc": Sram(dut, "acc", self.mem["acc"], ["acc_a", "acc_b"], True),
            "out": Sram(dut, "out", self.mem["out"], [], True),
            "par": Sram(dut, "par", self.mem["par"], ["par"], False),
        }
        self.queue: deque[tuple[Run, int]] = deque()  # (run, idle cycles before offering it)
        self.gap = 0
        self.cycle = 0
        self.mac = 0
        self.inflight: deque[Run] = deque()  # taken, not done, oldest first
        self.to_check = False  # compare buffers after this cycle's writes have landed
        self.segment: list = []  # golden activity of the instructions done since the last check
        self.counts = self.strobe_counts()
        self.checked = 0
        self.rtl_cycles = 0  # from taking to done, summed over the instructions
        self.new_program()
        dut.instr_valid_i.value = 0
        dut.instr_i.value = 0
        Clock(dut.clk_i, 10, unit="ns").start()

    def new_program(self) -> None:
        """Start the cycle model afresh (after a reset)."""
        self.program: list[Instr] = []
        self.timer = ComputeTimer(CFG, {}, np.zeros(0, np.int64), IN_FLIGHT)

    def strobe_counts(self) -> dict:
        return {
            "reads": {b: s.n_reads for b, s in self.srams.items()},
            "writes": {b: s.n_writes for b, s in self.srams.items()},
            "mac": self.mac,
        }

    async def reset(self) -> None:
        await RisingEdge(self.dut.clk_i)  # out of the read-only phase of the last step
        self.dut.instr_valid_i.value = 0
        self.dut.rst_ni.value = 0
        await ClockCycles(self.dut.clk_i, 2)
        self.dut.rst_ni.value = 1
        self.inflight.clear()
        self.new_program()
        for s in self.srams.values():
            s.pending_reads = [None] * len(s.reads)
            s.pending_write = None
        self.counts = self.strobe_counts()
        self.segment = []

    def load_from_golden(self) -> None:
        for b in BUFFERS:
            self.mem[b][...] = getattr(self.golden, b)

    def offer(self, instrs: Iterable[Instr | int], gap: float = 0.0) -> None:
        for instr in instrs:
            idle = self.rng.randint(1, 3) if self.rng.random() < gap else 0
            run = Run(instr, -1, len(self.program))
            # a raw word (an illegal opcode) is never timed: END stands in for it
            self.program.append(instr if isinstance(instr, Instr) else END)
            self.queue.append((run, idle))
        self.timer.col = isa.decode_array(isa.to_bytes(self.program))
        self.timer.cost = instr_cycles(CFG, self.timer.col)

    # -- one clock cycle -------------------------------------------------------------------
    async def step(self) -> None:
        dut = self.dut
        await RisingEdge(dut.clk_i)
        self.cycle += 1
        for s in self.srams.values():
            s.edge()
        if self.to_check:  # the last done cycle's writes have just landed
            self.check()
            self.to_check = False
        if self.queue and self.queue[0][1] > 0:
            run, idle = self.queue.popleft()
            self.queue.appendleft((run, idle - 1))
        if self.queue and self.queue[0][1] == 0:
            run = self.queue[0][0]
            if run.queued < 0:
                run.queued = self.cycle
            dut.instr_valid_i.value = 1
            dut.instr_i.value = run.instr if isinstance(run.instr, int) else isa.encode(run.instr)
        else:
            dut.instr_valid_i.value = 0
            dut.instr_i.value = self.rng.getrandbits(isa.INSTR_BITS)  # junk: must be ignored
        await ReadOnly()
        done = bool(int(dut.done_o.value))
        if done:  # this cycle's strobes belong to what is in flight, or is taken now
            assert self.inflight, "done_o with no instruction"
            self.finish(self.inflight.popleft())
        if int(dut.instr_valid_i.value) and int(dut.instr_ready_o.value):
            run = self.queue.popleft()[0]
            run.accepted = self.cycle
            if isinstance(run.instr, Instr):
                start, run.model_done = self.timer.run(run.index, run.queued - 1)
                assert run.accepted == start + 1, (
                    f"{run.instr} taken in cycle {run.accepted}, offered from {run.queued}: "
                    f"the cycle model takes it in {start + 1}"
                )
            self.inflight.append(run)
        for s in self.srams.values():
            s.sample()
        self.mac += int(dut.mac_active_o.value)
        if done and not self.inflight:
            self.to_check = True

    # -- checking --------------------------------------------------------------------------
    def golden_step(self, instr: Instr):
        """Run one instruction on the golden model; returns its activity."""
        stream = isa.to_bytes([instr, END])
        col = isa.decode_array(stream)
        # the counts the golden model reports for the stream (its `_activity`); not through
        # `prepare`, whose plan indexes WGT even for an empty GEMM (wgt_addr unchecked then)
        activity = golden_activity(CFG, col, check.check_stream(CFG, col, DRAM.size))
        if instr.op == Opcode.GEMM and trips(instr) == 0:
            # ISA: no iteration, nothing written. (The golden model's run raises on an empty
            # GEMM: `_product` reshapes a [0, 0] gather; reported.)
            return activity
        if instr.op == Opcode.POST and instr.count == 0:
            # ISA: nothing written. (golden `_post` still indexes PAR, out of range possibly.)
            return activity
        self.golden.run(stream, DRAM)
        return activity

    def finish(self, run: Run) -> None:
        """The oldest instruction's done_o: run it on the golden model; check its cycles."""
        run.done = self.cycle
        instr = run.instr
        assert isinstance(instr, Instr)
        self.segment.append((instr, self.golden_step(instr)))
        assert run.done == run.model_done, (
            f"{instr} done in cycle {run.done}, the cycle model says {run.model_done} "
            f"(taken in {run.accepted})"
        )
        self.rtl_cycles += run.done - run.accepted + 1

    def check(self) -> None:
        """Nothing in flight: buffers equal the golden model's, strobes its activity."""
        instrs = [instr for instr, _ in self.segment]
        for b in BUFFERS:
            want, got = getattr(self.golden, b), self.mem[b]
            if not np.array_equal(want, got):
                bad = np.flatnonzero((want != got).reshape(len(want), -1).any(axis=1))
                e = int(bad[0])
                raise AssertionError(
                    f"{b.upper()} entry {e} after {instrs}: got {got[e].tolist()}, "
                    f"want {want[e].tolist()} ({len(bad)} entries differ)"
                )
        now = self.strobe_counts()
        for b in BUFFERS:
            for kind, golden in (("reads", "buffer_reads"), ("writes", "buffer_writes")):
                got = now[kind][b] - self.counts[kind][b]
                want = sum(getattr(act, golden)[b] for _, act in self.segment)
                assert got == want, f"{b} {kind} {got} != golden {want} for {instrs}"
        got = now["mac"] - self.counts["mac"]
        want = sum(act.mac_cycles for _, act in self.segment)
        assert got == want, f"mac_active_o {got} cycles, golden {want}, for {instrs}"
        self.checked += len(self.segment)
        self.segment = []
        self.counts = now

    async def drain(self, max_cycles: int = 100_000) -> None:
        """Run until every offered instruction has completed and been checked."""
        for _ in range(max_cycles):
            if not self.queue and not self.inflight and not self.to_check:
                return
            await self.step()
            assert not int(self.dut.error_o.value), (
                f"error {int(self.dut.error_code_o.value)} with {list(self.inflight)} in flight"
            )
        raise AssertionError(f"instructions not done within {max_cycles} cycles")

    async def run_all(self, instrs: list[Instr], gap: float = 0.0) -> None:
        self.offer(instrs, gap)
        await self.drain()

    async def run_legal(self, instrs: list[Instr], gap: float = 0.0) -> None:
        """Instructions the checking pass accepts: run them, and every one was checked."""
        assert not any(golden_rejects(i) for i in instrs)
        checked = self.checked
        await self.run_all(instrs, gap)
        assert self.checked - checked == len(instrs)

    async def expect_error(self, instr: Instr | int, code: int) -> None:
        """The instruction is taken, error_o rises with `code`, nothing completes or hangs."""
        dut = self.dut
        self.offer([instr])
        before = {b: len(s.writes) for b, s in self.srams.items()}
        limit = 2 * ROWS + COLS + 3 * 2**10
        for _ in range(limit):
            await self.step()
            assert not int(dut.done_o.value), f"done_o for failing {instr}"
            if int(dut.error_o.value):
                break
        else:
            raise AssertionError(f"no error within {limit} cycles for {instr}")
        assert self.inflight, "error without taking the instruction"
        assert int(dut.error_code_o.value) == code, (
            f"error code {int(dut.error_code_o.value)} != {code}"
        )
        for _ in range(2 * ROWS + COLS + 8):  # stays stopped: sticky, never ready, no done
            await self.step()
            assert int(dut.error_o.value) and int(dut.error_code_o.value) == code
            assert not int(dut.instr_ready_o.value) and not int(dut.done_o.value)
        if isinstance(instr, Instr) and code == ERR_RANGE:
            buf, allowed = written_entries(instr)
            extra = set(self.srams[buf].writes[before[buf] :]) - allowed
            assert not extra, f"failing {instr} wrote {buf} entries {sorted(extra)}"
        for b in BUFFERS:
            if not (
                isinstance(instr, Instr) and code == ERR_RANGE and b == written_entries(instr)[0]
            ):
                assert len(self.srams[b].writes) == before[b], f"{b} written by failing {instr}"
        self.queue.clear()
        await self.reset()
        # the partial writes are not the golden model's: start again from its buffers
        self.load_from_golden()


async def new_tb(dut: SimHandleBase, seed: int = 0) -> ComputeTb:
    tb = ComputeTb(dut, seed)
    random_contents(np.random.default_rng(tb.rng.getrandbits(32)), tb)
    await tb.reset()
    return tb


def golden_rejects(instr: Instr) -> bool:
    """The checking pass (compiler/check.py) refuses the instruction."""
    try:
        check.check_stream(CFG, isa.decode_array(isa.to_bytes([instr, END])), DRAM.size)
    except ExecutionError:
        return True
    return False


# -- tests ---------------------------------------------------------------------------------
@cocotb.test()
@cocotb.parametrize(gap=[0.0, 0.4])
async def test_random_sequence(dut: SimHandleBase, gap: float) -> None:
    """Random GEMM/POST/ALU sequences vs the golden model, back to back or with idle cycles."""
    tb = await new_tb(dut, int(gap * 10))
    n = 600 if ROWS <= 4 else 200
    instrs = [random_instr(tb.rng) for _ in range(n)]
    await tb.run_legal(instrs, gap)
    dut._log.info(f"{n} instructions: {tb.rtl_cycles} cycles from taking to done, summed")


@cocotb.test()
async def test_gemm_hazards(dut: SimHandleBase) -> None:
    """GEMMs accumulating into repeated ACC entries, and ALU/POST right after a GEMM."""
    tb = await new_tb(dut, 1)
    rng = tb.rng
    instrs = []
    for reset in (0, 1):
        for no, ni, aos, ais in [
            (1, 7, 0, 0),
            (3, 4, 1, 0),
            (2, 5, 0, 1),
            (4, 3, 0, 0),
            (1, 2, 0, 0),
        ]:
            g = random_gemm(rng, no, ni).fields | dict(
                reset=reset, acc_outer_stride=aos, acc_inner_stride=ais
            )
            g["acc_base"] = rng.randint(0, CFG.acc_entries - 1 - (no - 1) * aos - (ni - 1) * ais)
            instrs.append(isa.make(Opcode.GEMM, **g))
            a = g["acc_base"] + (no - 1) * aos + (ni - 1) * ais  # the last entry written
            instrs.append(
                isa.make(
                    Opcode.ALU,
                    **random_alu(rng, AluOp.ADD).fields
                    | dict(dst_base=a, src_base=a, n_outer=1, n_inner=1),
                )
            )
            instrs.append(
                isa.make(
                    Opcode.POST,
                    **post_fields(rng)
                    | dict(acc_base=a, count=1, blocks=1, par_addr=rng.randrange(CFG.par_entries)),
                )
            )
    await tb.run_legal(instrs)


@cocotb.test()
async def test_gemms_beside_post(dut: SimHandleBase) -> None:
    """GEMMs taken while a POST runs: ones writing ACC entries the POST still reads wait (below
    the block being read, above its last entry, inside the current or a later block, the
    last entry itself), the others overlap; with strides 0 and > count."""
    tb = await new_tb(dut, 6)
    rng = tb.rng
    instrs = []
    acc = CFG.acc_entries
    for blocks, count, bstride in [(3, 4, 6), (2, 5, 0), (4, 2, 2), (1, 9, 0)]:
        blocks = min(blocks, CFG.par_entries)
        base = rng.randint(0, acc - 1 - (blocks - 1) * bstride - (count - 1))
        last = base + (blocks - 1) * bstride + count - 1
        out_base, out_stride = block_loop(rng, CFG.out_entries, blocks, count)
        post = post_fields(rng) | dict(blocks=blocks, count=count, par_addr=0)
        post |= dict(acc_base=base, acc_block_stride=bstride)
        post |= dict(out_base=out_base, out_block_stride=out_stride)
        instrs.append(isa.make(Opcode.POST, **post))
        targets = {0, base - 1, base, base + count // 2, last, last + 1, acc - 1}
        targets |= {base + bstride * (blocks - 1)}
        for a in sorted(t for t in targets if 0 <= t < acc):
            ni = rng.randint(1, 3)
            g = random_gemm(rng, 1, ni).fields
            g |= dict(acc_base=min(a, acc - ni), acc_outer_stride=0, acc_inner_stride=1)
            instrs.append(isa.make(Opcode.GEMM, **g | dict(reset=rng.randint(0, 1))))
    await tb.run_legal(instrs)


@cocotb.test()
async def test_alu_hazards(dut: SimHandleBase) -> None:
    """ALU reductions (dst strides 0), dst entries alternating, src a dst 1..3 trips back."""
    tb = await new_tb(dut, 2)
    rng = tb.rng
    instrs = []
    for op in AluOp:
        for no, ni in [(1, 9), (3, 4), (5, 1)]:
            n = no * ni
            base = rng.randint(0, CFG.acc_entries - n - 3)
            reduce_all = dict(dst_base=base, dst_outer_stride=0, dst_inner_stride=0)
            reduce_row = dict(dst_base=base, dst_outer_stride=1, dst_inner_stride=0)
            src = dict(src_base=base + 1, src_outer_stride=ni, src_inner_stride=1)
            for d in (reduce_all, reduce_row):
                f = random_alu(rng, op).fields | dict(n_outer=no, n_inner=ni) | d | src
                instrs.append(isa.make(Opcode.ALU, **f))
            for lag in (1, 2, 3):  # trip j reads the entry trip j - lag wrote
                f = random_alu(rng, op).fields | dict(n_outer=1, n_inner=n)
                f |= dict(dst_base=base + lag, dst_outer_stride=0, dst_inner_stride=1)
                f |= dict(src_base=base, src_outer_stride=0, src_inner_stride=1)
                instrs.append(isa.make(Opcode.ALU, **f))
            f = random_alu(rng, op).fields | dict(n_outer=n, n_inner=2)  # dst d, d+1, d, ...
            f |= dict(dst_base=base, dst_outer_stride=0, dst_inner_stride=1)
            f |= dict(src_base=base + 2, src_outer_stride=1, src_inner_stride=0)
            instrs.append(isa.make(Opcode.ALU, **f))
            f = random_alu(rng, op).fields | dict(n_outer=no, n_inner=ni)  # in place
            f |= dict(dst_base=base, dst_outer_stride=ni, dst_inner_stride=1)
            f |= dict(src_base=base, src_outer_stride=ni, src_inner_stride=1)
            instrs.append(isa.make(Opcode.ALU, **f))
    await tb.run_legal(instrs)


@cocotb.test()
async def test_degenerate(dut: SimHandleBase) -> None:
    """No iterations, single iterations, count 0, blocks 0: counts, cycles, no writes."""
    tb = await new_tb(dut, 3)
    rng = tb.rng
    instrs = []
    for no, ni in [(0, 0), (0, 3), (3, 0), (1, 1)]:
        instrs.append(random_gemm(rng, no, ni))
        f = random_alu(rng).fields | dict(n_outer=no, n_inner=ni)
        instrs.append(isa.make(Opcode.ALU, **f))
    # an empty GEMM checks nothing (check.py): its WGT entry may be outside the buffer
    f = random_gemm(rng, 0, 2).fields | dict(wgt_addr=CFG.wgt_entries + 5, inp_base=2**16 - 1)
    instrs.append(isa.make(Opcode.GEMM, **f))
    for blocks, count in [(0, 0), (0, 4), (2, 0), (1, 0), (1, 1), (CFG.par_entries, 1)]:
        f = post_fields(rng) | dict(blocks=blocks, count=count, par_addr=0)
        f |= dict(acc_base=0, out_base=0, acc_block_stride=count, out_block_stride=count)
        instrs.append(isa.make(Opcode.POST, **f))
    await tb.run_legal(instrs)


@cocotb.test()
async def test_long(dut: SimHandleBase) -> None:
    """Long streams: many GEMM vectors, a POST over all of ACC, a long ALU."""
    tb = await new_tb(dut, 4)
    rng = tb.rng
    instrs = [
        random_gemm(rng, 3, 20),
        isa.make(Opcode.GEMM, **random_gemm(rng, 1, 60).fields | dict(inp_inner_stride=0)),
        isa.make(
            Opcode.POST,
            **post_fields(rng)
            | dict(acc_base=0, out_base=0, count=min(CFG.acc_entries, CFG.out_entries), blocks=1),
        ),
        isa.make(
            Opcode.ALU,
            **random_alu(rng, AluOp.MAX).fields
            | dict(n_outer=1, n_inner=CFG.acc_entries, dst_base=0, dst_outer_stride=0)
            | dict(dst_inner_stride=0, src_base=0, src_outer_stride=0, src_inner_stride=1),
        ),
    ]
    await tb.run_legal(instrs)


def out_of_range(rng: random.Random) -> list[Instr]:
    """Instructions with one access outside its buffer: the first one or a later one."""
    big = 2**16 - 1
    g = random_gemm(rng, 2, 3).fields
    p = post_fields(rng) | dict(blocks=2, count=3, par_addr=0)
    p |= dict(acc_base=0, acc_block_stride=3, out_base=0, out_block_stride=3)
    a = random_alu(rng).fields | dict(n_outer=2, n_inner=3)
    a |= dict(dst_base=0, dst_outer_stride=3, dst_inner_stride=1)
    a |= dict(src_base=0, src_outer_stride=3, src_inner_stride=1)
    bad = [
        isa.make(Opcode.GEMM, **g | dict(wgt_addr=CFG.wgt_entries)),
        isa.make(Opcode.GEMM, **g | dict(inp_base=CFG.inp_entries)),
        isa.make(Opcode.GEMM, **g | dict(inp_inner_stride=CFG.inp_entries // 2, inp_base=1)),
        isa.make(Opcode.GEMM, **g | dict(acc_base=big)),
        isa.make(Opcode.GEMM, **g | dict(acc_outer_stride=big, acc_inner_stride=big)),
        isa.make(
            Opcode.GEMM,
            **g | dict(acc_base=1, acc_outer_stride=CFG.acc_entries - 2, acc_inner_stride=1),
        ),
        isa.make(Opcode.POST, **p | dict(acc_base=CFG.acc_entries - 2, acc_block_stride=0)),
        isa.make(Opcode.POST, **p | dict(acc_block_stride=CFG.acc_entries - 2)),
        isa.make(Opcode.POST, **p | dict(out_base=CFG.out_entries - 1, out_block_stride=0)),
        isa.make(Opcode.POST, **p | dict(out_block_stride=big)),
        isa.make(Opcode.POST, **p | dict(par_addr=CFG.par_entries - 1)),
        isa.make(Opcode.POST, **p | dict(par_addr=big)),
        isa.make(Opcode.ALU, **a | dict(dst_base=CFG.acc_entries)),
        isa.make(Opcode.ALU, **a | dict(dst_outer_stride=CFG.acc_entries - 1)),
        isa.make(Opcode.ALU, **a | dict(src_base=big, src_outer_stride=big, src_inner_stride=big)),
        isa.make(Opcode.ALU, **a | dict(src_base=1, src_outer_stride=0, src_inner_stride=big // 3)),
    ]
    return bad


@cocotb.test()
async def test_errors(dut: SimHandleBase) -> None:
    """Out-of-range accesses, illegal ALU ops and opcodes: error code, no stray write, no hang.

    Each failing instruction comes after a legal one and is followed by a reset and a legal
    instruction (checked against the golden model): the engine works again after reset.
    """
    tb = await new_tb(dut, 5)
    rng = tb.rng
    cases: list[tuple[Instr | int, int]] = [(i, ERR_RANGE) for i in out_of_range(rng)]
    for op in (5, 6, 7):
        for no, ni in [(2, 3), (0, 0)]:
            f = random_alu(rng).fields | dict(alu_op=op, n_outer=no, n_inner=ni)
            cases.append((isa.make(Opcode.ALU, **f), ERR_ALU_OP))
    for code in (0, 1, 2, 6, 7, 8, 15):  # LOAD, STORE and END are not the compute engine's
        cases.append(((rng.getrandbits(isa.INSTR_BITS) & ~0xF) | code, ERR_OPCODE))
    for instr, code in cases:
        if isinstance(instr, Instr):
            assert golden_rejects(instr), f"the checking pass accepts {instr}"
        await tb.run_all([random_instr(rng)])
        await tb.expect_error(instr, code)
        await tb.run_all([random_instr(rng), random_instr(rng)])
    assert tb.checked == 3 * len(cases)
