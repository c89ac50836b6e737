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
from dpukit.compiler.timing import Schedule
from dpukit.errors import ExecutionError

DRAM_BLOCK = 64  # DRAM hazards are tracked per 64-byte block


def _entries(cfg: HwConfig) -> dict[str, int]:
    return {b: getattr(cfg, f"{b}_entries") for b in ("inp", "wgt", "acc", "out", "par")}


def _span(base: int, no: int, ni: int, so: int, si: int) -> tuple[int, int]:
    return base, base + (no - 1) * so + (ni - 1) * si


def accesses(col, i: int) -> list[tuple[str, int, int, bool]]:
    """(resource, first, last, is_write) for everything instruction i touches."""
    op = Opcode(int(col["op"][i]))
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
        n = int(col["count"][i])
        if n:
            a, o, p = int(col["acc_base"][i]), int(col["out_base"][i]), int(col["par_addr"][i])
            out += [("acc", a, a + n - 1, False), ("par", p, p, False), ("out", o, o + n - 1, True)]
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
            if AluOp(int(col["alu_op"][i])) in (AluOp.ADD, AluOp.MAX):
                out.append(("acc", *d, False))
    return out


def check_bounds(cfg: HwConfig, col, dram_size: int) -> None:
    sizes = _entries(cfg) | {"dram": dram_size}
    width = {
        Buffer.INP: cfg.inp_entry_bytes,
        Buffer.WGT: cfg.wgt_entry_bytes,
        Buffer.ACC: cfg.cols,
        Buffer.PAR: cfg.par_entry_bytes,
    }
    op = col["op"]
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
        for res, lo, hi, _ in accesses(col, i):
            if lo < 0 or hi >= sizes[res]:
                what = "the data window" if res == "dram" else f"the {res.upper()} buffer"
                raise ExecutionError(
                    f"instruction {i} ({code.name}) touches {res} [{lo}, {hi}] outside "
                    f"{what} of {sizes[res]} {'bytes' if res == 'dram' else 'entries'}"
                )


def check_hazards(cfg: HwConfig, col, sched: Schedule) -> None:
    n = len(col["op"]) - 1  # END is a barrier: nothing races with it
    order = np.lexsort((np.arange(n), sched.start[:n]))
    vc = np.full((n, 3), -1, dtype=np.int64)
    last_in_engine = [-1, -1, -1]
    sizes = _entries(cfg)
    dram_blocks = 1 + max(
        (hi // DRAM_BLOCK for i in range(n) for r, _, hi, _ in accesses(col, i) if r == "dram"),
        default=0,
    )
    sizes["dram"] = dram_blocks
    last_w = {r: np.full((3, s), -1, dtype=np.int64) for r, s in sizes.items()}
    last_r = {r: np.full((3, s), -1, dtype=np.int64) for r, s in sizes.items()}
    for i in order:
        e, s = int(sched.engine[i]), int(sched.seq[i])
        clock = np.full(3, -1, dtype=np.int64)
        preds = list(sched.token_src[i])
        if last_in_engine[e] >= 0:
            preds.append(last_in_engine[e])
        for j in preds:
            clock = np.maximum(clock, vc[j])
            clock[int(sched.engine[j])] = max(clock[int(sched.engine[j])], int(sched.seq[j]))
        clock[e] = s
        vc[i] = clock
        last_in_engine[e] = i
        for res, lo, hi, write in accesses(col, i):
            if res == "dram":
                lo, hi = lo // DRAM_BLOCK, hi // DRAM_BLOCK
            tables = (last_w[res], last_r[res]) if write else (last_w[res],)
            for table in tables:
                for f in range(3):
                    if f == e:
                        continue
                    seen = table[f, lo : hi + 1]
                    if seen.size and seen.max() > clock[f]:
                        other = _instr_of(sched, f, int(seen.max()))
                        raise ExecutionError(
                            f"hazard: instruction {i} ({Opcode(int(col['op'][i])).name}) and "
                            f"instruction {other} ({Opcode(int(col['op'][other])).name}) touch "
                            f"{res} [{lo}, {hi}] with no dependency token ordering them"
                        )
            target = last_w[res] if write else last_r[res]
            np.maximum(target[e, lo : hi + 1], s, out=target[e, lo : hi + 1])


def _instr_of(sched: Schedule, engine: int, seq: int) -> int:
    hits = np.flatnonzero((sched.engine == engine) & (sched.seq == seq))
    return int(hits[0])
