"""The DPU's cycle model, and the scheduler that runs it over an instruction stream.

Per-instruction costs (cycles at the DPU clock):
  fetch   every instruction is INSTR_BYTES / bus_bytes beats, fetched in order and
          pipelined; the first fetch waits dram_latency. An instruction dispatches into its
          engine's command FIFO (queue_depth deep); fetch stalls while that FIFO is full.
  LOAD    DMA_SETUP + dram_latency + max(data beats, entries written): DMA_SETUP cycles to
          check the window and present the first request. Data beats count every AXI beat
          each contiguous run of bytes touches (so misalignment costs); padding entries are
          written while data streams, one entry per cycle.
  STORE   DMA_SETUP + dram_latency + max(data beats, entries read).
  GEMM    weight-stationary systolic pass of T = n_outer*n_inner activation vectors, one
          per cycle from the cycle it starts, done when the last result is written to ACC:
          max(T, 1) + rows + cols (the array's rows + cols - 1 latency, the INP read and the
          ACC write; a GEMM of no vectors still sends one write-less slot down the array).
          The weight tile goes in row by row along the wavefront of the first vector, so it
          costs no cycles of its own; but one tile preload takes `rows` cycles, so GEMMs in a
          row start max(T, rows) cycles apart: a GEMM may start that long after the GEMM
          before it started, while that one drains (SCALE-Sim counts 2*rows + cols - 2 + T
          per fold: preload, stream and drain, none overlapped).
  POST    blocks * max(count, 1) + POST_PIPELINE: one ACC entry per cycle through the
          SRAM read and the 4-stage requantization pipeline (a block of count 0 still reads
          its PAR entry, one cycle); a POST of 0 blocks costs POST_PIPELINE - 1. GEMMs that
          follow a POST run beside it (see ComputeTimer).
  ALU     n_outer*n_inner + ALU_PIPELINE (a zero-trip ALU, the layer barrier, costs 2)
  END     1, after all engines are idle.
An engine starts its next instruction when the previous one has finished and every token the
instruction pops has been pushed; a token is pushed when its instruction finishes. The
compute engine overlaps instructions (GEMMs back to back, GEMMs beside a POST) and finishes
them in program order: `ComputeTimer` has its rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpukit.compiler.dma import Dma
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import INSTR_BYTES, Engine, Opcode
from dpukit.errors import ExecutionError

POST_PIPELINE = 5
DMA_SETUP = 2
ALU_PIPELINE = 2
# Compute instructions taken and not yet retired, at most (dpu_compute's MaxInFlight).
COMPUTE_IN_FLIGHT = 16

# Token FIFOs, by (from engine, to engine).
QUEUES = {
    (Engine.LOAD, Engine.COMPUTE): "l2c",
    (Engine.COMPUTE, Engine.LOAD): "c2l",
    (Engine.COMPUTE, Engine.STORE): "c2s",
    (Engine.STORE, Engine.COMPUTE): "s2c",
}


def _prev(e: Engine) -> Engine | None:
    return Engine(e - 1) if e > Engine.LOAD else None


def _next(e: Engine) -> Engine | None:
    return Engine(e + 1) if e < Engine.STORE else None


def token_queues(engine: Engine, col: dict[str, np.ndarray], i: int) -> tuple[list, list]:
    """The FIFOs instruction i pops from and pushes to."""
    pops, pushes = [], []
    for flag, other, popping in (
        ("pop_prev", _prev(engine), True),
        ("pop_next", _next(engine), True),
        ("push_prev", _prev(engine), False),
        ("push_next", _next(engine), False),
    ):
        if col[flag][i]:
            if other is None:
                raise ExecutionError(f"instruction {i}: {flag} on the {engine.name} engine")
            if popping:
                pops.append(QUEUES[(other, engine)])
            else:
                pushes.append(QUEUES[(engine, other)])
    return pops, pushes


def dma_beats(starts: np.ndarray, length: int, bus_bytes: int) -> int:
    """AXI beats to move `length` bytes from each start address."""
    if length <= 0 or starts.size == 0:
        return 0
    return int(((starts + length - 1) // bus_bytes - starts // bus_bytes + 1).sum())


def dma_cycles(cfg: HwConfig, d: Dma) -> int:
    """A LOAD's or STORE's cycles."""
    beats = dma_beats(*d.runs(), cfg.bus_bytes)
    entries = d.entries if d.is_load or d.eb else 0  # a STORE of 0 bytes reads nothing
    return DMA_SETUP + cfg.dram_latency_cycles + max(beats, entries)


def gemm_fill(cfg: HwConfig) -> int:
    """A GEMM's cycles besides one per activation vector: the array's latency to ACC."""
    return cfg.rows + cfg.cols


def gemm_interval(cfg: HwConfig, vectors):
    """Cycles from a GEMM's start to the earliest start of a GEMM that follows it: its
    vectors stream, and the next weight tile's `rows`-cycle preload fits behind them."""
    return np.maximum(vectors, cfg.rows)


