"""The checking pass: proves an instruction stream safe before anything runs it.

- Bounds: every on-chip entry and every DRAM byte an instruction touches lies inside its
  buffer or the program's data window, and no entry is wider than its buffer's.
- Hazards: any two instructions on different engines that touch the same buffer entries or
  DRAM bytes, one of them writing, are ordered by dependency tokens (happens-before, with
  vector clocks over the schedule's topological order).
- Deadlock freedom comes from `timing.schedule`, which must finish every instruction.
The compiler runs this on every program it writes; the golden model on every program it
runs; a failure names the instructions involved.
"""

from __future__ import annotations

import numpy as np

from dpukit.compiler.dma import Dma
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import AluOp, Buffer, Opcode
from dpukit.compiler.timing import Schedule, schedule
from dpukit.errors import ExecutionError

DRAM_BLOCK = 64  # DRAM hazards are tracked per 64-byte block


def _entries(cfg: HwConfig) -> dict[str, int]:
    return {b: getattr(cfg, f"{b}_entries") for b in ("inp", "wgt", "acc", "out", "par")}


def _span(base: int, no: int, ni: int, so: int, si: int) -> tuple[int, int]:
    return base, base + (no - 1) * so + (ni - 1) * si


def accesses(col, i: int) -> list[tuple[str, int, int, bool]]:
    """(resource, first, last, is_write) for everything instruction i touches."""
    op = col["op"][i]
    out: list[tuple[str, int, int, bool]] = []
    if op in (Opcode.LOAD, Opcode.STORE):
        d = Dma.of(col, i)
        span = d.dram_span()
        if d.is_load:
            if d.entries:
                buf = Buffer(d.buffer).name.lower()
                out.append((buf, d.sram, d.sram + d.entries - 1, True))
            if span:
                out.append(("dram", *span, False))
        elif span and d.entries:
            out += [("out", d.sram, d.sram + d.entries - 1, False), ("dram", *span, True)]
    elif op == Opcode.GEMM:
        no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
        if no and ni:
            w = int(col["wgt_addr"][i])
            out.append(("wgt", w, w, False))
            out.append(
                (
                    "inp",
                    *_span(
                        int(col["inp_base"][i]),
                        no,
                        ni,
                        int(col["inp_outer_stride"][i]),
                        int(col["inp_inner_stride"][i]),
                    ),
                    False,
                )
            )
            acc = _span(
                int(col["acc_base"][i]),
                no,
                ni,
                int(col["acc_outer_stride"][i]),
                int(col["acc_inner_stride"][i]),
            )
            out.append(("acc", *acc, True))
            if not col["reset"][i]:
                out.append(("acc", *acc, False))
    elif op == Opcode.POST:
        n, blocks = col["count"][i], col["blocks"][i]
        if n and blocks:
            a, o, p = col["acc_base"][i], col["out_base"][i], col["par_addr"][i]
            a_end = a + (blocks - 1) * col["acc_block_stride"][i] + n - 1
            o_end = o + (blocks - 1) * col["out_block_stride"][i] + n - 1
            out += [
                ("acc", a, a_end, False),
                ("par", p, p + blocks - 1, False),
                ("out", o, o_end, True),
            ]
    elif op == Opcode.ALU:
        no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
        if no and ni:
            d = _span(
                int(col["dst_base"][i]),
                no,
                ni,
                int(col["dst_outer_stride"][i]),
                int(col["dst_inner_stride"][i]),
            )
            s = _span(
                int(col["src_base"][i]),
                no,
                ni,
                int(col["src_outer_stride"][i]),
                int(col["src_inner_stride"][i]),
            )
            out += [("acc", *s, False), ("acc", *d, True)]
            if col["alu_op"][i] in (AluOp.ADD, AluOp.MAX):
                out.append(("acc", *d, False))
    return out


def check_stream(cfg: HwConfig, col: dict[str, np.ndarray], dram_size: int) -> Schedule:
    """Every check on a stream; returns its schedule. Failures are ExecutionErrors."""
    rows = {k: v.tolist() for k, v in col.items()}  # plain ints: fast to read one by one
    touched = check_bounds(cfg, rows, dram_size)
    sched = schedule(cfg, col)
    check_program_order(col, sched)
    check_hazards(cfg, rows, sched, touched)
    return sched


def check_program_order(col, sched: Schedule) -> None:
    """Every token is pushed by an instruction earlier in the stream than the one that pops
    it. The hardware would run such a stream, but the golden model executes in program
    order, so a later push would make its results silently differ from the hardware's."""
    for i, sources in enumerate(sched.token_src):
        late = [j for j in sources if j > i]
        if late:
            raise ExecutionError(
                f"instruction {i} ({Opcode(int(col['op'][i])).name}) pops a token pushed by "
                f"instruction {late[0]}, later in the stream: emit the pusher first"
            )


