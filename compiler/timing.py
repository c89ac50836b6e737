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
  GEMM    weight-stationary systolic pass: rows cycles to preload the weight tile, then
          n_outer*n_inner activations stream through, and rows + cols - 2 cycles to drain:
          2*rows + cols - 2 + n_outer*n_inner (SCALE-Sim's per-fold count).
  POST    blocks * max(count, 1) + POST_PIPELINE: one ACC entry per cycle through the
          SRAM read and the 4-stage requantization pipeline (a block of count 0 still reads
          its PAR entry, one cycle); a POST of 0 blocks costs POST_PIPELINE - 1
  ALU     n_outer*n_inner + ALU_PIPELINE (a zero-trip ALU, the layer barrier, costs 2)
  END     1, after all engines are idle.
An engine starts its next instruction when the previous one has finished and every token
the instruction pops has been pushed; a token is pushed when its instruction finishes.
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
    """A GEMM's cycles besides one per activation: weight preload and array drain."""
    return 2 * cfg.rows + cfg.cols - 2


def instr_cycles(cfg: HwConfig, col: dict[str, np.ndarray]) -> np.ndarray:
    n = len(col["op"])
    cyc = np.ones(n, dtype=np.int64)
    op = col["op"]
    for i in np.flatnonzero((op == Opcode.LOAD) | (op == Opcode.STORE)):
        cyc[i] = dma_cycles(cfg, Dma.of(col, i))
    g = op == Opcode.GEMM
    cyc[g] = gemm_fill(cfg) + col["n_outer"][g] * col["n_inner"][g]
    p = op == Opcode.POST
    blocks = col["blocks"][p]
    cyc[p] = np.where(
        blocks > 0, blocks * np.maximum(col["count"][p], 1) + POST_PIPELINE, POST_PIPELINE - 1
    )
    a = op == Opcode.ALU
    trips = col["n_outer"][a] * col["n_inner"][a]
    cyc[a] = trips + ALU_PIPELINE
    return cyc


@dataclass
class Schedule:
    start: np.ndarray
    end: np.ndarray
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
                if head[e]:
                    t = max(t, int(end[per_engine[e][head[e] - 1]]))
                for j in token_src[i]:
                    t = max(t, int(end[j]))
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
    busy = {Engine(e).name.lower(): int(cost[per_engine[e]].sum()) for e in range(3)}
    return Schedule(start, end, engine, seq, token_src, int(end[last]), busy)
