"""cocotb tests of dpu_dispatch: in-order dispatch to three engines through dependency tokens.

Engine models take commands and complete them after random latencies, recording start and
finish cycles; the checker verifies from those records alone the token rules of
docs/isa.md and compiler/timing.py (the k-th pop of a token FIFO waits for the k-th push's
completion), program order per engine, the in-flight limit (one instruction for load and
store, ComputeInFlight for compute, which the compute model fills: it takes commands while
others run and completes them in order), and that END's done came after everything
finished. Run by tests/test_rtl_dispatch.py, which sets DPU_DISPATCH_QUEUE_DEPTH to
QueueDepth and DPU_DISPATCH_COMPUTE_IN_FLIGHT to ComputeInFlight.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.handle import SimHandleBase
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.types import LogicArray
from cocotb.utils import get_sim_time

from dpukit.compiler import isa
from dpukit.compiler.compile import compile_model
from dpukit.compiler.isa import ENGINE_OF, INSTR_BITS, INSTR_BYTES, Engine, Opcode
from dpukit.compiler.timing import QUEUES, token_queues
from dpukit.models import zoo
from dpukit.quantize import quantize_model

PERIOD_NS = 10
ENGINES = {Engine.LOAD: "load", Engine.COMPUTE: "compute", Engine.STORE: "store"}
ERR_OPCODE, ERR_FLAGS, ERR_OVERFLOW = 1, 2, 3  # documented in hw/rtl/dpu_dispatch.sv


def cycle() -> int:
    return int(get_sim_time("ns")) // PERIOD_NS


# -- programs ------------------------------------------------------------------------------
@functools.cache
def compiled_program(model: str) -> bytes:
    """The DPU subgraph's instruction stream of a zoo model compiled for sim-small."""
    net, shape = zoo.MODELS[model]()
    with tempfile.TemporaryDirectory(prefix="dpukit-dispatch-") as tmp:
        qdq = quantize_model(net, Path(tmp) / f"{model}.onnx", zoo.calibration_data(shape))
        program = compile_model(qdq, "sim-small")
    (dpu,) = [sg for sg in program.subgraphs if sg.device == "DPU"]
    return dpu.payload


def words_of(blob: bytes) -> list[int]:
    return [
        int.from_bytes(blob[i : i + INSTR_BYTES], "little")
        for i in range(0, len(blob), INSTR_BYTES)
    ]


def instr(op: Opcode, **flags: bool) -> int:
    """An instruction word with all fields 0 and the given token flags."""
    fields = {f.name: 0 for f in isa.LAYOUT[op] if f.default is None}
    return isa.encode(isa.make(op, **fields, **flags))


def with_opcode(word: int, code: int) -> int:
    """The word with its opcode nibble replaced: the only way to build an illegal opcode."""
    return (word & ~((1 << isa.OPCODE_BITS) - 1)) | code


def flag_queues(engine: Engine) -> dict[str, str]:
    """The token FIFO each legal flag of the engine names (compiler/timing.py's QUEUES)."""
    out = {}
    for flag, other, popping in (
        ("pop_prev", engine - 1, True),
        ("pop_next", engine + 1, True),
        ("push_prev", engine - 1, False),
        ("push_next", engine + 1, False),
    ):
        if Engine.LOAD <= other <= Engine.STORE:
            pair = (Engine(other), engine) if popping else (engine, Engine(other))
            out[flag] = QUEUES[pair]
    return out


def random_program(rng: random.Random, n: int, budget: int) -> list[int]:
    """n random instructions and END. Every pop takes a token pushed by an instruction earlier
    in program order, so every wait points backwards and the program cannot deadlock; at most
    `budget` pushes per FIFO (<= QueueDepth), so no counter can overflow however far an engine
    runs ahead of the one popping."""
    pushed = dict.fromkeys(QUEUES.values(), 0)
    popped = dict.fromkeys(QUEUES.values(), 0)
    ops = [Opcode.LOAD, Opcode.GEMM, Opcode.GEMM, Opcode.GEMM, Opcode.POST, Opcode.ALU]
    words = []
    for _ in range(n):
        op = rng.choice([*ops, Opcode.STORE])
        flags = {}
        for flag, q in flag_queues(ENGINE_OF[op]).items():
            if flag.startswith("pop") and popped[q] < pushed[q] and rng.random() < 0.7:
                flags[flag] = True
                popped[q] += 1
        for flag, q in flag_queues(ENGINE_OF[op]).items():
            if flag.startswith("push") and pushed[q] < budget and rng.random() < 0.4:
                flags[flag] = True
                pushed[q] += 1
        words.append(instr(op, **flags))
    return [*words, instr(Opcode.END)]