def instr_cycles(cfg: HwConfig, col: dict[str, np.ndarray]) -> np.ndarray:
    n = len(col["op"])
    cyc = np.ones(n, dtype=np.int64)
    op = col["op"]
    for i in np.flatnonzero((op == Opcode.LOAD) | (op == Opcode.STORE)):
        cyc[i] = dma_cycles(cfg, Dma.of(col, i))
    g = op == Opcode.GEMM
    cyc[g] = gemm_fill(cfg) + np.maximum(col["n_outer"][g] * col["n_inner"][g], 1)
    p = op == Opcode.POST
    blocks = col["blocks"][p]
    cyc[p] = np.where(
        blocks > 0, blocks * np.maximum(col["count"][p], 1) + POST_PIPELINE, POST_PIPELINE - 1
    )
    a = op == Opcode.ALU
    trips = col["n_outer"][a] * col["n_inner"][a]
    cyc[a] = trips + ALU_PIPELINE
    return cyc


def busy_cycles(start: np.ndarray, end: np.ndarray) -> int:
    """Cycles in which at least one of an engine's instructions (in their engine order: starts
    and ends both non-decreasing) was executing."""
    if start.size == 0:
        return 0
    prev_end = np.concatenate(([start[0]], np.maximum.accumulate(end[:-1])))
    return int(np.maximum(end - np.maximum(start, prev_end), 0).sum())


class ComputeTimer:
    """The compute engine's rules (hw/rtl/dpu_compute.sv implements them):
    - a POST or ALU starts when every earlier compute instruction has retired;
    - a GEMM starts one cycle after a POST starts at the earliest (it runs beside the POST),
      `gemm_interval` after the start of a GEMM before it, after an ALU has retired, and
      only while fewer than `in_flight` compute instructions are in flight;
    - a GEMM's iteration that would write an ACC entry a running POST may still read waits:
      while the POST's reads are not all issued and the entry lies between the base of the
      block the POST is reading and the POST's last entry (the POST reads blocks in
      ascending base order, so nothing below that base is read again);
    - instructions retire in program order, at most one per cycle, as soon as done: tokens
      are pushed, and the instruction counts as finished, at its retirement (`end`)."""

    def __init__(
        self,
        cfg: HwConfig,
        col: dict[str, np.ndarray],
        cost: np.ndarray,
        in_flight: int = COMPUTE_IN_FLIGHT,
    ):
        self.cfg, self.col, self.cost, self.in_flight = cfg, col, cost, in_flight
        self.prev: int | None = None  # the last compute instruction started
        self.gemm_free = 0  # earliest start of a GEMM after the last GEMM
        self.post: int | None = None  # the last POST started: GEMMs after it run beside it
        self.start_p = 0  # and its start
        self.retired: list[int] = []  # retirement of every compute instruction so far
        self.end_retire = 0

    def run(self, i: int, t: int) -> tuple[int, int]:
        """Start and retirement of compute instruction i, whose tokens and dispatch allow a
        start at t."""
        col, op = self.col, int(self.col["op"][i])
        prev_op = None if self.prev is None else col["op"][self.prev]
        if op != Opcode.GEMM or prev_op in (None, Opcode.ALU):
            t = max(t, self.end_retire)
        elif prev_op == Opcode.POST:
            t = max(t, self.start_p + 1)
        else:
            t = max(t, self.gemm_free)
        if op == Opcode.GEMM and len(self.retired) >= self.in_flight:
            t = max(t, self.retired[-self.in_flight])
        done = t + int(self.cost[i])
        if op == Opcode.GEMM:
            done = self._gemm(i, t)
        elif op == Opcode.POST:
            self.post, self.start_p = i, t
        retire = max(done, self.end_retire + 1) if self.retired else done
        self.retired.append(retire)
        self.end_retire = retire
        self.prev = i
        return t, retire

    def _gemm(self, i: int, t: int) -> int:
        """A GEMM started at t: its done cycle; sets when the next GEMM may start."""
        cfg, col = self.cfg, self.col
        no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
        last_issue = t + max(no * ni, 1)  # T = 0 issues one write-less iteration
        if no * ni and self.post is not None:
            last_issue = self._post_waits(i, t, no, ni, last_issue)
        self.gemm_free = max(last_issue, t + cfg.rows)
        return last_issue + cfg.rows + cfg.cols

    def _post_waits(self, i: int, t: int, no: int, ni: int, last_issue: int) -> int:
        """The last issue cycle of GEMM i started at t beside the last POST."""
        col, q = self.col, self.post
        blocks, count = int(col["blocks"][q]), int(col["count"][q])
        reads_end = self.start_p + blocks * count  # the cycle of the POST's last ACC read
        if count == 0 or t + 1 > reads_end:
            return last_issue
        base, stride = int(col["acc_base"][q]), int(col["acc_block_stride"][q])
        last_entry = base + (blocks - 1) * stride + count - 1
        o, k = np.divmod(np.arange(no * ni), ni)
        x = (
            int(col["acc_base"][i])
            + o * int(col["acc_outer_stride"][i])
            + k * int(col["acc_inner_stride"][i])
        )
        # The last block whose base is <= x: the POST reads x up to the end of that block.
        blk = np.full(x.shape, blocks - 1) if stride == 0 else (x - base) // stride
        blk = np.minimum(blk, blocks - 1)
        release = np.minimum(reads_end, self.start_p + (blk + 1) * count) + 1
        release = np.where((x >= base) & (x <= last_entry), release, 0)
        j = np.arange(no * ni)
        issue = j + np.maximum(t + 1, np.maximum.accumulate(release - j))
        return int(issue[-1])


