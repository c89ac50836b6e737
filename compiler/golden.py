"""The golden model: executes a DPU instruction stream exactly as the hardware does.

It *is* the hardware's meaning: one function per opcode below (see the SEMANTICS table in
`isa.py` and docs/isa.md), all arithmetic in int32/int64 with the hardware's wrapping,
rounding and saturation. Instructions run in program order, which gives the hardware's
result because `check.check_stream` (run first) proves that every pair of instructions on
different engines that touch the same data is ordered by dependency tokens.

Speed: consecutive GEMMs that accumulate into the same ACC entries run as one matrix
product. int8 x int8 products summed over K <= 1024 are below 2^24, so float32 BLAS is
exact; longer sums are split and added in int64, then wrapped to int32 once (wrapping
commutes with addition mod 2^32, so this equals the hardware's per-step wrap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpukit.compiler import check, isa, timing
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import AluOp, Buffer, Opcode
from dpukit.errors import ExecutionError

_EXACT_F32_K = 1024  # int8*int8 sums of up to this many terms are exact in float32


def wrap32(v: np.ndarray) -> np.ndarray:
    return ((v.astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


@dataclass
class Activity:
    """What the program did: the energy model and the RTL's counters are checked against it."""

    cycles: int = 0
    macs: int = 0  # MACs the array performed: rows x cols per streamed entry (padding too)
    mac_cycles: int = 0  # cycles the array streamed activations
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    buffer_reads: dict[str, int] = field(default_factory=dict)  # entries, per buffer
    buffer_writes: dict[str, int] = field(default_factory=dict)
    instructions: dict[str, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)

    def add(self, other: Activity) -> None:
        for k in ("cycles", "macs", "mac_cycles", "dram_read_bytes", "dram_write_bytes"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for d in ("buffer_reads", "buffer_writes", "instructions", "busy"):
            mine = getattr(self, d)
            for k, v in getattr(other, d).items():
                mine[k] = mine.get(k, 0) + v


class _Plan:
    """Everything about a stream that does not depend on data, computed once."""

    def __init__(self, cfg: HwConfig, stream: bytes, dram_size: int):
        self.col = isa.decode_array(stream)
        check.check_bounds(cfg, self.col, dram_size)
        self.sched = timing.schedule(cfg, self.col)
        check.check_hazards(cfg, self.col, self.sched)
        self.activity = _activity(cfg, self.col, self.sched)
        self.steps = _plan_steps(cfg, self.col)


class GoldenDPU:
    """One DPU instance: its on-chip buffers, and a cache of decoded programs."""

    def __init__(self, cfg: HwConfig):
        self.cfg = cfg
        r, c = cfg.rows, cfg.cols
        self.inp = np.zeros((cfg.inp_entries, r), np.int8)
        self.wgt = np.zeros((cfg.wgt_entries, r, c), np.int8)
        self.acc = np.zeros((cfg.acc_entries, c), np.int32)
        self.out = np.zeros((cfg.out_entries, c), np.int8)
        self.par = np.zeros((cfg.par_entries, 3, c), np.int32)
        self._plans: dict[bytes, _Plan] = {}

    def prepare(self, stream: bytes, dram_size: int) -> _Plan:
        key = stream + dram_size.to_bytes(8, "little")
        if key not in self._plans:
            self._plans[key] = _Plan(self.cfg, stream, dram_size)
        return self._plans[key]

    def run(self, stream: bytes, dram: np.ndarray) -> Activity:
        """Execute `stream` against `dram` (a uint8 array: the program's data window)."""
        plan = self.prepare(stream, dram.size)
        for kind, payload in plan.steps:
            if kind == "gemm":
                self._gemm_group(*payload)
            else:
                getattr(self, f"_{kind}")(plan.col, payload, dram)
        return plan.activity

    # -- one function per instruction ---------------------------------------------------
    def _buffer(self, which: int) -> np.ndarray:
        return (self.inp, self.wgt, self.acc, self.par)[which]

    def _load(self, col, i, dram) -> None:
        buf = self._buffer(int(col["buffer"][i]))
        pt, pb = int(col["pad_top"][i]), int(col["pad_bottom"][i])
        pl, pr = int(col["pad_left"][i]), int(col["pad_right"][i])
        ys, xs, eb = int(col["y_size"][i]), int(col["x_size"][i]), int(col["elem_bytes"][i])
        rows, cols = pt + ys + pb, pl + xs + pr
        lanes = buf[0].size if buf is not self.par else buf[0].size * 4
        block = np.zeros((rows, cols, lanes), np.int8)
        if buf is not self.par:
            block[:] = np.int8(col["pad_value"][i])
        if ys and xs and eb:
            base = int(col["dram_offset"][i])
            idx = (
                base
                + int(col["y_stride"][i]) * np.arange(ys)[:, None, None]
                + int(col["x_stride"][i]) * np.arange(xs)[None, :, None]
                + np.arange(eb)[None, None, :]
            )
            block[pt : pt + ys, pl : pl + xs, :eb] = dram[idx].view(np.int8)
            block[pt : pt + ys, pl : pl + xs, eb:] = 0
        sram = int(col["sram_base"][i])
        flat = block.reshape(rows * cols, lanes)
        if buf is self.par:
            buf[sram : sram + rows * cols] = flat.view("<i4").reshape(-1, 3, self.cfg.cols)
        elif buf is self.wgt:
            buf[sram : sram + rows * cols] = flat.reshape(-1, self.cfg.rows, self.cfg.cols)
        else:  # INP lanes are int8; into ACC each byte is sign-extended
            buf[sram : sram + rows * cols] = flat

    def _store(self, col, i, dram) -> None:
        ys, xs, eb = int(col["y_size"][i]), int(col["x_size"][i]), int(col["elem_bytes"][i])
        if not (ys and xs and eb):
            return
        sram = int(col["sram_base"][i])
        data = self.out[sram : sram + ys * xs, :eb].reshape(ys, xs, eb)
        idx = (
            int(col["dram_offset"][i])
            + int(col["y_stride"][i]) * np.arange(ys)[:, None, None]
            + int(col["x_stride"][i]) * np.arange(xs)[None, :, None]
            + np.arange(eb)[None, None, :]
        )
        dram[idx] = data.view(np.uint8)

    def _gemm_group(self, acc_idx: np.ndarray, reset: bool, inp_idx: np.ndarray, wgt: np.ndarray):
        """GEMMs g = 1..G into the same ACC entries: acc (+)= sum_g INP[inp_idx[g]] @ WGT[wgt[g]]."""
        r = self.cfg.rows
        total = np.zeros((acc_idx.size, self.cfg.cols), np.int64)
        per = max(1, _EXACT_F32_K // r)
        for g0 in range(0, len(wgt), per):
            x = self.inp[inp_idx[g0 : g0 + per]]  # [g, T, R]
            w = self.wgt[wgt[g0 : g0 + per]]  # [g, R, C]
            g = x.shape[0]
            xm = x.transpose(1, 0, 2).reshape(-1, g * r).astype(np.float32)
            total += (xm @ w.reshape(g * r, -1).astype(np.float32)).astype(np.int64)
        if not reset:
            total += self.acc[acc_idx]
        self.acc[acc_idx] = wrap32(total)

    def _gemm_serial(self, col, i, dram) -> None:
        """A GEMM whose ACC targets repeat: every iteration sees the previous one's result."""
        inp_idx, acc_idx = _gemm_grids(col, i)
        w = self.wgt[int(col["wgt_addr"][i])].astype(np.int64)
        reset = bool(col["reset"][i])
        for a, x in zip(acc_idx, inp_idx, strict=True):
            p = self.inp[x].astype(np.int64) @ w
            self.acc[a] = wrap32(p if reset else self.acc[a] + p)

    def _post(self, col, i, dram) -> None:
        n, a, o = int(col["count"][i]), int(col["acc_base"][i]), int(col["out_base"][i])
        bias, mult, shift = self.par[int(col["par_addr"][i])].astype(np.int64)
        v = wrap32(self.acc[a : a + n].astype(np.int64) + bias).astype(np.int64)
        r = round_shift(v * mult, shift)
        lo, hi = int(col["clamp_lo"][i]), int(col["clamp_hi"][i])
        self.out[o : o + n] = np.clip(r + int(col["zero_point"][i]), lo, hi).astype(np.int8)

    def _alu(self, col, i, dram) -> None:
        no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
        if no == 0 or ni == 0:
            return
        d = _grid(col, i, "dst", no, ni)
        s = _grid(col, i, "src", no, ni)
        op, imm = AluOp(int(col["alu_op"][i])), np.int64(col["imm"][i])
        if np.unique(d).size != d.size or np.intersect1d(d, s).size:
            # Iterations depend on each other (a reduction or overlap): run them in order.
            for dd, ss in zip(d, s, strict=True):
                self.acc[dd] = _alu_lane(op, self.acc[dd], self.acc[ss], imm)
        else:
            self.acc[d] = _alu_lane(op, self.acc[d], self.acc[s], imm)


def round_shift(p: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """p / 2^shift rounded to nearest, ties to even (as ONNX QuantizeLinear rounds)."""
    q = p >> shift
    rem = p - (q << shift)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 1)
    up = (shift > 0) & ((rem > half) | ((rem == half) & (q & 1 == 1)))
    return q + up


def _alu_lane(op: AluOp, dst: np.ndarray, src: np.ndarray, imm: np.int64) -> np.ndarray:
    dst, src = dst.astype(np.int64), src.astype(np.int64)
    result = {
        AluOp.MOV: lambda: src,
        AluOp.ADD: lambda: dst + src,
        AluOp.MAX: lambda: np.maximum(dst, src),
        AluOp.MULI: lambda: src * imm,
        AluOp.ADDI: lambda: src + imm,
    }[op]()
    return wrap32(result)


def _grid(col, i, prefix: str, no: int, ni: int) -> np.ndarray:
    base = int(col[f"{prefix}_base"][i])
    so, si = int(col[f"{prefix}_outer_stride"][i]), int(col[f"{prefix}_inner_stride"][i])
    return (base + so * np.arange(no)[:, None] + si * np.arange(ni)[None, :]).ravel()


def _gemm_grids(col, i) -> tuple[np.ndarray, np.ndarray]:
    no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
    return _grid(col, i, "inp", no, ni), _grid(col, i, "acc", no, ni)


def _plan_steps(cfg: HwConfig, col) -> list[tuple[str, object]]:
    """Program order, with runs of GEMMs into the same ACC entries merged."""
    steps: list[tuple[str, object]] = []
    op = col["op"]
    n = len(op)
    i = 0
    while i < n:
        code = Opcode(int(op[i]))
        if code != Opcode.GEMM:
            if code != Opcode.END:
                steps.append((code.name.lower(), i))
            i += 1
            continue
        inp0, acc0 = _gemm_grids(col, i)
        inps, wgts = [inp0], [int(col["wgt_addr"][i])]
        reset = bool(col["reset"][i])
        j = i + 1
        while j < n and op[j] == Opcode.GEMM and not col["reset"][j]:
            inp_j, acc_j = _gemm_grids(col, j)
            if acc_j.shape != acc0.shape or not np.array_equal(acc_j, acc0):
                break
            inps.append(inp_j)
            wgts.append(int(col["wgt_addr"][j]))
            j += 1
        if np.unique(acc0).size != acc0.size:  # ACC entries repeat: iterations chain
            steps += [("gemm_serial", k) for k in range(i, j)]
        else:
            steps.append(("gemm", (acc0, reset, np.stack(inps), np.array(wgts))))
        i = j
    return steps


def _activity(cfg: HwConfig, col, sched: timing.Schedule) -> Activity:
    op = col["op"]
    act = Activity(cycles=sched.total_cycles, busy=dict(sched.busy))
    for code in Opcode:
        cnt = int((op == code).sum())
        if cnt:
            act.instructions[code.name] = cnt
    reads = {b: 0 for b in ("inp", "wgt", "acc", "out", "par")}
    writes = dict(reads)
    for i in range(len(op)):
        code = Opcode(int(op[i]))
        if code in (Opcode.LOAD, Opcode.STORE):
            entries = int(col["y_size"][i]) * int(col["x_size"][i])
            moved = entries * int(col["elem_bytes"][i])
            if code == Opcode.LOAD:
                act.dram_read_bytes += moved
                total = (int(col["pad_top"][i]) + int(col["y_size"][i]) + int(col["pad_bottom"][i])) * (
                    int(col["pad_left"][i]) + int(col["x_size"][i]) + int(col["pad_right"][i])
                )
                writes[Buffer(int(col["buffer"][i])).name.lower()] += total
            else:
                act.dram_write_bytes += moved
                reads["out"] += entries
        elif code == Opcode.GEMM:
            t = int(col["n_outer"][i]) * int(col["n_inner"][i])
            act.mac_cycles += t
            act.macs += t * cfg.rows * cfg.cols
            reads["wgt"] += 1
            reads["inp"] += t
            writes["acc"] += t
            if not col["reset"][i]:
                reads["acc"] += t
        elif code == Opcode.POST:
            cnt = int(col["count"][i])
            reads["acc"] += cnt
            reads["par"] += 1
            writes["out"] += cnt
        elif code == Opcode.ALU:
            t = int(col["n_outer"][i]) * int(col["n_inner"][i])
            reads["acc"] += t * (2 if AluOp(int(col["alu_op"][i])) in (AluOp.ADD, AluOp.MAX) else 1)
            writes["acc"] += t
    act.buffer_reads, act.buffer_writes = reads, writes
    return act