# -- models --------------------------------------------------------------------------------
@dataclass
class Run:
    """One instruction as an engine executed it: taken in cycle start, completed in finish."""

    word: int
    start: int
    finish: int = -1


class EngineModel:
    """Takes a command when ready, also while up to `limit` - 1 others are in flight, and
    completes each min_latency..max_latency cycles after its take at the earliest, in the
    order taken, at most one per cycle (as dpu_compute retires). Checks every cycle that a
    command is offered only below the limit (this cycle's completion freeing a slot) and
    that busy_o and blocked_o agree with what is in flight."""

    def __init__(self, dut: SimHandleBase, engine: Engine, rng: random.Random):
        self.name, self.rng, self.clk = ENGINES[engine], rng, dut.clk_i
        self.bit = int(engine)  # of busy_o and blocked_o
        self.valid = getattr(dut, f"{self.name}_valid_o")
        self.ready = getattr(dut, f"{self.name}_ready_i")
        self.instr = getattr(dut, f"{self.name}_instr_o")
        self.complete = getattr(dut, f"{self.name}_complete_i")
        self.busy, self.blocked = dut.busy_o, dut.blocked_o
        self.runs: list[Run] = []
        self.hold = False  # ready forced low
        self.pause: Iterator[int] = itertools.repeat(0)
        self.limit = 1
        self.min_latency = 1
        self.max_latency = 1
        self.max_in_flight = 0

    def latency(self) -> int:
        """Half the instructions as short as allowed (exercising take-while-completing)."""
        if self.rng.random() < 0.5:
            return self.min_latency
        return self.rng.randint(self.min_latency, max(self.min_latency, self.max_latency))

    async def run(self) -> None:
        in_flight: deque[tuple[Run, int]] = deque()  # oldest first, with its earliest finish
        self.ready.value = 0
        self.complete.value = 0
        while True:
            await RisingEdge(self.clk)
            now = cycle()
            completing = bool(in_flight) and in_flight[0][1] <= now
            if completing:
                in_flight.popleft()[0].finish = now
            ready = not self.hold and next(self.pause) == 0
            self.complete.value = int(completing)
            self.ready.value = int(ready)
            await ReadOnly()
            valid = int(self.valid.value)
            busy = self.busy.value.to_unsigned() >> self.bit & 1
            blocked = self.blocked.value.to_unsigned() >> self.bit & 1
            # busy_o is registered: this cycle's completion still counts, its take not yet
            assert busy == int(completing or bool(in_flight)), f"{self.name}: busy_o {busy}"
            assert not (blocked and (busy or valid)), f"{self.name}: blocked_o while busy/valid"
            assert not valid or len(in_flight) < self.limit, (
                f"{self.name}: command offered with {len(in_flight)} in flight"
            )
            if ready and valid:
                run = Run(self.instr.value.to_unsigned(), now)
                self.runs.append(run)
                in_flight.append((run, now + self.latency()))
                self.max_in_flight = max(self.max_in_flight, len(in_flight))


class InstrDriver:
    """Presents the words in order with valid/ready, with random idle gaps."""

    def __init__(self, dut: SimHandleBase, rng: random.Random):
        self.dut, self.rng = dut, rng
        self.accepted: list[int] = []  # cycle each word was accepted
        self.p_gap = 0.0

    async def send(self, words: Sequence[int]) -> None:
        dut = self.dut
        for w in words:
            while self.rng.random() < self.p_gap:
                dut.instr_valid_i.value = 0
                await RisingEdge(dut.clk_i)
            dut.instr_valid_i.value = 1
            dut.instr_i.value = LogicArray.from_unsigned(w, INSTR_BITS)
            while True:
                await ReadOnly()
                now, ready = cycle(), int(dut.instr_ready_o.value)
                await RisingEdge(dut.clk_i)
                if ready:
                    self.accepted.append(now)
                    break
        dut.instr_valid_i.value = 0