@dataclass
class Schedule:
    start: np.ndarray
    end: np.ndarray  # when it finished: a compute instruction's retirement
    engine: np.ndarray  # Engine per instruction, -1 for END
    seq: np.ndarray  # index within its engine
    token_src: list[list[int]]  # for each instruction, the instructions whose tokens it popped
    total_cycles: int
    busy: dict[str, int]  # cycles each engine spent executing


def schedule(cfg: HwConfig, col: dict[str, np.ndarray]) -> Schedule:
    """Run the cycle model; a deadlock (a pop that no push can satisfy) is an ExecutionError."""
    n = len(col["op"])
    if n == 0 or col["op"][-1] != Opcode.END:
        raise ExecutionError("instruction stream does not end with END")
    cost = instr_cycles(cfg, col)
    compute = ComputeTimer(cfg, col, cost)
    fetch_beats = max(1, INSTR_BYTES // cfg.bus_bytes)
    engine = np.full(n, -1, dtype=np.int64)
    seq = np.zeros(n, dtype=np.int64)
    per_engine: list[list[int]] = [[], [], []]
    for i in range(n):
        op = Opcode(int(col["op"][i]))
        if op == Opcode.END:
            if i != n - 1:
                raise ExecutionError(f"instruction {i}: END before the end of the stream")
            continue
        e = {Opcode.LOAD: 0, Opcode.STORE: 2}.get(op, 1)
        engine[i] = e
        seq[i] = len(per_engine[e])
        per_engine[e].append(i)
    pops, pushes = {}, {}
    for i in range(n - 1):
        pops[i], pushes[i] = token_queues(Engine(int(engine[i])), col, i)
    # The k-th pop of a FIFO consumes the k-th push.
    pushed: dict[str, list[int]] = {q: [] for q in QUEUES.values()}
    for i in range(n - 1):
        for q in pushes[i]:
            pushed[q].append(i)
    popped_count = {q: 0 for q in QUEUES.values()}
    token_src: list[list[int]] = [[] for _ in range(n)]
    for e in range(3):
        for i in per_engine[e]:
            for q in pops[i]:
                k = popped_count[q]
                if k >= len(pushed[q]):
                    raise ExecutionError(
                        f"instruction {i} ({Opcode(int(col['op'][i])).name}) waits for a token "
                        f"on {q} that is never pushed: the program would hang"
                    )
                token_src[i].append(pushed[q][k])
                popped_count[q] = k + 1

    start = np.full(n, -1, dtype=np.int64)
    end = np.full(n, -1, dtype=np.int64)
    dispatch = np.full(n, -1, dtype=np.int64)
    head = [0, 0, 0]
    fetched = 0
    last_dispatch = cfg.dram_latency_cycles
    progress = True
    while progress:
        progress = False
        # Fetch/dispatch in order, stalling while the target FIFO is full.
        while fetched < n - 1:
            e = int(engine[fetched])
            s = int(seq[fetched])
            t = last_dispatch + fetch_beats
            if s >= cfg.queue_depth:
                blocker = per_engine[e][s - cfg.queue_depth]
                if start[blocker] < 0:
                    break
                t = max(t, int(start[blocker]))
            dispatch[fetched] = last_dispatch = t
            fetched += 1
            progress = True
        for e in range(3):
            while head[e] < len(per_engine[e]):
                i = per_engine[e][head[e]]
                if dispatch[i] < 0 or any(end[j] < 0 for j in token_src[i]):
                    break
                t = int(dispatch[i])
                for j in token_src[i]:
                    t = max(t, int(end[j]))
                if e == Engine.COMPUTE:
                    start[i], end[i] = compute.run(i, t)
                else:
                    if head[e]:
                        t = max(t, int(end[per_engine[e][head[e] - 1]]))
                    start[i], end[i] = t, t + int(cost[i])
                head[e] += 1
                progress = True
    stuck = [per_engine[e][head[e]] for e in range(3) if head[e] < len(per_engine[e])]
    if stuck:
        raise ExecutionError(
            f"deadlock: instructions {stuck} wait on each other's tokens; the program would hang"
        )
    last = n - 1
    start[last] = max(int(end[:last].max(initial=0)), last_dispatch + fetch_beats)
    end[last] = start[last] + 1
    busy = {
        Engine(e).name.lower(): busy_cycles(start[per_engine[e]], end[per_engine[e]])
        for e in range(3)
    }
    return Schedule(start, end, engine, seq, token_src, int(end[last]), busy)