def check_bounds(cfg: HwConfig, col, dram_size: int) -> list[list[tuple[str, int, int, bool]]]:
    """Field limits and buffer/window bounds; returns what each instruction touches."""
    sizes = _entries(cfg) | {"dram": dram_size}
    width = {
        Buffer.INP: cfg.inp_entry_bytes,
        Buffer.WGT: cfg.wgt_entry_bytes,
        Buffer.ACC: cfg.cols,
        Buffer.PAR: cfg.par_entry_bytes,
    }
    op = col["op"]
    touched = []
    for i in range(len(op)):
        code = Opcode(int(op[i]))
        if code == Opcode.LOAD:
            buf = Buffer(int(col["buffer"][i]))
            if col["elem_bytes"][i] > width[buf]:
                raise ExecutionError(
                    f"instruction {i}: LOAD of {int(col['elem_bytes'][i])} bytes per entry into "
                    f"{buf.name}, whose entries hold {width[buf]}"
                )
        if code == Opcode.STORE and col["elem_bytes"][i] > cfg.out_entry_bytes:
            raise ExecutionError(f"instruction {i}: STORE wider than an OUT entry")
        if code == Opcode.ALU and not 0 <= col["alu_op"][i] < len(AluOp):
            raise ExecutionError(f"instruction {i}: illegal ALU operation {int(col['alu_op'][i])}")
        touched.append(accesses(col, i))
        for res, lo, hi, _ in touched[-1]:
            if lo < 0 or hi >= sizes[res]:
                what = "the data window" if res == "dram" else f"the {res.upper()} buffer"
                raise ExecutionError(
                    f"instruction {i} ({code.name}) touches {res} [{lo}, {hi}] outside "
                    f"{what} of {sizes[res]} {'bytes' if res == 'dram' else 'entries'}"
                )
    return touched


def check_hazards(cfg: HwConfig, col, sched: Schedule, touched) -> None:
    """Cross-engine conflicts on what each instruction touches (from check_bounds)."""
    n = len(col["op"]) - 1  # END is a barrier: nothing races with it
    engine = sched.engine.tolist()
    seq = sched.seq.tolist()
    touched = [  # DRAM tracked in blocks
        [
            (r, lo // DRAM_BLOCK, hi // DRAM_BLOCK, w) if r == "dram" else (r, lo, hi, w)
            for r, lo, hi, w in t
        ]
        for t in touched[:n]
    ]
    sizes = _entries(cfg)
    sizes["dram"] = 1 + max((hi for t in touched for r, _, hi, _ in t if r == "dram"), default=0)
    # Only engines that touch a resource can race on it: check and record just those.
    writers = {r: set() for r in sizes}
    readers = {r: set() for r in sizes}
    for i in range(n):
        for r, _, _, w in touched[i]:
            (writers if w else readers)[r].add(engine[i])
    last_w = {r: np.full((3, s), -1, dtype=np.int64) for r, s in sizes.items()}
    last_r = {r: np.full((3, s), -1, dtype=np.int64) for r, s in sizes.items()}
    clocks: list[tuple[int, int, int]] = [(-1, -1, -1)] * n
    last_in_engine = [-1, -1, -1]
    for i in np.lexsort((np.arange(n), sched.start[:n])).tolist():
        e, s = engine[i], seq[i]
        clock = [-1, -1, -1]
        preds = list(sched.token_src[i])
        if last_in_engine[e] >= 0:
            preds.append(last_in_engine[e])
        for j in preds:
            clock = [max(a, b) for a, b in zip(clock, clocks[j], strict=True)]
            clock[engine[j]] = max(clock[engine[j]], seq[j])
        clock[e] = s
        clocks[i] = tuple(clock)
        last_in_engine[e] = i
        for res, lo, hi, write in touched[i]:
            against = [(last_w[res], f) for f in writers[res] if f != e]
            if write:
                against += [(last_r[res], f) for f in readers[res] if f != e]
            for table, f in against:
                seen = int(table[f, lo : hi + 1].max())
                if seen > clock[f]:
                    other = _instr_of(sched, f, seen)
                    raise ExecutionError(
                        f"hazard: instruction {i} ({Opcode(int(col['op'][i])).name}) and "
                        f"instruction {other} ({Opcode(int(col['op'][other])).name}) touch "
                        f"{res} [{lo}, {hi}] with no dependency token ordering them"
                    )
            if write and (writers[res] | readers[res]) - {e}:
                last_w[res][e, lo : hi + 1] = s  # seq only grows within an engine
            elif not write and writers[res] - {e}:
                last_r[res][e, lo : hi + 1] = s


def _instr_of(sched: Schedule, engine: int, seq: int) -> int:
    hits = np.flatnonzero((sched.engine == engine) & (sched.seq == seq))
    return int(hits[0])