class PulseMonitor:
    """Cycles in which a one-bit output is high."""

    def __init__(self, dut: SimHandleBase, signal: SimHandleBase):
        self.clk, self.signal = dut.clk_i, signal
        self.cycles: list[int] = []

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if int(self.signal.value):
                self.cycles.append(cycle())


# -- checker -------------------------------------------------------------------------------
def check_schedule(
    words: Sequence[int], accepted: Sequence[int], engines: dict[Engine, EngineModel], done: list
) -> dict[str, int]:
    """The token, order and END rules, checked on the recorded cycles of one program."""
    col = isa.decode_array(b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words))
    n = len(words)
    assert Opcode(int(col["op"][-1])) == Opcode.END and len(accepted) == n
    start, finish = [-1] * n, [-1] * n
    for e, model in engines.items():
        mine = [i for i in range(n - 1) if ENGINE_OF[Opcode(int(col["op"][i]))] == e]
        got = [r.word for r in model.runs]
        assert got == [words[i] for i in mine], f"{model.name}: not the program's order"
        for k, (i, r) in enumerate(zip(mine, model.runs, strict=True)):
            assert r.finish > r.start > accepted[i], f"instr {i}: start/finish {r}"
            if k:
                assert r.finish > model.runs[k - 1].finish, f"instr {i}: completed out of order"
            if k >= model.limit:
                # starts and finishes are in order: then this bounds the count in flight
                before = model.runs[k - model.limit]
                assert r.start >= before.finish, f"instr {i}: over {model.limit} in flight"
            start[i], finish[i] = r.start, r.finish
    pushed: dict[str, list[int]] = {q: [] for q in QUEUES.values()}
    popped: dict[str, int] = dict.fromkeys(QUEUES.values(), 0)
    for i in range(n - 1):
        for q in token_queues(Engine(ENGINE_OF[Opcode(int(col["op"][i]))]), col, i)[1]:
            pushed[q].append(i)
    for e in engines:
        for i in (i for i in range(n - 1) if ENGINE_OF[Opcode(int(col["op"][i]))] == e):
            for q in token_queues(e, col, i)[0]:
                src = pushed[q][popped[q]]
                popped[q] += 1
                assert start[i] > finish[src], (
                    f"instr {i} started in cycle {start[i]} before its {q} token from "
                    f"instr {src} (finished {finish[src]})"
                )
    last = max(finish, default=0)
    assert accepted[-1] > last, "END accepted while an engine was busy"
    assert done == [accepted[-1] + 1], f"done pulses {done}, END accepted {accepted[-1]}"
    running = [0] * (last + 1)
    for s, f in zip(start, finish, strict=True):
        for t in range(s, f if s >= 0 else s):
            running[t] += 1
    overlap = sum(r > 1 for r in running)
    in_flight = engines[Engine.COMPUTE].max_in_flight
    return {"cycles": done[0] - accepted[0], "overlap": overlap, "compute_in_flight": in_flight}


