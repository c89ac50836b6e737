"""The golden model: executes a DPU instruction stream exactly as the hardware does.

It *is* the hardware's meaning: one function per opcode below (see the SEMANTICS table in
`isa.py` and docs/isa.md), all arithmetic in int32/int64 with the hardware's wrapping,
rounding and saturation. Instructions run in program order, which gives the hardware's
result because `check.check_stream` (run first) proves that every pair of instructions on
different engines that touch the same data is ordered by dependency tokens.

Speed, without changing a single bit of the result:
- Consecutive GEMMs that accumulate into the same ACC entries run as one matrix product
  (an im2col gather from INP, then BLAS). int8 x int8 products summed over K <= 1024 stay
  below 2^24, so float32 is exact; longer sums are split and added in int64, then wrapped
  to int32 once (wrapping commutes with addition mod 2^32: the hardware's per-step wrap).
- GEMM groups that stream the same INP entries, unchanged in between, are one product with
  their weight matrices side by side; each group's result is applied to ACC at the group's
  own place in program order. Their weights are taken from the LOADs that filled WGT, whose
  DRAM bytes no STORE writes (checked when the plan is made; re-read when DRAM changes).
- POST requantizes in float64 when every |v * mult| < 2^53 (always, with the compiler's
  22-bit multipliers): the product is exact and rint rounds ties to even; otherwise int64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dpukit.compiler import check, isa, timing
from dpukit.compiler.dma import Dma
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import MULI_IMM_BITS, POST_MULT_BITS, AluOp, Buffer, Opcode
from dpukit.errors import ExecutionError
from dpukit.host.regmap import ErrorCode

_EXACT_F32_K = 1024  # int8*int8 sums of up to this many terms are exact in float32


def wrap32(v: np.ndarray) -> np.ndarray:
    """Two's-complement wrap to int32 (numpy's int64 -> int32 cast truncates the high bits)."""
    return np.asarray(v, np.int64).astype(np.int32)


@dataclass
class Activity:
    """What the program did: the energy model and the RTL's counters are checked against it."""

    cycles: int = 0
    macs: int = 0  # MACs the array performed: rows x cols per streamed entry (padding too)
    mac_cycles: int = 0  # cycles the array streamed activations
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    dram_read_beats: int = 0  # AXI data beats of LOADs (bus width each), fetch excluded
    dram_write_beats: int = 0  # AXI data beats of STOREs
    buffer_reads: dict[str, int] = field(default_factory=dict)  # entries, per buffer
    buffer_writes: dict[str, int] = field(default_factory=dict)
    instructions: dict[str, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)

    def add(self, other: Activity) -> None:
        for k in (
            "cycles",
            "macs",
            "mac_cycles",
            "dram_read_bytes",
            "dram_write_bytes",
            "dram_read_beats",
            "dram_write_beats",
        ):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for d in ("buffer_reads", "buffer_writes", "instructions", "busy"):
            mine = getattr(self, d)
            for k, v in getattr(other, d).items():
                mine[k] = mine.get(k, 0) + v