# -- testbench -----------------------------------------------------------------------------
class DispatchTb:
    """Clock, reset, the instruction driver, three engine models and done/error monitors."""

    def __init__(self, dut: SimHandleBase):
        self.dut = dut
        self.depth = int(os.environ["DPU_DISPATCH_QUEUE_DEPTH"])
        assert int(dut.QueueDepth.value) == self.depth, "DUT built with another QueueDepth"
        self.in_flight = int(os.environ["DPU_DISPATCH_COMPUTE_IN_FLIGHT"])
        assert int(dut.ComputeInFlight.value) == self.in_flight, "another ComputeInFlight"
        self.rng = random.Random(cocotb.RANDOM_SEED)
        self.driver = InstrDriver(dut, self.rng)
        self.engines = {e: EngineModel(dut, e, self.rng) for e in ENGINES}
        self.engines[Engine.COMPUTE].limit = self.in_flight
        self.done = PulseMonitor(dut, dut.done_o)
        self.error = PulseMonitor(dut, dut.error_o)

    def backpressure(self, max_latency: int, p_stall: float, p_gap: float) -> None:
        """Random latencies up to max_latency, engines not ready with probability p_stall."""
        self.driver.p_gap = p_gap
        for m in self.engines.values():
            m.max_latency = max_latency
            m.pause = (int(self.rng.random() < p_stall) for _ in itertools.count())

    async def start(self) -> None:
        dut = self.dut
        dut.instr_valid_i.value = 0
        dut.instr_i.value = LogicArray.from_unsigned(0, INSTR_BITS)
        for name in ENGINES.values():
            getattr(dut, f"{name}_ready_i").value = 0
            getattr(dut, f"{name}_complete_i").value = 0
        dut.rst_ni.value = 0
        Clock(dut.clk_i, PERIOD_NS, unit="ns").start()
        await ClockCycles(dut.clk_i, 3)
        dut.rst_ni.value = 1
        await RisingEdge(dut.clk_i)
        for m in (*self.engines.values(), self.done, self.error):
            cocotb.start_soon(m.run())

    async def feed(self, words: Sequence[int], cycles: int) -> None:
        """Send the words, waiting at most `cycles` cycles for done or an error."""
        cocotb.start_soon(self.driver.send(words))
        for _ in range(cycles):
            await RisingEdge(self.dut.clk_i)
            if self.done.cycles or self.error.cycles:
                break
        await ClockCycles(self.dut.clk_i, 2)

    async def run(self, words: Sequence[int]) -> dict[str, int]:
        """Run a program to completion and check its schedule."""
        await self.feed(words, 50 * len(words) + 200)
        assert not self.error.cycles, f"error code {int(self.dut.error_code_o.value)}"
        assert self.done.cycles, f"no done after {len(self.driver.accepted)} accepted"
        return check_schedule(words, self.driver.accepted, self.engines, self.done.cycles)

    def clear(self) -> None:
        """Forget the records of the previous program."""
        self.driver.accepted, self.done.cycles = [], []
        for m in self.engines.values():
            m.runs = []

    def taken(self) -> list[int]:
        return [r.word for m in self.engines.values() for r in m.runs]


# -- tests ---------------------------------------------------------------------------------
@cocotb.test()
@cocotb.parametrize(model=["mlp", "conv_variants"], backpressure=[False, True])
async def test_compiled_program(dut: SimHandleBase, model: str, backpressure: bool) -> None:
    """A compiler-generated stream runs to done with every token rule met."""
    tb = DispatchTb(dut)
    words = words_of(compiled_program(model))
    if backpressure:
        tb.backpressure(max_latency=12, p_stall=0.3, p_gap=0.2)
    else:
        tb.backpressure(max_latency=12, p_stall=0.0, p_gap=0.0)
    await tb.start()
    stats = await tb.run(words)
    assert stats["overlap"] > 0, "the engines never ran concurrently"
    dut._log.info("%s: %d instructions, %s", model, len(words), stats)


@cocotb.test()
async def test_two_programs(dut: SimHandleBase) -> None:
    """Tokens both ways along the chain; after END's done the next program is accepted."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=6, p_stall=0.3, p_gap=0.2)
    await tb.start()
    words = [
        instr(Opcode.LOAD, push_next=True),
        instr(Opcode.GEMM, pop_prev=True, push_next=True),
        instr(Opcode.STORE, pop_prev=True, push_prev=True),
        instr(Opcode.ALU, pop_next=True, push_prev=True),
        instr(Opcode.LOAD, pop_next=True),
        instr(Opcode.END),
    ]
    await tb.run(words)
    tb.clear()
    await tb.run(words)


@cocotb.test()
async def test_fifo_full_stalls_input(dut: SimHandleBase) -> None:
    """With the compute engine not ready, exactly QueueDepth compute words are accepted and
    the LOAD behind them waits (in-order fetch); released, the program completes."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=3, p_stall=0.0, p_gap=0.0)
    tb.engines[Engine.COMPUTE].hold = True
    await tb.start()
    words = [instr(Opcode.GEMM)] * (tb.depth + 3) + [instr(Opcode.LOAD), instr(Opcode.END)]
    cocotb.start_soon(tb.driver.send(words))
    await ClockCycles(dut.clk_i, 3 * tb.depth + 20)
    assert len(tb.driver.accepted) == tb.depth
    assert not int(dut.instr_ready_o.value) and not tb.taken()
    tb.engines[Engine.COMPUTE].hold = False
    for _ in range(20 * len(words)):
        await RisingEdge(dut.clk_i)
        if tb.done.cycles:
            break
    await ClockCycles(dut.clk_i, 2)
    check_schedule(words, tb.driver.accepted, tb.engines, tb.done.cycles)


@cocotb.test()
@cocotb.parametrize(code=[0, 6, 8, 15])
async def test_illegal_opcode(dut: SimHandleBase, code: int) -> None:
    """An illegal opcode raises error_o, is never dispatched, and input stays stalled."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=4, p_stall=0.0, p_gap=0.0)
    await tb.start()
    legal = [instr(Opcode.LOAD), instr(Opcode.GEMM)]
    bad = with_opcode(instr(Opcode.ALU), code)
    await tb.feed([*legal, bad, instr(Opcode.STORE), instr(Opcode.END)], 200)
    await ClockCycles(dut.clk_i, 20)
    assert tb.error.cycles and int(dut.error_code_o.value) == ERR_OPCODE
    assert len(tb.driver.accepted) == len(legal) and not int(dut.instr_ready_o.value)
    assert bad not in tb.taken() and instr(Opcode.STORE) not in tb.taken()
    assert not tb.done.cycles
    assert tb.error.cycles[-1] - tb.error.cycles[0] == len(tb.error.cycles) - 1, "not sticky"


@cocotb.test()
@cocotb.parametrize(
    bad=[
        (Opcode.LOAD, "pop_prev"),
        (Opcode.LOAD, "push_prev"),
        (Opcode.STORE, "pop_next"),
        (Opcode.STORE, "push_next"),
    ]
)
async def test_illegal_flags(dut: SimHandleBase, bad: tuple[Opcode, str]) -> None:
    """A token flag naming a neighbour the engine lacks is an error (ExecutionError in
    compiler/timing.py); the word is not accepted."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=2, p_stall=0.0, p_gap=0.0)
    await tb.start()
    op, flag = bad
    await tb.feed([instr(Opcode.GEMM), instr(op, **{flag: True}), instr(Opcode.END)], 100)
    assert tb.error.cycles and int(dut.error_code_o.value) == ERR_FLAGS
    assert len(tb.driver.accepted) == 1 and tb.taken() == [instr(Opcode.GEMM)]


@cocotb.test()
@cocotb.parametrize(extra=[0, 1])
async def test_token_capacity(dut: SimHandleBase, extra: int) -> None:
    """QueueDepth outstanding tokens are fine; one more is an overflow error."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=2, p_stall=0.0, p_gap=0.0)
    tb.engines[Engine.COMPUTE].hold = True
    await tb.start()
    n = tb.depth + extra
    loads = [instr(Opcode.LOAD, push_next=True)] * n
    gemms = [instr(Opcode.GEMM, pop_prev=True)] * n
    cocotb.start_soon(tb.driver.send([*loads, *gemms, instr(Opcode.END)]))
    await ClockCycles(dut.clk_i, 4 * n + 20)
    tb.engines[Engine.COMPUTE].hold = False
    await ClockCycles(dut.clk_i, 6 * n + 20)
    if extra:
        assert tb.error.cycles and int(dut.error_code_o.value) == ERR_OVERFLOW
        assert not tb.done.cycles and not tb.engines[Engine.COMPUTE].runs
    else:
        assert not tb.error.cycles
        words = [*loads, *gemms, instr(Opcode.END)]
        check_schedule(words, tb.driver.accepted, tb.engines, tb.done.cycles)


@cocotb.test()
@cocotb.parametrize(kind=["never_pushed", "circular"])
async def test_unsatisfiable_pops(dut: SimHandleBase, kind: str) -> None:
    """A pop no push can satisfy blocks its engine forever: no done, the blocked
    instruction never reaches its engine, independent engines still run."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=3, p_stall=0.0, p_gap=0.0)
    await tb.start()
    if kind == "never_pushed":
        blocked = [instr(Opcode.GEMM, pop_prev=True)]
        words = [instr(Opcode.LOAD), *blocked, instr(Opcode.STORE), instr(Opcode.END)]
        free = [instr(Opcode.LOAD), instr(Opcode.STORE)]
    else:  # load waits for compute's token, compute for load's
        blocked = [
            instr(Opcode.LOAD, pop_next=True, push_next=True),
            instr(Opcode.GEMM, pop_prev=True, push_prev=True),
        ]
        words = [*blocked, instr(Opcode.STORE), instr(Opcode.END)]
        free = [instr(Opcode.STORE)]
    await tb.feed(words, 500)
    assert not tb.done.cycles and not tb.error.cycles
    assert sorted(tb.taken()) == sorted(free)
    assert len(tb.driver.accepted) == len(words) - 1, "everything but END is fetched"
    assert not int(dut.instr_ready_o.value)