class _Plan:
    """Everything about a stream that does not depend on data, computed once."""

    def __init__(self, cfg: HwConfig, stream: bytes, dram_size: int, merge: bool):
        self.col = isa.decode_array(stream)
        self.sched = check.check_stream(cfg, self.col, dram_size)
        self.activity = _activity(cfg, self.col, self.sched)
        self.steps = _plan_steps(cfg, self.col, merge)
        # Weight tiles of batched GEMMs come straight from the LOADs that fill WGT.
        self.wgt_loads: dict[int, int] = {}  # LOAD -> first row in the weight matrix
        rows = 0
        for kind, payload in self.steps:
            if kind == "gemm_batch":
                for g in payload.groups:
                    for load, _ in g.wsrc:
                        if load not in self.wgt_loads:
                            self.wgt_loads[load] = rows
                            rows += Dma.of(self.col, load).entries
                payload.rows = np.array(
                    [[self.wgt_loads[ld] + k for ld, k in g.wsrc] for g in payload.groups]
                )
        spans = [Dma.of(self.col, ld).dram_span() for ld in self.wgt_loads]
        spans = [sp for sp in spans if sp]
        self.wgt_span = (
            (min(a for a, _ in spans), max(b for _, b in spans) + 1) if spans else (0, 0)
        )
        self.wgt_snapshot: np.ndarray | None = None
        self.wgt_matrix = np.zeros((rows, cfg.rows * cfg.cols), np.float32)
        self.pending: dict[int, np.ndarray] = {}

    def refresh_weights(self, cfg: HwConfig, dram: np.ndarray) -> None:
        """Rebuild each batch's weight matrix when the DRAM bytes behind it changed."""
        lo, hi = self.wgt_span
        if self.wgt_snapshot is not None and np.array_equal(self.wgt_snapshot, dram[lo:hi]):
            return
        for load, row in self.wgt_loads.items():
            tiles = Dma.of(self.col, load).load_entries(dram, cfg.wgt_entry_bytes)
            self.wgt_matrix[row : row + len(tiles)] = tiles
        r, c = cfg.rows, cfg.cols
        for kind, batch in self.steps:
            if kind == "gemm_batch":
                j, g = batch.rows.shape
                w = self.wgt_matrix[batch.rows.ravel()].reshape(j, g, r, c)
                w = w.transpose(1, 2, 0, 3).reshape(g * r, j * c)
                # Rows of all-zero weights (lanes past a tensor's channels) add nothing:
                # when they are many, gather and multiply only the others.
                keep = np.flatnonzero(w.any(axis=1))
                if keep.size < 0.75 * len(w):
                    inp = batch.groups[0].inp.T  # [T, G]
                    batch.lanes_idx = inp[:, keep // r] * r + keep % r
                    w = w[keep]
                else:
                    batch.lanes_idx = None
                batch.w = np.ascontiguousarray(w)
        self.wgt_snapshot = dram[lo:hi].copy()


class GoldenDPU:
    """One DPU instance: its on-chip buffers, and a cache of decoded programs."""

    def __init__(self, cfg: HwConfig, merge_gemms: bool = True):
        """`merge_gemms=False` runs every GEMM group on its own (a check on the merging)."""
        self.cfg = cfg
        self.merge_gemms = merge_gemms
        r, c = cfg.rows, cfg.cols
        self.inp = np.zeros((cfg.inp_entries, r), np.int8)
        self.wgt = np.zeros((cfg.wgt_entries, r, c), np.int8)
        self.acc = np.zeros((cfg.acc_entries, c), np.int32)
        self.out = np.zeros((cfg.out_entries, c), np.int8)
        self.par = np.zeros((cfg.par_entries, 3, c), "<i4")
        # a float32 copy of INP, kept in step by LOAD, so GEMMs feed BLAS directly
        self.inp_f = np.zeros(self.inp.shape, np.float32)
        self._im2col = np.empty(0, np.float32)
        # What LOAD writes, by Buffer, as [entries, lanes]: WGT and PAR entries as raw bytes
        # (PAR holds little-endian int32: bias, multiplier and shift per lane).
        self._load_targets = (
            self.inp,
            self.wgt.reshape(cfg.wgt_entries, -1),
            self.acc,
            self.par.view(np.int8).reshape(cfg.par_entries, -1),
        )
        self._plans: dict[bytes, _Plan] = {}
        self._requant_cache: dict[bytes, _Requant] = {}
        kinds = ("load", "store", "gemm", "gemm_batch", "gemm_apply", "gemm_serial", "post", "alu")
        self._handlers = {k: getattr(self, f"_{k}") for k in kinds}

    def prepare(self, stream: bytes, dram_size: int) -> _Plan:
        key = stream + dram_size.to_bytes(8, "little")
        if key not in self._plans:
            self._plans[key] = _Plan(self.cfg, stream, dram_size, self.merge_gemms)
        return self._plans[key]

    def layer_activity(
        self, stream: bytes, dram_size: int, ranges: list[tuple[int, int]]
    ) -> list[Activity]:
        """Activity of each (first instruction, count) range of a stream: one per layer."""
        plan = self.prepare(stream, dram_size)
        return [_activity(self.cfg, plan.col, plan.sched, a, a + n) for a, n in ranges]

    def data_window(self, nbytes: int) -> np.ndarray:
        """A program's data window: host memory (a board backend gives its DPU's buffer)."""
        return np.zeros(nbytes, np.uint8)

    def close(self) -> None:
        pass

    def run(self, stream: bytes, dram: np.ndarray) -> Activity:
        """Execute `stream` against `dram` (a uint8 array: the program's data window)."""
        plan = self.prepare(stream, dram.size)
        plan.refresh_weights(self.cfg, dram)
        handlers = self._handlers
        for kind, payload in plan.steps:
            handlers[kind](plan, payload, dram)
        return plan.activity

    # -- one function per instruction ---------------------------------------------------
    def _load(self, plan: _Plan, d: Dma, dram: np.ndarray) -> None:
        end = d.sram + d.entries
        d.load_into(self._load_targets[d.buffer][d.sram : end], dram)
        if d.buffer == Buffer.INP:
            self.inp_f[d.sram : end] = self.inp[d.sram : end]

    def _store(self, plan: _Plan, d: Dma, dram: np.ndarray) -> None:
        if d.has_data:
            target = d.view(dram)
            target[...] = self.out[d.sram : d.sram + d.entries, : d.eb].reshape(target.shape)

    def _product(self, inp_idx: np.ndarray, w: np.ndarray, lanes_idx=None) -> np.ndarray:
        """sum_g INP[inp_idx[g]] @ w[g] exactly: inp_idx [G, T], w [G*R, N] float32.

        With `lanes_idx` ([T, K], flat indices into INP's lanes) only those activations are
        gathered: w then holds just the matching rows, the others being all zero.
        """
        g, t = inp_idx.shape
        if lanes_idx is not None:
            xm = np.take(self.inp_f.reshape(-1), lanes_idx)
        else:
            size = t * g * self.cfg.rows
            if self._im2col.size < size:  # scratch reused across products: no page faults
                self._im2col = np.empty(size, np.float32)
            xm = self._im2col[:size].reshape(t, g, self.cfg.rows)
            np.take(self.inp_f, inp_idx.T, axis=0, out=xm)
            xm = xm.reshape(t, -1)  # [T, G*R]: the activations each pixel meets, term by term
        if xm.shape[1] <= _EXACT_F32_K:  # one exact product, |sum| <= 2^24: int32 holds it
            return (xm @ w).astype(np.int32)
        total = np.zeros((t, w.shape[1]), np.int64)
        for k0 in range(0, xm.shape[1], _EXACT_F32_K):
            total += (xm[:, k0 : k0 + _EXACT_F32_K] @ w[k0 : k0 + _EXACT_F32_K]).astype(np.int64)
        return wrap32(total)  # the hardware's accumulator wraps; wrapping commutes with sums

    def _accumulate(self, acc: slice | np.ndarray, reset: bool, total: np.ndarray) -> None:
        """ACC = total, or ACC + total with int32 wrap (int32 array addition wraps)."""
        if reset:
            self.acc[acc] = total
        else:
            self.acc[acc] = np.add(self.acc[acc], total, dtype=np.int32)

    def _gemm(self, plan: _Plan, g: _Group, dram: np.ndarray) -> None:
        """GEMMs into the same ACC entries: acc (+)= sum_g INP[inp[g]] @ WGT[wgt[g]]."""
        w = self.wgt[g.wgt].reshape(-1, self.cfg.cols).astype(np.float32)
        self._accumulate(g.acc, g.reset, self._product(g.inp, w))

    def _gemm_batch(self, plan: _Plan, batch: _Batch, dram: np.ndarray) -> None:
        """Every group of the batch in one product; the first group's result applies now."""
        total = self._product(batch.groups[0].inp, batch.w, batch.lanes_idx)
        plan.pending[id(batch)] = total
        self._gemm_apply(plan, (batch, 0), dram)

    def _gemm_apply(self, plan: _Plan, member: tuple[_Batch, int], dram: np.ndarray) -> None:
        batch, k = member
        c = self.cfg.cols
        g = batch.groups[k]
        self._accumulate(g.acc, g.reset, plan.pending[id(batch)][:, k * c : (k + 1) * c])
        if k == len(batch.groups) - 1:
            del plan.pending[id(batch)]

    def _gemm_serial(self, plan: _Plan, i: int, dram: np.ndarray) -> None:
        """A GEMM whose ACC targets repeat: every iteration sees the previous one's result."""
        col = plan.col
        inp_idx, acc_idx = _gemm_grids(col, i)
        w = self.wgt[int(col["wgt_addr"][i])].astype(np.int64)
        reset = bool(col["reset"][i])
        for a, x in zip(acc_idx, inp_idx, strict=True):
            p = self.inp[x].astype(np.int64) @ w
            self.acc[a] = wrap32(p if reset else self.acc[a] + p)

    def _post(self, plan: _Plan, p: _PostPlan, dram: np.ndarray) -> None:
        for b in range(p.blocks):
            acc, out = p.acc + b * p.acc_stride, p.out + b * p.out_stride
            lanes = self._requant_lanes(self.par[p.par + b])
            v = np.add(self.acc[acc : acc + p.count], lanes.bias, dtype=np.int32)  # wraps
            if lanes.exact_below > 2**31 or (
                max(-int(v.min(initial=0)), int(v.max(initial=0))) < lanes.exact_below
            ):
                # |v*mult| < 2^53: the float64 product is exact, and rint rounds ties to even
                r = v * lanes.scale
                np.rint(r, out=r)
            else:
                r = lanes.rounding.apply(v.astype(np.int64) * lanes.mult)
            r += p.zero_point
            np.clip(r, p.lo, p.hi, out=self.out[out : out + p.count], casting="unsafe")

    def _requant_lanes(self, entry: np.ndarray) -> _Requant:
        """A PAR entry's per-lane constants; cached by content (PAR is only ever data)."""
        key = entry.tobytes()
        lanes = self._requant_cache.get(key)
        if lanes is None:
            bias, shift = entry[0], entry[2]
            mult = post_mult(entry[1])
            rounding = _Rounding.of(shift)
            scale = mult.astype(np.float64) * np.exp2(-rounding.shift.astype(np.float64))
            biggest = int(mult.max())
            exact_below = 2**53 // biggest if biggest else 2**62
            lanes = _Requant(bias.copy(), mult, rounding, scale, exact_below)
            self._requant_cache[key] = lanes
        return lanes

    def _alu(self, plan: _Plan, a: _AluPlan, dram: np.ndarray) -> None:
        if a.independent:  # all iterations at once, through strided views of ACC
            dst, src = a.dst_view(self.acc), a.src_view(self.acc)
            dst[...] = _alu_lane(a.op, dst, src, a.imm)
        else:  # iterations depend on each other (a reduction or overlap): in order
            for d, s in zip(a.dst, a.src, strict=True):
                self.acc[d] = _alu_lane(a.op, self.acc[d], self.acc[s], a.imm)


@dataclass
class _AluPlan:
    op: AluOp
    imm: np.int64
    dst: np.ndarray  # ACC entry written by each iteration
    src: np.ndarray  # ACC entry read by each iteration
    independent: bool  # no iteration reads or writes what another one writes
    loops: tuple[int, ...]  # n_outer, n_inner, dst base/strides, src base/strides

    @classmethod
    def of(cls, col, i: int) -> _AluPlan:
        no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
        d = _grid(col, i, "dst", no, ni)
        s = _grid(col, i, "src", no, ni)
        independent = np.unique(d).size == d.size and (
            np.array_equal(d, s) or not np.intersect1d(d, s).size
        )
        loops = tuple(
            int(col[k][i])
            for k in (
                "n_outer",
                "n_inner",
                "dst_base",
                "dst_outer_stride",
                "dst_inner_stride",
                "src_base",
                "src_outer_stride",
                "src_inner_stride",
            )
        )
        return cls(AluOp(int(col["alu_op"][i])), np.int64(col["imm"][i]), d, s, independent, loops)

    def dst_view(self, acc: np.ndarray) -> np.ndarray:
        no, ni, base, so, si = self.loops[:5]
        return _entries_view(acc, base, no, ni, so, si)

    def src_view(self, acc: np.ndarray) -> np.ndarray:
        no, ni = self.loops[:2]
        base, so, si = self.loops[5:]
        return _entries_view(acc, base, no, ni, so, si)


def _entries_view(buf: np.ndarray, base: int, no: int, ni: int, so: int, si: int) -> np.ndarray:
    """Entries base + o*so + i*si of a buffer as an [no, ni, lanes] view (bounds checked)."""
    row = buf.strides[0]
    return np.ndarray(
        (no, ni, buf.shape[1]), buf.dtype, buf, base * row, (so * row, si * row, buf.strides[1])
    )


@dataclass(frozen=True)
class _Rounding:
    """Division by 2^shift, rounded to nearest with ties to even (as QuantizeLinear rounds).

    With p = q*2^s + r: q + 1 exactly when r > 2^(s-1), or r == 2^(s-1) and q is odd, i.e.
    (p + 2^(s-1) - 1 + (q & 1)) >> s. The shift uses its low 6 bits; |p| < 2^54, no overflow.
    """

    shift: np.ndarray
    half_minus_1: np.ndarray
    odd_mask: np.ndarray  # 1 where shift > 0: only then can the quotient's parity matter

    @classmethod
    def of(cls, shift: np.ndarray) -> _Rounding:
        s = np.asarray(shift, np.int64) & 63
        on = (s > 0).astype(np.int64)
        return cls(s, np.where(on, np.left_shift(1, np.maximum(s - 1, 0)) - 1, 0), on)

    def apply(self, p: np.ndarray) -> np.ndarray:
        q = p >> self.shift
        q &= self.odd_mask
        q += p
        q += self.half_minus_1
        q >>= self.shift
        return q


def post_mult(mult: np.ndarray) -> np.ndarray:
    """The multipliers POST uses: the low POST_MULT_BITS bits of PAR's int32s, unsigned (int64)."""
    return np.asarray(mult, np.int64) & ((1 << POST_MULT_BITS) - 1)


def muli_imm(imm: int) -> int:
    """The multiplier MULI uses: the low MULI_IMM_BITS bits of imm, sign-extended."""
    half = 1 << (MULI_IMM_BITS - 1)
    return ((int(imm) + half) & ((1 << MULI_IMM_BITS) - 1)) - half


def round_shift(p: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """p / 2^shift, rounded to nearest with ties to even (int64 in, int64 out)."""
    return _Rounding.of(shift).apply(np.asarray(p, np.int64))


@dataclass(frozen=True)
class _Requant:
    bias: np.ndarray  # int32 per lane
    mult: np.ndarray  # int64 per lane, as POST uses it (post_mult)
    rounding: _Rounding
    scale: np.ndarray  # mult / 2^shift as float64 (exact: a power-of-two scaling)
    exact_below: int  # |v| below this keeps every |v * mult| under 2^53


@dataclass(frozen=True)
class _PostPlan:
    acc: int
    out: int
    count: int
    par: int
    zero_point: int
    lo: int
    hi: int
    blocks: int
    acc_stride: int
    out_stride: int

    @classmethod
    def of(cls, col, i: int) -> _PostPlan:
        names = (
            "acc_base",
            "out_base",
            "count",
            "par_addr",
            "zero_point",
            "clamp_lo",
            "clamp_hi",
            "blocks",
            "acc_block_stride",
            "out_block_stride",
        )
        return cls(*(int(col[k][i]) for k in names))


def _alu_lane(op: AluOp, dst: np.ndarray, src: np.ndarray, imm: np.int64) -> np.ndarray:
    """One ALU operation on int32 lanes, wrapping like the hardware."""
    if op == AluOp.MOV:
        return src
    if op == AluOp.MAX:
        return np.maximum(dst, src)
    if op == AluOp.ADD:
        return np.add(dst, src, dtype=np.int32)  # int32 array addition wraps
    if op == AluOp.MULI:
        return wrap32(src.astype(np.int64) * muli_imm(imm))
    return wrap32(src.astype(np.int64) + imm)  # ADDI


def _grid(col, i, prefix: str, no: int, ni: int) -> np.ndarray:
    base = int(col[f"{prefix}_base"][i])
    so, si = int(col[f"{prefix}_outer_stride"][i]), int(col[f"{prefix}_inner_stride"][i])
    return (base + so * np.arange(no)[:, None] + si * np.arange(ni)[None, :]).ravel()


def _gemm_grids(col, i) -> tuple[np.ndarray, np.ndarray]:
    no, ni = int(col["n_outer"][i]), int(col["n_inner"][i])
    return _grid(col, i, "inp", no, ni), _grid(col, i, "acc", no, ni)


@dataclass
class _Group:
    """Consecutive GEMMs accumulating into the same ACC entries."""

    step: int  # its position in the plan
    acc: slice | np.ndarray  # ACC entries written, a slice when they are consecutive
    reset: bool
    inp: np.ndarray  # [G, T] INP entries streamed by each GEMM
    wgt: np.ndarray  # [G] WGT entries
    wsrc: list[tuple[int, int]] | None  # per GEMM: (LOAD, entry within it) that filled WGT


@dataclass
class _Batch:
    """GEMM groups that stream the same INP entries, unchanged in between: one product.

    Their weights are taken from the LOADs that filled WGT (those DRAM bytes are never
    stored to); each group's result is applied to ACC at the group's own place in program
    order, so every other instruction sees exactly the hardware's ACC.
    """

    groups: list[_Group]
    rows: np.ndarray | None = None  # [groups, GEMMs]: rows of the plan's weight matrix
    w: np.ndarray | None = None  # [GEMMs*rows, groups*cols] float32, from refresh_weights
    lanes_idx: np.ndarray | None = None  # [T, K] INP lanes gathered, when w drops zero rows


def _plan_steps(cfg: HwConfig, col, merge: bool) -> list[tuple[str, object]]:
    """Program order, with GEMM work merged into as few matrix products as is exact."""
    op = col["op"]
    n = len(op)
    store_spans = [Dma.of(col, i).dram_span() for i in np.flatnonzero(op == Opcode.STORE)]
    store_spans = [sp for sp in store_spans if sp]

    def dram_stable(i: int) -> bool:
        lo, hi = Dma.of(col, i).dram_span() or (0, -1)
        return all(hi < a or lo > b for a, b in store_spans)

    src_load = np.full(cfg.wgt_entries, -1, np.int64)
    src_k = np.full(cfg.wgt_entries, -1, np.int64)
    steps: list[tuple[str, object]] = []
    groups: list[_Group] = []
    inp_writes: list[tuple[int, int, int]] = []  # (plan step, first, last) of INP writes
    inp_holds: dict[tuple[int, int], Dma] = {}  # INP entry range -> the LOAD that filled it
    i = 0
    while i < n:
        code = Opcode(int(op[i]))
        if code != Opcode.GEMM:
            if code == Opcode.LOAD:
                d = Dma.of(col, i)
                lo, hi = d.sram, d.sram + d.entries - 1
                if d.buffer == Buffer.WGT and hi >= lo:
                    stable = dram_stable(i)
                    src_load[lo : hi + 1] = i if stable else -1
                    src_k[lo : hi + 1] = np.arange(hi - lo + 1)
                elif d.buffer == Buffer.INP and inp_holds.get((lo, hi)) != d:
                    # (a LOAD identical to the one that filled these entries, from DRAM not
                    # stored to since, rewrites the same values: it changes nothing)
                    inp_writes.append((len(steps), lo, hi))
                    inp_holds = {r: v for r, v in inp_holds.items() if r[1] < lo or r[0] > hi}
                    inp_holds[lo, hi] = d
            elif code == Opcode.STORE:
                span = Dma.of(col, i).dram_span()
                if span:
                    inp_holds = {
                        r: v for r, v in inp_holds.items() if not _overlap(v.dram_span(), span)
                    }
            if code == Opcode.ALU:
                if col["n_outer"][i] and col["n_inner"][i]:  # zero trips: the layer barrier
                    steps.append(("alu", _AluPlan.of(col, i)))
            elif code in (Opcode.LOAD, Opcode.STORE):
                steps.append((code.name.lower(), Dma.of(col, i)))
            elif code == Opcode.POST:
                if col["count"][i] and col["blocks"][i]:  # else it writes nothing
                    steps.append(("post", _PostPlan.of(col, i)))
            elif code != Opcode.END:
                steps.append((code.name.lower(), i))
            i += 1
            continue
        if not (col["n_outer"][i] and col["n_inner"][i]):  # no iterations: writes nothing
            i += 1
            continue
        inp0, acc0 = _gemm_grids(col, i)
        j = i + 1
        while j < n and op[j] == Opcode.GEMM and not col["reset"][j]:
            inp_j, acc_j = _gemm_grids(col, j)
            if acc_j.shape != acc0.shape or not np.array_equal(acc_j, acc0):
                break
            j += 1
        if np.unique(acc0).size != acc0.size:  # ACC entries repeat: iterations chain
            steps += [("gemm_serial", k) for k in range(i, j)]
        else:
            wgt = col["wgt_addr"][i:j].copy()
            known = (src_load[wgt] >= 0).all()
            wsrc = (
                list(zip(src_load[wgt].tolist(), src_k[wgt].tolist(), strict=True))
                if known
                else None
            )
            inps = np.stack([_gemm_grids(col, k)[0] for k in range(i, j)])
            acc = _as_slice(acc0)
            groups.append(_Group(len(steps), acc, bool(col["reset"][i]), inps, wgt, wsrc))
            steps.append(("gemm", groups[-1]))
        i = j
    if merge:
        _merge_groups(steps, groups, inp_writes)
        steps = _without_unread_weight_loads(cfg, col, steps)
    return steps


def _without_unread_weight_loads(cfg: HwConfig, col, steps: list) -> list:
    """Drop WGT LOADs whose entries only merged GEMM batches read (they take their weights
    from the plan) and that are overwritten before the program ends: nothing can see them."""
    last_writer = np.full(cfg.wgt_entries, -1, np.int64)
    needed: set[int] = set()
    for k, (kind, payload) in enumerate(steps):
        if kind == "load" and payload.buffer == Buffer.WGT:
            last_writer[payload.sram : payload.sram + payload.entries] = k
        elif kind in ("gemm", "gemm_serial"):  # these read the WGT buffer as it is
            wgt = payload.wgt if kind == "gemm" else np.array([col["wgt_addr"][payload]])
            needed.update(last_writer[wgt].tolist())
    needed.update(last_writer.tolist())  # the buffer's final contents
    return [
        step
        for k, step in enumerate(steps)
        if not (step[0] == "load" and step[1].buffer == Buffer.WGT and k not in needed)
    ]


def _overlap(a: tuple[int, int] | None, b: tuple[int, int]) -> bool:
    return a is not None and not (a[1] < b[0] or a[0] > b[1])


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """Consecutive indices as a slice (cheaper to read and write through), else unchanged."""
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return idx


def _merge_groups(steps, groups: list[_Group], inp_writes) -> None:
    """Replace runs of groups reading identical, unchanged INP entries by one batch."""
    w_step = np.array([w[0] for w in inp_writes], np.int64)
    w_lo = np.array([w[1] for w in inp_writes], np.int64)
    w_hi = np.array([w[2] for w in inp_writes], np.int64)
    taken = np.zeros(len(groups), bool)
    for gi, g in enumerate(groups):
        if taken[gi] or g.wsrc is None:
            continue
        lo, hi = int(g.inp.min()), int(g.inp.max())
        clobber = (w_step > g.step) & (w_hi >= lo) & (w_lo <= hi)
        limit = int(w_step[clobber].min()) if clobber.any() else len(steps)
        members = [g]
        for hj in range(gi + 1, len(groups)):
            h = groups[hj]
            if h.step > limit:
                break
            if (
                not taken[hj]
                and h.wsrc is not None
                and h.inp.shape == g.inp.shape
                and np.array_equal(h.inp, g.inp)
            ):
                members.append(h)
                taken[hj] = True
        batch = _Batch(members)
        steps[g.step] = ("gemm_batch", batch)
        for k, h in enumerate(members[1:], start=1):
            steps[h.step] = ("gemm_apply", (batch, k))


def _activity(
    cfg: HwConfig, col, sched: timing.Schedule, lo: int = 0, hi: int | None = None
) -> Activity:
    """Activity of instructions [lo, hi). Its cycles: from the end of everything before
    `lo` to the end of the range (layers are ordered by barriers, so these add up)."""
    hi = len(col["op"]) if hi is None else hi
    op = col["op"]
    before = int(sched.end[:lo].max(initial=0))
    cycles = max(int(sched.end[lo:hi].max(initial=before)) - before, 0)
    busy = {}
    for e in timing.Engine:
        mine = sched.engine[lo:hi] == e
        busy[e.name.lower()] = timing.busy_cycles(sched.start[lo:hi][mine], sched.end[lo:hi][mine])
    act = Activity(cycles=cycles, busy=busy)
    for code in Opcode:
        cnt = int((op[lo:hi] == code).sum())
        if cnt:
            act.instructions[code.name] = cnt
    reads = {b: 0 for b in ("inp", "wgt", "acc", "out", "par")}
    writes = dict(reads)
    for i in range(lo, hi):
        code = Opcode(int(op[i]))
        if code in (Opcode.LOAD, Opcode.STORE):
            d = Dma.of(col, i)
            beats = timing.dma_beats(*d.runs(), cfg.bus_bytes)
            if d.is_load:
                act.dram_read_bytes += d.data_bytes
                act.dram_read_beats += beats
                writes[Buffer(d.buffer).name.lower()] += d.entries
            else:
                act.dram_write_bytes += d.data_bytes
                act.dram_write_beats += beats
                reads["out"] += d.entries if d.eb else 0  # nothing to write: nothing read
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
            blocks, cnt = int(col["blocks"][i]), int(col["count"][i])
            reads["acc"] += blocks * cnt
            reads["par"] += blocks
            writes["out"] += blocks * cnt
        elif code == Opcode.ALU:
            t = int(col["n_outer"][i]) * int(col["n_inner"][i])
            reads["acc"] += t * (2 if AluOp(int(col["alu_op"][i])) in (AluOp.ADD, AluOp.MAX) else 1)
            writes["acc"] += t
    act.buffer_reads, act.buffer_writes = reads, writes
    return act


def stream_activity(
    cfg: HwConfig, stream: bytes, dram_size: int, ranges: list[tuple[int, int]]
) -> tuple[Activity, list[Activity]]:
    """A checked stream's whole activity and that of each (first instruction, count) range,
    without planning its execution (what the energy model needs, not the data path)."""
    col = isa.decode_array(stream)
    sched = check.check_stream(cfg, col, dram_size)
    return _activity(cfg, col, sched), [_activity(cfg, col, sched, a, a + n) for a, n in ranges]


# -- errors ---------------------------------------------------------------------------------
_OPCODES = frozenset(int(o) for o in Opcode)


@dataclass(frozen=True)
class Fault:
    """The error a stream stops the DPU with (ErrorCode.NONE: it runs to END)."""

    code: ErrorCode
    instr: int | None = None  # the instruction that raised it, if one did


def first_error(cfg: HwConfig, stream: bytes, dram_size: int) -> Fault:
    """The error the hardware stops `stream` with, over a data window of `dram_size` bytes,
    without the checking pass. That pass rejects every stream this reports an error for but
    a TOKEN_OVERFLOW (it does not count tokens), and more: hazards, tokens pushed after
    their pop in the stream.

    The hardware's checks (docs/isa.md; ErrorCode in host/regmap.py): the dispatcher checks
    each word's opcode and token flags when it arrives, in stream order; words after END are
    not executed. An engine checks an instruction when it takes it (tokens popped): LOAD and
    STORE elem_bytes, then the DRAM span against the window, then each buffer entry; an ALU's
    alu_op, then the entries of GEMM, POST and ALU. Tokens: instructions are taken in each
    engine's order once the tokens they pop are there (the k-th pop of a FIFO takes the k-th
    push), fetch stalls while the next word's command FIFO holds queue_depth words, and END
    waits until every instruction has run; a stream that stops short of END is a DEADLOCK.
    More than queue_depth tokens in a FIFO is a TOKEN_OVERFLOW: reported here when the
    tokens left once everything has run exceed it (then the hardware's overflow is certain);
    a FIFO that holds more only for a while overflows or not with the timing. Reserved bits
    are ignored, as the hardware ignores them. Errors of the bus (FETCH_*, *_AXI) are not
    the stream's.

    With one fault in a stream this is the error the hardware reports. With several, the
    hardware checks dispatch and each engine at once and may report a later one first: this
    reports the first one met when everything that can run has run in stream order."""
    words = np.frombuffer(stream, "<u8").reshape(-1, isa.INSTR_BITS // 64)
    ops = (words[:, 0] & np.uint64((1 << isa.OPCODE_BITS) - 1)).astype(np.int64).tolist()
    legal = [op in _OPCODES for op in ops]
    col = isa.decode_array(_without_reserved_bits(words, ops, legal))
    # fetched and not yet taken, per engine: (instruction, FIFOs it pops, FIFOs it pushes)
    queues: list[list[tuple[int, list[str], list[str]]]] = [[], [], []]
    tokens = dict.fromkeys(timing.QUEUES.values(), 0)
    fetched, progress = 0, True
    while progress:
        progress = False
        while fetched < len(ops):
            i = fetched
            if not legal[i]:
                return Fault(ErrorCode.ILLEGAL_OPCODE, i)
            engine = isa.ENGINE_OF[Opcode(ops[i])]
            if engine is None:  # END
                if any(queues):
                    break
                return _overflow(cfg, tokens) or Fault(ErrorCode.NONE)
            try:
                pops, pushes = timing.token_queues(engine, col, i)
            except ExecutionError:
                return Fault(ErrorCode.ILLEGAL_FLAGS, i)
            if len(queues[engine]) == cfg.queue_depth:
                break
            queues[engine].append((i, pops, pushes))
            fetched += 1
            progress = True
        for queue in queues:
            while queue and all(tokens[t] for t in queue[0][1]):
                i, pops, pushes = queue.pop(0)
                fault = _execution_fault(cfg, col, i, dram_size)
                if fault is not None:
                    return Fault(fault, i)
                for t in pops:
                    tokens[t] -= 1
                for t in pushes:
                    tokens[t] += 1
                progress = True
    return _overflow(cfg, tokens) or Fault(ErrorCode.DEADLOCK)


def _without_reserved_bits(words: np.ndarray, ops: list[int], legal: list[bool]) -> bytes:
    """The stream with every reserved bit cleared and illegal words as END (never executed:
    the dispatcher stops at them), so that it decodes."""
    out = bytearray()
    for w, op, ok in zip(words.tolist(), ops, legal, strict=True):
        word = sum(v << (64 * k) for k, v in enumerate(w))
        if ok:
            used = isa.FIELDS_LSB + sum(f.bits for f in isa.LAYOUT[Opcode(op)])
            word &= (1 << used) - 1
        else:
            word = int(Opcode.END)
        out += word.to_bytes(isa.INSTR_BYTES, "little")
    return bytes(out)


def _execution_fault(cfg: HwConfig, col, i: int, dram_size: int) -> ErrorCode | None:
    """The error instruction i stops its engine with, in the order the engine checks."""
    code = Opcode(int(col["op"][i]))
    if code in (Opcode.LOAD, Opcode.STORE):
        d = Dma.of(col, i)
        width = (
            (cfg.inp_entry_bytes, cfg.wgt_entry_bytes, cfg.cols, cfg.par_entry_bytes)[d.buffer]
            if d.is_load
            else cfg.out_entry_bytes
        )
        kind = "LOAD" if d.is_load else "STORE"
        if d.eb > width:
            return ErrorCode[f"{kind}_ELEM_BYTES"]
        span = d.dram_span()
        if span and span[1] >= dram_size:
            return ErrorCode[f"{kind}_RANGE"]
        if any(
            hi >= _entries(cfg, res) for res, _, hi, _ in check.accesses(col, i) if res != "dram"
        ):
            return ErrorCode[f"{kind}_BUFFER"]
        return None
    if code == Opcode.ALU and not 0 <= col["alu_op"][i] < len(AluOp):
        return ErrorCode.ILLEGAL_ALU_OP
    if any(hi >= _entries(cfg, res) for res, _, hi, _ in check.accesses(col, i)):
        return ErrorCode.COMPUTE_BUFFER
    return None


def _entries(cfg: HwConfig, buffer: str) -> int:
    return getattr(cfg, f"{buffer}_entries")


def _overflow(cfg: HwConfig, tokens: dict[str, int]) -> Fault | None:
    return Fault(ErrorCode.TOKEN_OVERFLOW) if max(tokens.values()) > cfg.queue_depth else None