@cocotb.test()
@cocotb.parametrize(seed=[1, 2, 3], backpressure=[False, True])
async def test_random_program(dut: SimHandleBase, seed: int, backpressure: bool) -> None:
    """Random token patterns on all four FIFOs, compute instructions with longer latencies
    than the others (so several are in flight and complete out of their latency order)."""
    tb = DispatchTb(dut)
    words = random_program(random.Random(seed), 150, min(tb.depth, 16))
    tb.backpressure(max_latency=8, p_stall=0.3 if backpressure else 0.0, p_gap=0.1)
    tb.engines[Engine.COMPUTE].max_latency = 4 * tb.in_flight + 8
    await tb.start()
    stats = await tb.run(words)
    dut._log.info("random program %d: %s", seed, stats)


@cocotb.test()
async def test_compute_offered_up_to_limit(dut: SimHandleBase) -> None:
    """Tokens free, the FIFO never empty and the compute engine always ready: a command is
    taken in every cycle it may be, back to back up to ComputeInFlight, then each in the
    cycle the oldest completes."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=3 * tb.in_flight + 4, p_stall=0.0, p_gap=0.0)
    compute = tb.engines[Engine.COMPUTE]
    compute.min_latency = tb.in_flight + 1  # the first completes after the limit is reached
    compute.hold = True  # until the FIFO is full
    await tb.start()
    ops = [Opcode.GEMM, Opcode.POST, Opcode.ALU]
    words = [instr(tb.rng.choice(ops)) for _ in range(tb.depth + 4 * tb.in_flight)]
    words.append(instr(Opcode.END))
    cocotb.start_soon(tb.driver.send(words))
    await ClockCycles(dut.clk_i, tb.depth + 10)
    compute.hold = False
    for _ in range(40 * len(words)):
        await RisingEdge(dut.clk_i)
        if tb.done.cycles:
            break
    await ClockCycles(dut.clk_i, 2)
    stats = check_schedule(words, tb.driver.accepted, tb.engines, tb.done.cycles)
    assert stats["compute_in_flight"] == tb.in_flight
    runs, limit = compute.runs, tb.in_flight
    for k in range(1, len(runs)):
        first = runs[k - 1].start + 1
        expect = max(first, runs[k - limit].finish) if k >= limit else first
        assert runs[k].start == expect, f"run {k} taken in {runs[k].start}, could in {expect}"


@cocotb.test()
async def test_error_with_compute_in_flight(dut: SimHandleBase) -> None:
    """An error while ComputeInFlight compute instructions run: nothing more is offered,
    the ones in flight still complete (busy_o falls back to 0), no done."""
    tb = DispatchTb(dut)
    tb.backpressure(max_latency=30, p_stall=0.0, p_gap=0.0)
    compute = tb.engines[Engine.COMPUTE]
    compute.min_latency = tb.in_flight + 10  # still all in flight when the error comes
    await tb.start()
    gemms = [instr(Opcode.GEMM, push_next=True)] * (tb.in_flight + 2)
    bad = with_opcode(instr(Opcode.ALU), 0)
    await tb.feed([*gemms, bad, instr(Opcode.STORE, pop_prev=True), instr(Opcode.END)], 100)
    await ClockCycles(dut.clk_i, 40)
    assert tb.error.cycles and int(dut.error_code_o.value) == ERR_OPCODE
    assert len(tb.driver.accepted) == len(gemms) and not tb.done.cycles
    assert tb.taken() == gemms[: tb.in_flight]
    assert all(r.finish > tb.error.cycles[0] for r in compute.runs), "not in flight at the error"
    assert int(dut.busy_o.value) == 0 and int(dut.blocked_o.value) == 0
