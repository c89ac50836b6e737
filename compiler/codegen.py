"""Code generation: tiling, scheduling and instruction emission for one DPU subgraph.

Every layer runs as a sequence of *steps*. A step loads what it needs (LOAD engine),
computes (COMPUTE engine) and, when an output block is complete, requantizes it into OUT and
stores it (STORE engine). Each on-chip buffer is split into two halves; every new use of a
buffer (an input tile, a weight chunk, an accumulation, an output tile) takes the other half,
so step s+1 loads while step s computes. The tokens that make this safe:

  step s loads:    pop c2l (if s >= 2: compute of step s-2 is done) ... push l2c
  step s compute:  pop l2c ... push c2l (if step s+2 exists)
  output tile k:   POST pops s2c (if k >= 2: store of tile k-2 is done), pushes c2s;
                   its STOREs pop c2s ... push s2c (if tile k+2 exists)

A buffer use spans consecutive steps, and two uses apart alternate halves, so the use
before the previous one has finished by s-2. A load into a half whose last reader is step
s-3 or older goes ahead of the c2l pop (`load_order`): an input tile held over several steps
is replaced during the two steps before its successor's. A convolution's accumulators take
all of ACC (`Emitter.whole`): only GEMM and POST touch them, in order on one engine. Each
POST's STOREs follow it in the stream, so program order is one the tokens allow (the golden
model runs program order). Between layers a one-cycle barrier (a zero-trip ALU) waits for
the last store (s2c) and releases the next layer's first load (c2l): the next layer reads
what this one stored. `check.py` proves all of it per program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from dpukit.compiler import isa
from dpukit.compiler.dma import Dma
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.ir import (
    DpuOp,
    QAdd,
    QConcat,
    QConv,
    QMaxPool,
    QTensor,
    QView,
    op_inputs,
)
from dpukit.compiler.isa import AluOp, Buffer, Instr, Opcode
from dpukit.compiler.timing import POST_PIPELINE, dma_cycles, gemm_fill, gemm_interval
from dpukit.errors import CompileError

ALIGN = 64
# Bytes after each tensor that belong to no other tensor: a LOAD whose entries hold whole
# input-channel blocks may read up to rows - 1 bytes past a tensor's end, into lanes whose
# weights are zero, without a hazard with the tensor stored after it.
SLACK = 64
QUICK_STEPS = 48  # steps a quick estimate of a tiling follows (`_conv_cycles`)


MULT_BITS = 22  # significant bits of a requantization multiplier


def requant_params(multiplier: float) -> tuple[int, int]:
    """A real multiplier as (mult, shift): multiplier ~= mult / 2^shift.

    mult keeps 22 significant bits: within 2^-22 of the real scale (onnxruntime's float32
    scales hold 24), a single pass through a DSP48's 25x18 multiplier pair, and any int32
    accumulator times mult stays below 2^53, so the golden model requantizes exactly in
    float64 without checking ranges.
    """
    if multiplier <= 0:
        raise CompileError(f"requantization multiplier {multiplier} must be positive")
    shift = min(max(MULT_BITS - 1 - math.floor(math.log2(multiplier)), 0), 62)
    mult = round(multiplier * 2.0**shift)
    if mult >= 1 << MULT_BITS and shift > 0:  # rounding carried into another bit
        mult, shift = round(multiplier * 2.0 ** (shift - 1)), shift - 1
    if mult >= 1 << 31:
        raise CompileError(f"requantization multiplier {multiplier} is too large for the DPU")
    return mult, shift


@dataclass
class Dram:
    """The program's data window: every DPU tensor first, then the constants."""

    tensors: dict[str, int] = field(default_factory=dict)
    const_base: int = 0
    const: bytearray = field(default_factory=bytearray)

    def place_tensors(self, tensors: dict[str, QTensor], views: dict[str, str]) -> None:
        """Every tensor at an ALIGN boundary, followed by SLACK bytes nothing else uses."""
        top = 0
        for name, t in tensors.items():
            if name not in views:
                self.tensors[name] = top
                top += _placed_bytes(t)
        for view, src in views.items():
            while src in views:
                src = views[src]
            self.tensors[view] = self.tensors[src]
        self.const_base = constants_start(
            self.tensors[n] + t.nbytes for n, t in tensors.items() if n not in views
        )

    def add_const(self, data: bytes) -> int:
        self.const.extend(b"\0" * (-len(self.const) % ALIGN))
        off = self.const_base + len(self.const)
        self.const.extend(data)
        return off

    @property
    def size(self) -> int:
        return self.const_base + len(self.const)


def constants_start(tensor_ends) -> int:
    """Where the constants begin in the data window: at the first ALIGN boundary after the
    last tensor's end and its SLACK bytes (Program.load checks a header against it)."""
    top = max(tensor_ends, default=-SLACK) + SLACK
    return top + (-top % ALIGN)


def _placed_bytes(t: QTensor) -> int:
    """The bytes a tensor takes in the data window: its own, SLACK, and alignment."""
    return t.nbytes + SLACK + (-(t.nbytes + SLACK) % ALIGN)


# The most instructions a program may take: 4 times ResNet-18 at 224x224 (60,000). Compile
# time and memory grow with them (250,000 took 22 s and 0.7 GB on a 2-core machine); past
# this, a compile is a runaway rather than a program anyone runs.
MAX_INSTRUCTIONS = 1 << 18


def check_limits(
    cfg: HwConfig,
    ops: list[DpuOp],
    tensors: dict[str, QTensor],
    views: dict[str, str],
    where: str,
) -> None:
    """What the DPU cannot address, or the compiler should not attempt, as a CompileError
    naming the layer, in time proportional to the layers (before any tiling): tensors and
    data window within the LOAD/STORE address and stride fields and the AXI address space,
    and a least number of instructions within MAX_INSTRUCTIONS."""
    fields = {f.name: f for f in isa.LAYOUT[Opcode.LOAD]}
    # DRAM offsets and row strides are 32-bit fields, the data window's size register too
    window = min(fields["dram_offset"].hi + 1, 1 << cfg.axi_addr_bits)
    layer = {}  # each tensor's first layer, to name in a message
    for op in ops:
        for name in (*op_inputs(op), op.y):
            layer.setdefault(name, op)
    top = 0
    for name, t in tensors.items():
        h, w, c = t.hwc
        op = layer[name]
        at = f"{where}: layer '{op.name}' ({op.kind}): tensor '{name}' ({h}x{w}x{c} HWC)"
        if c > fields["x_stride"].hi:
            raise CompileError(
                f"{at} has {c} channels; the DPU steps from pixel to pixel by at most "
                f"{fields['x_stride'].hi} bytes (LOAD/STORE x_stride): use fewer channels"
            )
        top += 0 if name in views else _placed_bytes(t)
        if top > window:
            raise CompileError(
                f"{at} takes {t.nbytes:,} bytes and ends the DPU's tensors at byte {top:,}, past "
                f"the {window:,} the DPU addresses (data window of {cfg.name}): give the "
                "model a smaller input or fewer channels"
            )
    counts = [(_least_instructions(cfg, op, tensors), op) for op in ops]
    total = sum(n for n, _ in counts)
    if total > MAX_INSTRUCTIONS:
        most, op = max(counts, key=lambda c: c[0])
        h, w, c = tensors[op.y].hwc
        raise CompileError(
            f"{where}: the program would take at least {total:,} DPU instructions, layer "
            f"'{op.name}' ({op.kind}, output {h}x{w}x{c} HWC) {most:,} of them, more than the "
            f"{MAX_INSTRUCTIONS:,} the compiler takes on: give the model a smaller input, or "
            "split it"
        )


def _least_instructions(cfg: HwConfig, op: DpuOp, tensors: dict[str, QTensor]) -> int:
    """Instructions a layer takes at least, whatever its tiling: every tile of pixels
    (at most half of OUT) and channel block runs its GEMMs or ALU ops, a POST and a STORE;
    each output channel's weights fill at least ceil(weights / rows) weight tiles."""
    half_out = cfg.out_entries // 2
    h, w, c = tensors[op.y].hwc
    tiles = -(-h * w // half_out)
    blocks = -(-c // cfg.cols)
    if isinstance(op, QConv):
        _, ci_g, kh, kw = op.weight.shape
        return tiles * blocks * (-(-ci_g * kh * kw // cfg.rows) + 2)
    if isinstance(op, QMaxPool):
        return tiles * blocks * (op.kernel[0] * op.kernel[1] + 3)
    if isinstance(op, QAdd):  # two LOADs, three ALU ops, a POST and a STORE
        return tiles * blocks * 7
    if isinstance(op, QConcat):  # a LOAD, a POST and a STORE per input's channel block
        return sum(tiles * -(-tensors[x].hwc[2] // cfg.cols) * 3 for x in op.inputs)
    return 0  # a view moves no data


@dataclass
class _Step:
    loads: list[Instr] = field(default_factory=list)
    compute: list[Instr] = field(default_factory=list)
    stores: list[list[Instr]] = field(default_factory=list)  # one group per POST, in order


@dataclass
class LayerStats:
    name: str
    kind: str
    output: str  # the DPU tensor the layer writes (what `dpukit verify` checks it by)
    macs: int  # the layer's own multiply-accumulates (what an ideal machine must do)
    instructions: dict[str, int]
    buffer_use: dict[str, int]  # most entries of one use, per buffer
    weight_bytes: int
    tile: str
    first_instr: int = 0  # the layer's instructions in its subgraph's stream (with the
    num_instrs: int = 0  # barrier before it): per-layer activity is counted over them


class Emitter:
    """Collects a subgraph's steps and turns them into a token-synchronised stream."""

    def __init__(self, cfg: HwConfig):
        self.cfg = cfg
        self.half = {
            b: getattr(cfg, f"{b}_entries") // 2 for b in ("inp", "wgt", "acc", "out", "par")
        }
        self.uses = dict.fromkeys(self.half, 0)
        self.layers: list[list[_Step]] = []
        self.ranges: list[tuple[int, int]] = []  # (first instruction, count) per layer
        self.peak = dict.fromkeys(self.half, 0)

    def begin_layer(self) -> None:
        self.layers.append([])
        self.peak = dict.fromkeys(self.half, 0)

    def new_use(self, buf: str, entries: int) -> int:
        """Base entry of the other half of `buf`, for a use of `entries` entries."""
        if entries > self.half[buf]:
            raise CompileError(f"internal: {entries} entries do not fit half of {buf}")
        self.peak[buf] = max(self.peak[buf], entries)
        base = (self.uses[buf] % 2) * self.half[buf]
        self.uses[buf] += 1
        return base

    def whole(self, buf: str, entries: int) -> int:
        """Base entry of a use of all of `buf` (entry 0). Only for ACC under GEMM and POST:
        both run on the compute engine, in order, so no LOAD overlaps the use and it needs
        no double buffering; the barriers order it against other layers' ACC loads."""
        if entries > 2 * self.half[buf]:
            raise CompileError(f"internal: {entries} entries do not fit {buf}")
        self.peak[buf] = max(self.peak[buf], entries)
        return 0

    def step(self) -> _Step:
        s = _Step()
        self.layers[-1].append(s)
        return s

    def _reads(self, ins: Instr) -> list[tuple[str, int]]:
        """The buffer halves a compute instruction reads or writes."""
        f, half = ins.fields, self.half
        if ins.op == Opcode.GEMM:
            acc = f["acc_base"]
            last = acc + (f["n_outer"] - 1) * f["acc_outer_stride"]
            last += (f["n_inner"] - 1) * f["acc_inner_stride"]
            return [
                ("inp", int(f["inp_base"] >= half["inp"])),
                ("wgt", int(f["wgt_addr"] >= half["wgt"])),
                ("acc", int(acc >= half["acc"])),
                ("acc", int(max(acc, last) >= half["acc"])),
            ]
        if ins.op == Opcode.POST:
            acc = f["acc_base"]
            last = acc + max(f["blocks"] - 1, 0) * f["acc_block_stride"] + f["count"]
            par = ("par", int(f["par_addr"] >= half["par"]))
            return [par, ("acc", int(acc >= half["acc"])), ("acc", int(last >= half["acc"]))]
        keys = []
        for end in ("dst", "src"):
            base = f[f"{end}_base"]
            last = base + max(f["n_outer"] - 1, 0) * f[f"{end}_outer_stride"]
            last += max(f["n_inner"] - 1, 0) * f[f"{end}_inner_stride"]
            keys += [("acc", int(base >= half["acc"])), ("acc", int(last >= half["acc"]))]
        return keys

    def finish(self) -> list[Instr]:
        """Token flags, layer barriers and software pipelining (next loads before compute)."""
        stream: list[Instr] = []
        prev_had_store = False
        for li, steps in enumerate(self.layers):
            first = len(stream)
            self.ranges.append((first, 0))
            if not steps:
                continue
            barrier = li > 0 and bool(stream)
            if barrier:
                stream.append(_nop().with_flags(pop_next=prev_had_store, push_prev=True))
            n = len(steps)
            posts = [ins for s in steps for ins in s.compute if ins.op == Opcode.POST]
            k_total = len(posts)
            k = 0
            last_read: dict[tuple[str, int], int] = {}
            for si, s in enumerate(steps):
                if not s.loads or not s.compute:
                    raise CompileError("internal: a step without loads or compute")
                keys = [(_buf(ld), int(ld.sram_base >= self.half[_buf(ld)])) for ld in s.loads]
                order, wait = load_order(si, keys, last_read)
                s.loads = [
                    s.loads[i].with_flags(
                        pop_next=pos == wait and (si >= 2 or (si == 0 and barrier)),
                        push_next=pos == len(order) - 1,
                    )
                    for pos, i in enumerate(order)
                ]
                s.compute[0] = s.compute[0].with_flags(pop_prev=True)
                s.compute[-1] = s.compute[-1].with_flags(push_prev=si + 2 < n)
                for ci, ins in enumerate(s.compute):
                    last_read.update(dict.fromkeys(self._reads(ins), si))
                    if ins.op == Opcode.POST:
                        s.compute[ci] = ins.with_flags(pop_next=k >= 2, push_next=True)
                        k += 1
                # each POST's STOREs: the first waits for it, the last frees its OUT half
                kk = k - len(s.stores)
                for group in s.stores:
                    group[0] = group[0].with_flags(pop_prev=True)
                    group[-1] = group[-1].with_flags(
                        push_prev=kk + 2 < k_total or kk == k_total - 1
                    )
                    kk += 1
            prev_had_store = k_total > 0
            # pipelining: loads of step s+1 go before compute of step s; each POST's STOREs
            # follow it, so program order stays one the tokens allow (POST k+2 reuses the
            # OUT half STORE k reads)
            stream += steps[0].loads
            for si, s in enumerate(steps):
                if si + 1 < n:
                    stream += steps[si + 1].loads
                groups = iter(s.stores)
                for ins in s.compute:
                    stream.append(ins)
                    if ins.op == Opcode.POST:
                        stream += next(groups)
            self.ranges[-1] = (first, len(stream) - first)
        stream.append(isa.make(Opcode.END))
        return stream


def _buf(load: Instr) -> str:
    return Buffer(load.buffer).name.lower()


def load_order(si: int, keys: list, last_read: dict) -> tuple[list[int], int]:
    """Issue order of step si's loads (`keys`: the buffer half each one writes) and the
    position of the one that waits for step si-2's compute (pops c2l).

    Step si's loads may overwrite halves step si-2 still reads. A load into a half last
    read by step si-3 or before (or not yet in this layer) needs no such wait: the loads of
    step si-1, issued before it, already waited for step si-3. Those go first, so an input
    tile that stays in INP over several steps is replaced while the two steps before its
    successor compute, not only the last one.
    """
    if si < 2:
        return list(range(len(keys))), 0
    early = [i for i, key in enumerate(keys) if last_read.get(key, -1) <= si - 3]
    rest = [i for i in range(len(keys)) if last_read.get(keys[i], -1) > si - 3]
    return early + rest, len(early) if rest else len(keys) - 1


def _nop() -> Instr:
    return isa.make(
        Opcode.ALU,
        alu_op=AluOp.MOV,
        dst_base=0,
        src_base=0,
        n_outer=0,
        n_inner=0,
        dst_outer_stride=0,
        dst_inner_stride=0,
        src_outer_stride=0,
        src_inner_stride=0,
        imm=0,
    )


def _load(
    buf: Buffer,
    sram: int,
    dram: int,
    ys: int,
    xs: int,
    ystride: int,
    xstride: int,
    eb: int,
    pads=(0, 0, 0, 0),
    pad_value: int = 0,
    planes: int = 1,
    plane_stride: int = 0,
) -> Instr:
    pt, pl, pb, pr = pads
    if max(pads) > 63:
        raise CompileError(f"padding of {max(pads)} exceeds the DMA's 63 entries")
    return isa.make(
        Opcode.LOAD,
        buffer=buf,
        sram_base=sram,
        dram_offset=dram,
        y_size=ys,
        x_size=xs,
        y_stride=ystride,
        x_stride=xstride,
        elem_bytes=eb,
        pad_top=pt,
        pad_bottom=pb,
        pad_left=pl,
        pad_right=pr,
        pad_value=pad_value,
        z_size=planes,
        z_stride=plane_stride,
    )


def _store(
    sram: int,
    dram: int,
    ys: int,
    xs: int,
    ystride: int,
    xstride: int,
    eb: int,
    planes: int = 1,
    plane_stride: int = 0,
) -> Instr:
    return isa.make(
        Opcode.STORE,
        sram_base=sram,
        dram_offset=dram,
        y_size=ys,
        x_size=xs,
        y_stride=ystride,
        x_stride=xstride,
        elem_bytes=eb,
        z_size=planes,
        z_stride=plane_stride,
    )


def _post(
    acc: int, out: int, count: int, par: int, zp: int, clamp: tuple[int, int], blocks: int = 1
) -> Instr:
    """POST of `blocks` channel blocks, `count` entries each, laid out one after another."""
    return isa.make(
        Opcode.POST,
        acc_base=acc,
        out_base=out,
        count=count,
        par_addr=par,
        zero_point=zp,
        clamp_lo=clamp[0],
        clamp_hi=clamp[1],
        blocks=blocks,
        acc_block_stride=count,
        out_block_stride=count,
    )


def _alu(
    op: AluOp,
    dst: int,
    src: int,
    no: int,
    ni: int,
    dso: int,
    dsi: int,
    sso: int,
    ssi: int,
    imm: int = 0,
) -> Instr:
    return isa.make(
        Opcode.ALU,
        alu_op=op,
        dst_base=dst,
        src_base=src,
        n_outer=no,
        n_inner=ni,
        dst_outer_stride=dso,
        dst_inner_stride=dsi,
        src_outer_stride=sso,
        src_inner_stride=ssi,
        imm=imm,
    )


def _par_entry(cfg: HwConfig, bias, mult, shift) -> bytes:
    c = cfg.cols
    entry = np.zeros((3, c), "<i4")
    for row, v in enumerate((bias, mult, shift)):
        v = np.asarray(v, np.int64).reshape(-1)
        if v.size == 1:  # one value for the whole tensor: every lane
            entry[row, :] = v[0]
        else:  # per channel; lanes past the last channel stay 0
            entry[row, : v.size] = v
    return entry.tobytes()


def _window(start: int, size: int, limit: int) -> tuple[int, int, int, int]:
    """Input positions [start, start + size) against a tensor of `limit`: the first data
    position (0 when there is none), how many are data, and the padding before and after."""
    first = min(max(start, 0), start + size)
    last = max(min(start + size, limit), first)
    return (first if last > first else 0), last - first, first - start, start + size - last


def _tiles(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(size, total - start)


def _store_runs(cfg: HwConfig, dram: int, count: int, widths: list[int]) -> list[tuple]:
    """The STOREs of channel blocks of `count` OUT entries each, block b `widths[b]` channels
    wide to `dram + b*cols`: one per run of equally wide blocks, as (OUT entry offset, DRAM
    offset, bytes per entry, blocks)."""
    runs, first = [], 0
    for b in range(1, len(widths) + 1):
        if b == len(widths) or widths[b] != widths[first]:
            runs.append((first * count, dram + first * cfg.cols, widths[first], b - first))
            first = b
    return runs


@dataclass(frozen=True)
class _Geom:
    """The convolution the array runs, over a virtual input that the INP loads build: its
    pixel (row r, column x) is the `ci` bytes at `r*row_bytes + x*col_bytes` from the input
    tensor's first byte (see `LayerCompiler._conv_geoms`)."""

    h: int
    w: int
    ci: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_top: int
    pad_left: int
    row_bytes: int
    col_bytes: int
    weight: np.ndarray = field(repr=False)  # int8 [co, ci, kh, kw], groups expanded
    # No window reaches padding: INP entries go (row, column, block), so one DRAM run
    # fills a pixel's blocks; a partial last block then reads up to rows-1 bytes past the
    # pixel (the lanes' weights are 0; SLACK covers the tensor's end).
    pixel_major: bool = False
    note: str = ""


def _geom(
    op: QConv,
    ho: int,
    wo: int,
    h: int,
    w: int,
    ci: int,
    kernel,
    stride,
    dilation,
    pt: int,
    pl: int,
    weight: np.ndarray,
    rows: int,
) -> _Geom:
    """A geometry whose virtual input is stored as written (rows of w pixels of ci bytes)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    inside = (ho - 1) * sh + (kh - 1) * dh < h and (wo - 1) * sw + (kw - 1) * dw < w
    pixel_major = op.groups == 1 and pt == pl == 0 and inside and -ci % rows <= SLACK
    return _Geom(h, w, ci, kernel, stride, dilation, pt, pl, w * ci, ci, weight, pixel_major)


class _Tiling(NamedTuple):
    th: int  # output rows per tile
    tw: int  # output columns per tile
    mb: int  # input blocks per chunk
    krc: int  # kernel rows per chunk
    g: int  # output channel blocks per group (accumulated together, sharing input chunks)
    # All weight tiles stay in WGT, loaded once; a step then runs every GEMM until the
    # next input chunk (of all the group's co blocks), not one co block's.
    resident: bool = False


class _Walk(NamedTuple):
    """One step of a conv layer: chunk q of co block j (member jl of its group) on a tile."""

    oy0: int
    th: int
    ox0: int
    tw: int
    members: range  # the group's co blocks
    q: int
    jl: int
    j: int
    new_inp: bool  # the chunk's input window is not the one INP holds already
    first: bool  # the group's first step
    opens: bool  # co block j's first chunk: its first GEMM resets the accumulators
    closes: bool  # co block j's last chunk: its outputs are requantized and stored after it
    first_close: bool  # the group's first step that closes a co block


class _InpWindow(NamedTuple):
    """A chunk's input window in INP: its LOADs as (entry offset, `_load` arguments after
    sram), and how GEMMs address entry (block, row, column)."""

    loads: list[tuple]
    entries: int
    cols: int
    blocks: list[int]
    block_stride: int
    pixel_stride: int  # column stride; a row is cols pixel strides


def _chunks(terms: list[list[tuple]], mb: int, krc: int, wgt_half: int) -> list[list[list]]:
    """Each co block's terms in chunks: few enough weight tiles for half of WGT, at most mb
    distinct input blocks, spread evenly (equal chunks pipeline best), and (when the input
    window is too tall for INP) kernel rows in groups of krc, each group a chunk of its own."""
    chunks_of: list[list[list]] = []
    for j, ts in enumerate(terms):
        if j and ts == terms[j - 1]:  # dense layers: every co block has the same terms
            chunks_of.append(chunks_of[-1])
            continue
        blocks = sorted({t[0] for t in ts})
        n = -(-len(blocks) // mb)  # chunks per kernel-row group; block k goes to k*n // len
        part = {b: k * n // len(blocks) for k, b in enumerate(blocks)}
        chunks: list[list] = []
        cur: list = []
        for t in sorted(ts, key=lambda t: (t[1] // krc, part[t[0]], t[0], t[1], t[2])):
            if cur and (
                len(cur) == wgt_half
                or part[t[0]] != part[cur[-1][0]]
                or t[1] // krc != cur[-1][1] // krc
            ):
                chunks.append(cur)
                cur = []
            cur.append(t)
        chunks.append(cur)
        chunks_of.append(chunks)
    return chunks_of


def _conv_walk(ho: int, wo: int, chunks_of: list, tl: _Tiling):
    """The steps of a conv layer in order: tiles, co groups, chunks, co blocks. A group's
    co blocks share each input chunk (loaded once). Every other group of a tile takes the
    chunks in reverse, so it starts with the chunk its predecessor ended with, still in INP."""
    n_co = len(chunks_of)
    keys: dict[int, tuple] = {}  # a chunk's input window: its blocks and kernel rows
    for chunks in chunks_of:
        for ch in chunks:
            if id(ch) not in keys:
                blocks = tuple(sorted({t[0] for t in ch}))
                keys[id(ch)] = (blocks, min(t[1] for t in ch), max(t[1] for t in ch))
    loaded = None
    for oy0, th in _tiles(ho, tl.th):
        for ox0, tw in _tiles(wo, tl.tw):
            for gi, j0 in enumerate(range(0, n_co, tl.g)):
                members = range(j0, min(n_co, j0 + tl.g))
                qs = range(max(len(chunks_of[j]) for j in members))
                order = [
                    (q, jl, j)
                    for q in (reversed(qs) if gi % 2 else qs)
                    for jl, j in enumerate(members)
                    if q < len(chunks_of[j])
                ]
                opened: set[int] = set()
                last = {j: n for n, (_, _, j) in enumerate(order)}
                first_close = min(last.values())
                for n, (q, jl, j) in enumerate(order):
                    key = (oy0, ox0, keys[id(chunks_of[j][q])])
                    yield _Walk(
                        oy0,
                        th,
                        ox0,
                        tw,
                        members,
                        q,
                        jl,
                        j,
                        key != loaded,
                        n == 0,
                        j not in opened,
                        n == last[j],
                        n == first_close,
                    )
                    opened.add(j)
                    loaded = key


class _Gemms(NamedTuple):
    """A run of GEMMs in a layer's pipeline: cycles until the next GEMM may start, and then
    until the last one has written ACC (compiler/timing.py)."""

    issue: int
    tail: int


class _Post(NamedTuple):
    """A POST, and the cycles of the STOREs that follow it."""

    cycles: int
    store: int


def _pipeline(steps: list[tuple[list, set, list]]) -> tuple[float, float]:
    """Cycles of a layer's steps under the tokens `Emitter.finish` writes, and when its
    compute starts: the load engine issues each step's loads in `load_order`, the one that
    pops c2l waiting for step s-2's compute; compute waits for its step's loads; POST k waits
    for the STOREs of POST k-2. A step is (loads as (cycles, buffer half), halves its compute
    reads, work: `_Gemms` and `_Post` in order)."""
    load_free = store_free = 0.0
    comp_end: list[float] = []
    store_ends: list[float] = []
    last_read: dict = {}
    # compute's clock after the last step; when its GEMMs have written ACC; its POST's end
    issued = drained = post_end = 0.0
    for si, (loads, reads, work) in enumerate(steps):
        order, wait = load_order(si, [k for _, k in loads], last_read)
        clock = load_free
        for pos, i in enumerate(order):
            if pos == wait and si >= 2:
                clock = max(clock, comp_end[si - 2])
            clock += loads[i][0]
        load_free = clock
        clock = max(issued, load_free)
        if not si:
            start = clock
        for item in work:
            if isinstance(item, _Post):  # the GEMMs after it run beside it
                clock = max(clock, drained, post_end)
                if len(store_ends) >= 2:
                    clock = max(clock, store_ends[-2])
                post_end = clock + item.cycles
                store_free = max(store_free, post_end) + item.store
                store_ends.append(store_free)
                clock += 1
            else:
                clock += item.issue
                drained = clock + item.tail
        issued = clock
        comp_end.append(max(clock, drained, post_end))
        last_read.update(dict.fromkeys(reads, si))
    return max(comp_end[-1], store_free), start


class LayerCompiler:
    """Lowers each IR op to steps."""

    def __init__(self, cfg: HwConfig, em: Emitter, dram: Dram, tensors: dict[str, QTensor]):
        self.cfg, self.em, self.dram, self.t = cfg, em, dram, tensors
        self._dma_cache: dict[tuple, int] = {}

    def addr(self, name: str) -> int:
        return self.dram.tensors[name]

    # -- convolution-like layers on the systolic array ---------------------------------
    def conv(self, op: QConv) -> LayerStats:
        cfg, em = self.cfg, self.em
        rc = cfg.rows * cfg.cols
        y = self.t[op.y]
        ho, wo, co = y.hwc
        par = self._conv_par(op)
        options = []  # (modeled cycles, steps, geometry, terms, tiling)
        for geom in self._conv_geoms(op):
            terms = self._conv_terms(geom)
            options += [
                (*cost, geom, terms, tl) for cost, tl in self._conv_tilings(op, geom, terms)
            ]
        # Within 1 % of the fewest cycles, the fewest steps: fewer instructions to fetch, and
        # longer runs of GEMMs into the same accumulators (one product in the golden model).
        fastest = min(o[0] for o in options)
        _, _, geom, terms, tl = min(
            (o for o in options if o[0] <= 1.01 * fastest), key=lambda o: (o[1], o[0])
        )
        chunks_of = self._chunks_for(terms, tl)
        n_co = len(chunks_of)
        # the weights, chunk after chunk, in the order of each chunk's terms
        wpos, total = {}, 0
        for j, chunks in enumerate(chunks_of):
            for q, chunk in enumerate(chunks):
                wpos[j, q], total = total, total + len(chunk)
        tiles = terms["tiles"]
        wdram = self.dram.add_const(
            np.stack(
                [
                    tiles[j, i, ky, kx]
                    for j, chunks in enumerate(chunks_of)
                    for chunk in chunks
                    for i, ky, kx in chunk
                ]
            ).tobytes()
        )
        par_all = tl.resident and n_co <= em.half["par"]  # every PAR entry loaded once
        xa, zp = self.addr(op.x), self.t[op.x].zero_point
        sh, sw = geom.stride
        dh, dw = geom.dilation
        em.begin_layer()
        s = par_base = None
        for w in _conv_walk(ho, wo, chunks_of, tl):
            chunk = chunks_of[w.j][w.q]
            t = w.th * w.tw
            loads = []
            if s is None and tl.resident:  # all weights, once
                wbase = em.new_use("wgt", total)
                loads.append(_load(Buffer.WGT, wbase, wdram, 1, total, total * rc, rc, rc))
            if w.first_close and (par_base is None or not par_all):  # needed from here on
                first = 0 if par_all else w.members[0]
                count = n_co if par_all else len(w.members)
                par_base = em.new_use("par", count)
                loads.append(self._par_load(par_base, par[first], count))
            if w.first:  # the group's accumulators
                acc_base = em.whole("acc", t * len(w.members))
            if w.new_inp:
                win = self._inp_window(geom, xa, zp, w, chunk)
                inp_base = em.new_use("inp", win.entries)
                loads += [_load(Buffer.INP, inp_base + off, *spec) for off, *spec in win.loads]
            if tl.resident:
                wq = wbase + wpos[w.j, w.q]
            else:
                wq = em.new_use("wgt", len(chunk))
                dram = wdram + wpos[w.j, w.q] * rc
                loads.append(_load(Buffer.WGT, wq, dram, 1, len(chunk), len(chunk) * rc, rc, rc))
            if loads:  # else (weights resident, input chunk in INP) the step goes on
                s = em.step()
                s.loads += loads
            ky0 = min(term[1] for term in chunk)
            for ti, (i, ky, kx) in enumerate(chunk):
                s.compute.append(
                    isa.make(
                        Opcode.GEMM,
                        reset=int(w.opens and ti == 0),
                        wgt_addr=wq + ti,
                        inp_base=inp_base
                        + win.blocks.index(i) * win.block_stride
                        + ((ky - ky0) * dh * win.cols + kx * dw) * win.pixel_stride,
                        acc_base=acc_base + w.jl * t,
                        n_outer=w.th,
                        n_inner=w.tw,
                        inp_outer_stride=sh * win.cols * win.pixel_stride,
                        inp_inner_stride=sw * win.pixel_stride,
                        acc_outer_stride=w.tw,
                        acc_inner_stride=1,
                    )
                )
            if w.closes:  # co block j's accumulation is complete: requantize and store
                self._emit_output(
                    s,
                    acc_base + w.jl * t,
                    t,
                    par_base + (w.j if par_all else w.jl),
                    y,
                    op.clamp,
                    *self._conv_out(op, w, w.j),
                )
        kh, kw = op.kernel
        macs = ho * wo * co * kh * kw * (self.t[op.x].hwc[2] // op.groups)
        rows = "" if tl.krc == geom.kernel[0] else f", {tl.krc} kernel rows"
        note = f", {geom.note}" if geom.note else ""
        tile = f"{tl.th}x{tl.tw} px, {tl.mb} in-blocks{rows}{note}"
        return self._stats(op, macs, terms["weight_bytes"], tile)

    def _conv_par(self, op: QConv) -> list[int]:
        """Requantization parameters in the constant segment: DRAM offset per co block."""
        cfg = self.cfg
        c = cfg.cols
        co = self.t[op.y].hwc[2]
        entries = []
        for j in range(-(-co // c)):
            sl = slice(j * c, min((j + 1) * c, co))
            pairs = [requant_params(float(m)) for m in op.multiplier[sl]]
            mults, shifts = [p[0] for p in pairs], [p[1] for p in pairs]
            entries.append(_par_entry(cfg, op.bias[sl], mults, shifts))
        par0 = self.dram.add_const(b"".join(entries))
        return [par0 + j * cfg.par_entry_bytes for j in range(len(entries))]

    def _conv_geoms(self, op: QConv) -> list[_Geom]:
        """The conv as written, and (when it applies) with the input read differently:

        - columns: when no window reaches horizontal padding and the kernel columns are
          adjacent, a virtual pixel is a whole kernel row's window (kw*ci bytes from input
          column x*sw), the kernel kh x 1 over kw*ci channels. Few input channels then fill
          the array's rows with several kernel columns (3 channels of a 7x7 kernel: 10
          blocks of 16 per kernel row instead of 7 blocks of 3), and a 1-column kernel with
          a column stride no longer loads the columns it skips.
        - rows: a 1-row kernel with a row stride loads only the rows it uses.
        """
        r = self.cfg.rows
        x, y = self.t[op.x], self.t[op.y]
        hi, wi, ci = x.hwc
        ho, wo, co = y.hwc
        kh, kw = op.kernel
        sh, sw = op.stride
        dh, dw = op.dilation
        pt, pl, _, _ = op.pads
        g = op.groups
        dense = np.zeros((co, ci, kh, kw), np.int8)  # groups expanded
        cig, cog = ci // g, co // g
        for gi in range(g):
            dense[gi * cog : (gi + 1) * cog, gi * cig : (gi + 1) * cig] = op.weight[
                gi * cog : (gi + 1) * cog
            ]
        geoms = [_geom(op, ho, wo, hi, wi, ci, (kh, kw), (sh, sw), (dh, dw), pt, pl, dense, r)]
        h, row_bytes, notes = hi, wi * ci, []
        if kh == 1 and sh > 1 and pt == 0 and (ho - 1) * sh < hi:
            h, row_bytes, sh = ho, sh * wi * ci, 1
            notes.append("rows subsampled")
        inside = pl == 0 and (wo - 1) * sw + (kw - 1) * dw < wi
        packs = g == 1 and dw == 1 and -(-kw * ci // r) < kw * -(-ci // r)
        if inside and (packs or (kw == 1 and sw > 1)):
            # virtual channel kx*ci + c of virtual pixel (row, x) is input (row, x*sw + kx, c)
            wt = dense.transpose(0, 3, 1, 2).reshape(co, kw * ci, kh, 1)
            notes.append(f"{kw} kernel columns packed" if kw > 1 else "columns subsampled")
            geom = _geom(op, ho, wo, h, wo, kw * ci, (kh, 1), (sh, 1), (dh, 1), pt, 0, wt, r)
            geoms.append(replace(geom, row_bytes=row_bytes, col_bytes=sw * ci))
        elif notes:
            geom = _geom(op, ho, wo, h, wi, ci, (kh, kw), (sh, sw), (dh, dw), pt, pl, dense, r)
            geoms.append(replace(geom, row_bytes=row_bytes))
        if notes:
            geoms[-1] = replace(geoms[-1], note=", ".join(notes))
        return geoms

    def _conv_terms(self, geom: _Geom) -> dict:
        """Weight tiles and, per co block, its GEMM terms (input block, ky, kx). The tiling
        search keeps what it computes for this geometry in the same dict."""
        r, c = self.cfg.rows, self.cfg.cols
        co, ci, kh, kw = geom.weight.shape
        n_ci, n_co = -(-ci // r), -(-co // c)
        dense = np.zeros((n_co * c, n_ci * r, kh, kw), np.int8)
        dense[:co, :ci] = geom.weight
        # tiles[j, i, ky, kx] is an R x C matrix: [input lane, output lane]
        tiles = dense.reshape(n_co, c, n_ci, r, kh, kw).transpose(0, 2, 4, 5, 3, 1)
        if geom.pixel_major:  # a chunk's blocks are loaded as one range
            needed = [list(range(n_ci))] * n_co
        else:
            needed = [[i for i in range(n_ci) if tiles[j, i].any()] or [0] for j in range(n_co)]
        terms = [
            [(i, ky, kx) for i in needed[j] for ky in range(kh) for kx in range(kw)]
            for j in range(n_co)
        ]
        return {"tiles": tiles, "terms": terms, "weight_bytes": sum(map(len, terms)) * r * c}

    def _conv_out(self, op: QConv, w: _Walk, j: int) -> tuple:
        """DRAM placement of output channel block j of a tile: `_emit_output`'s dram, ys, xs,
        ystride, xstride and widths."""
        c = self.cfg.cols
        _, wo, co = self.t[op.y].hwc
        dram = self.addr(op.y) + (w.oy0 * wo + w.ox0) * co + j * c
        return dram, w.th, w.tw, wo * co, co, [min(c, co - j * c)]

    def _inp_window(self, geom: _Geom, xa: int, zp: int, w: _Walk, chunk) -> _InpWindow:
        """The LOADs of a tile's input window for one chunk, and how GEMMs address it."""
        r = self.cfg.rows
        kh, kw = geom.kernel
        sh, sw = geom.stride
        dh, dw = geom.dilation
        blocks = sorted({term[0] for term in chunk})
        ky0 = min(term[1] for term in chunk)
        ky1 = max(term[1] for term in chunk)
        # input rows this chunk's kernel rows meet, padding included
        hin = (w.th - 1) * sh + (ky1 - ky0) * dh + 1
        win = (w.tw - 1) * sw + (kw - 1) * dw + 1
        vy0, ys, pad_t, pad_b = _window(w.oy0 * sh - geom.pad_top + ky0 * dh, hin, geom.h)
        vx0, xs, pad_l, pad_r = _window(w.ox0 * sw - geom.pad_left, win, geom.w)
        src = xa + vy0 * geom.row_bytes + vx0 * geom.col_bytes
        if geom.pixel_major:  # entries (row, column, block): a pixel's blocks are one run
            blocks = list(range(blocks[0], blocks[-1] + 1))
            nb = len(blocks)
            spec = (0, src + blocks[0] * r, xs, nb, geom.col_bytes, r, r, (0,) * 4, zp, ys)
            return _InpWindow([(*spec, geom.row_bytes)], nb * hin * win, win, blocks, 1, nb)
        plane = hin * win
        loads, first = [], 0
        for k in range(1, len(blocks) + 1):  # one LOAD per run of equally wide blocks
            width = min(r, geom.ci - blocks[first] * r)
            if k < len(blocks) and blocks[k] == blocks[k - 1] + 1:
                if min(r, geom.ci - blocks[k] * r) == width:
                    continue
            loads.append(
                (
                    first * plane,
                    src + blocks[first] * r,
                    ys,
                    xs,
                    geom.row_bytes,
                    geom.col_bytes,
                    width,
                    (pad_t, pad_l, pad_b, pad_r),
                    zp,
                    k - first,
                    r,
                )
            )
            first = k
        return _InpWindow(loads, len(blocks) * plane, win, blocks, plane, 1)

    def _conv_tilings(
        self, op: QConv, geom: _Geom, terms: dict
    ) -> list[tuple[tuple[float, int], _Tiling]]:
        """The most promising tilings with their (modeled cycles, steps).

        Kernel rows are split over chunks only when not even one output row's whole input
        window fits half of INP. Candidates are ranked by a quick estimate; the best few
        are run through `_conv_cycles`, which follows the token protocol step by step.
        """
        cfg, half = self.cfg, self.em.half
        ho, wo, _ = self.t[op.y].hwc
        kh, kw = geom.kernel
        sh, sw = geom.stride
        dh, dw = geom.dilation
        n_co = len(terms["terms"])
        most_blocks = max(len({t[0] for t in ts}) for ts in terms["terms"])
        blocks_opts = sorted({-(-most_blocks // n) for n in range(1, most_blocks + 1)})[-12:]
        widths = sorted({-(-wo // d) for d in range(1, wo + 1)}, reverse=True)[:24]
        if widths[-1] != 1:
            widths.append(1)
        resident = sum(map(len, terms["terms"])) <= half["wgt"]
        for krc in range(kh, 0, -1):
            cands = set()
            for tw in widths:
                win = (tw - 1) * sw + (kw - 1) * dw + 1
                for mb in blocks_opts:
                    th = min(ho, half["out"] // tw, 2 * half["acc"] // tw)
                    while th > 0 and mb * ((th - 1) * sh + (krc - 1) * dh + 1) * win > half["inp"]:
                        th -= 1
                    if th < 1:
                        continue
                    for th_c in (th, -(-ho // -(-ho // th))):  # as tall as fits, or even
                        g = max(1, min(n_co, 2 * half["acc"] // (th_c * tw), half["par"]))
                        for g_c in (g, -(-n_co // -(-n_co // g))):  # as many as fit, or even
                            cands.add(_Tiling(th_c, tw, mb, krc, g_c))
                            if resident:
                                cands.add(_Tiling(th_c, tw, mb, krc, g_c, True))
            if cands:
                break
        else:
            raise CompileError(
                f"layer '{op.name}': one kernel row of one output pixel's input window "
                f"({kw} wide, dilation {dw}) does not fit the INP buffer of {cfg.name}"
            )
        kinds: dict[tuple, _Tiling] = {}  # one of each tile size and count: the widest
        for tl in sorted(cands, key=lambda tl: (-tl.tw, tl)):
            n_tiles = -(-ho // tl.th) * -(-wo // tl.tw)
            kinds.setdefault((tl.th * tl.tw, n_tiles, *tl[2:]), tl)
        shortlist = sorted(kinds.values(), key=lambda tl: self._conv_estimate(op, geom, terms, tl))
        shortlist = shortlist[:40]
        # then the pipeline over the first two tiles, extrapolated, and the whole layer
        ranked = sorted(shortlist, key=lambda tl: self._conv_cycles(op, geom, terms, tl, True)[0])
        return [(self._conv_cycles(op, geom, terms, tl), tl) for tl in ranked[:4]]

    def _conv_estimate(self, op: QConv, geom: _Geom, terms: dict, tl: _Tiling) -> float:
        """Quick cycles of a tiling: busiest engine (compute, or loads of inputs and weights)
        plus the first input load, which nothing overlaps."""
        cfg = self.cfg
        ho, wo, _ = self.t[op.y].hwc
        n_tiles = -(-ho // tl.th) * -(-wo // tl.tw)
        n_co = len(terms["terms"])
        gemms = sum(map(len, terms["terms"]))
        groups = -(-n_co // tl.g)  # each group reloads the chunks but the one it starts with
        compute = self._compute_cycles(
            gemms, n_tiles, tl.th * tl.tw, n_tiles * groups, n_co * ho * wo
        )
        chunks = self._chunks_for(terms, tl)[0]
        key = ("first tile loads", tl.th, tl.tw, tl.mb, tl.krc)
        if key not in terms:  # co block 0's input chunks of the first tile
            first = _Walk(0, tl.th, 0, tl.tw, range(1), 0, 0, 0, True, True, True, True, True)
            terms[key] = [
                sum(self._dma_cycles(True, *spec[1:]) for spec in win.loads)
                for win in (self._inp_window(geom, self.addr(op.x), 0, first, c) for c in chunks)
            ]
        loads = terms[key]
        inp = (sum(loads) + (groups - 1) * (sum(loads) - loads[0])) * n_tiles
        wgt = (gemms * cfg.rows * cfg.cols / cfg.bus_bytes) * (1 if tl.resident else n_tiles)
        return max(compute, inp + wgt) + loads[0]

    def _compute_cycles(self, gemms: int, n_tiles: int, t: int, posts: int, post: int) -> int:
        """Compute cycles of a layer: `gemms` GEMMs of `t` vectors on each of `n_tiles` tiles,
        back to back (compiler/timing.py), and `posts` POSTs of `post` cycles in all, each
        waiting for the GEMMs before it to drain."""
        return (
            gemms * n_tiles * int(gemm_interval(self.cfg, t)) + posts * gemm_fill(self.cfg) + post
        )

    def _chunks_for(self, terms: dict, tl: _Tiling) -> list[list[list]]:
        """`_chunks` of the terms for a tiling, computed once per (mb, krc)."""
        key = ("chunks", tl.mb, tl.krc)
        if key not in terms:
            terms[key] = _chunks(terms["terms"], tl.mb, tl.krc, self.em.half["wgt"])
        return terms[key]

    def _conv_cycles(
        self, op: QConv, geom: _Geom, terms: dict, tl: _Tiling, quick: bool = False
    ) -> tuple[float, int]:
        """Modeled cycles and steps of the layer with this tiling: its steps' loads, GEMMs,
        POSTs and STOREs costed as compiler/timing.py does, under the tokens `Emitter.finish`
        writes (see `_pipeline`). `quick` follows only the first QUICK_STEPS steps (at most
        two tiles) and scales what comes after the first loads by the compute left."""
        cfg, half = self.cfg, self.em.half
        ho, wo, _ = self.t[op.y].hwc
        chunks_of = self._chunks_for(terms, tl)
        n_co = len(chunks_of)
        par_all = tl.resident and n_co <= half["par"]
        xa = self.addr(op.x)
        fill = gemm_fill(cfg)
        rc = cfg.rows * cfg.cols
        pb = cfg.par_entry_bytes
        uses = dict(self.em.uses)

        def key(buf: str) -> tuple[str, int]:  # the half a new use of buf takes
            uses[buf] += 1
            return buf, (uses[buf] - 1) % 2

        steps: list[tuple[list, set, list]] = []  # (loads (cycles, half), halves read, work)
        par_key = None
        windows = terms.setdefault("window cycles", {})  # INP load cycles by tile and chunk
        tiles_seen: list[tuple[int, int]] = []
        work_done = 0.0  # compute cycles of the steps followed
        for w in _conv_walk(ho, wo, chunks_of, tl):
            if quick and (w.oy0, w.ox0) not in tiles_seen:
                tiles_seen.append((w.oy0, w.ox0))
            if quick and (len(tiles_seen) > 2 or len(steps) > QUICK_STEPS):
                break
            chunk = chunks_of[w.j][w.q]
            t = w.th * w.tw
            loads = []
            if not steps and tl.resident:
                total = sum(map(len, terms["terms"]))
                wgt_key = key("wgt")
                loads.append((self._dma_cycles(True, 0, 1, total, total * rc, rc, rc), wgt_key))
            if w.first_close and (par_key is None or not par_all):
                n = n_co if par_all else len(w.members)
                par_key = key("par")
                loads.append((self._dma_cycles(True, 0, 1, n, n * pb, pb, pb), par_key))
            if w.new_inp:
                inp_key = key("inp")
                at = (w.oy0, w.ox0, w.th, w.tw, id(chunk))
                if at not in windows:
                    win = self._inp_window(geom, xa, 0, w, chunk)
                    windows[at] = [self._dma_cycles(True, *spec[1:]) for spec in win.loads]
                loads += [(cost, inp_key) for cost in windows[at]]
            if not tl.resident:
                wgt_key = key("wgt")
                n = len(chunk)
                loads.append((self._dma_cycles(True, 0, 1, n, n * rc, rc, rc), wgt_key))
            if loads:
                steps.append((loads, set(), []))
            _, reads, work = steps[-1]
            reads.update((inp_key, wgt_key))
            interval = int(gemm_interval(cfg, t))
            work.append(_Gemms(len(chunk) * interval, t + fill - interval))
            work_done += len(chunk) * interval + (fill + t if w.closes else 0)
            if w.closes:
                reads.add(par_key)
                dram, ys, xs, ystride, xstride, widths = self._conv_out(op, w, w.j)
                store = self._dma_cycles(False, dram, ys, xs, ystride, xstride, widths[0])
                work.append(_Post(t + POST_PIPELINE, store))
        cycles, head = _pipeline(steps)
        if quick:  # compute of the whole layer: every term on every pixel, then POST
            gemms = sum(map(len, terms["terms"]))
            n_tiles = -(-ho // tl.th) * -(-wo // tl.tw)
            posts = n_tiles * -(-n_co // tl.g)
            work = self._compute_cycles(gemms, n_tiles, tl.th * tl.tw, posts, n_co * ho * wo)
            cycles = head + (cycles - head) * work / work_done
        return cycles, len(steps)

    def _dma_cycles(
        self,
        is_load: bool,
        dram: int,
        ys: int,
        xs: int,
        ystride: int,
        xstride: int,
        eb: int,
        pads=(0, 0, 0, 0),
        pad_value: int = 0,
        planes: int = 1,
        plane_stride: int = 0,
    ) -> int:
        """Cycles of a LOAD or STORE as compiler/timing.py counts them (arguments as `_load`'s
        after the SRAM base, which costs nothing)."""
        key = (is_load, dram % ALIGN, ys, xs, ystride, xstride, eb, pads, planes, plane_stride)
        cost = self._dma_cache.get(key)
        if cost is None:
            d = Dma(
                is_load,
                0,
                0,
                dram % ALIGN,
                planes,
                plane_stride,
                ys,
                xs,
                eb,
                ystride,
                xstride,
                tuple(pads),
                pad_value,
            )
            cost = dma_cycles(self.cfg, d)
            self._dma_cache[key] = cost
        return cost

    def _load_par(self, s: _Step, dram: int) -> int:
        """Load one PAR entry in this step; returns its address."""
        base = self.em.new_use("par", 1)
        s.loads.append(self._par_load(base, dram, 1))
        return base

    def _par_load(self, base: int, dram: int, count: int) -> Instr:
        """The LOAD of `count` consecutive PAR entries from `dram` to entry `base`."""
        n = self.cfg.par_entry_bytes
        return _load(Buffer.PAR, base, dram, 1, count, count * n, n, n)

    def _emit_output(
        self,
        s: _Step,
        acc: int,
        count: int,
        par: int,
        y: QTensor,
        clamp,
        dram: int,
        ys: int,
        xs: int,
        ystride: int,
        xstride: int,
        widths: list[int],
    ) -> None:
        """POST channel blocks of `count` entries each (consecutive in ACC, PAR and OUT) and
        STORE them: block b, `widths[b]` channels wide, to `dram + b*cols` bytes."""
        out = self.em.new_use("out", count * len(widths))
        s.compute.append(_post(acc, out, count, par, y.zero_point, clamp, len(widths)))
        s.stores.append(
            [
                _store(out + o, d, ys, xs, ystride, xstride, eb, p, self.cfg.cols)
                for o, d, eb, p in _store_runs(self.cfg, dram, count, widths)
            ]
        )

    # -- layers on the ALU ----------------------------------------------------------------
    def maxpool(self, op: QMaxPool) -> LayerStats:
        cfg, em = self.cfg, self.em
        c = cfg.cols
        x, y = self.t[op.x], self.t[op.y]
        hi_, wi_, ch = x.hwc
        ho, wo, _ = y.hwc
        kh, kw = op.kernel
        sh, sw = op.stride
        pt, pl, _, _ = op.pads
        mult, shift = requant_params(op.multiplier)
        par = self.dram.add_const(_par_entry(cfg, -x.zero_point, mult, shift))
        th, tw = self._maxpool_tile(op, ho, wo)
        xa, ya = self.addr(op.x), self.addr(op.y)
        em.begin_layer()
        pbase = None
        for oy0, th_a in _tiles(ho, th):
            for ox0, tw_a in _tiles(wo, tw):
                hin, win = (th_a - 1) * sh + kh, (tw_a - 1) * sw + kw
                iy, ix = oy0 * sh - pt, ox0 * sw - pl
                vy0, ys, pad_t, pad_b = _window(iy, hin, hi_)
                vx0, xs, pad_l, pad_r = _window(ix, win, wi_)
                pads = (pad_t, pad_l, pad_b, pad_r)
                for cb in range(-(-ch // c)):
                    s = em.step()
                    base = em.new_use("acc", hin * win + th_a * tw_a)
                    dst = base + hin * win
                    s.loads.append(
                        _load(
                            Buffer.ACC,
                            base,
                            xa + (vy0 * wi_ + vx0) * ch + cb * c,
                            ys,
                            xs,
                            wi_ * ch,
                            ch,
                            min(c, ch - cb * c),
                            pads,
                            -128,
                        )
                    )
                    if pbase is None:  # one parameter entry serves the whole layer
                        pbase = self._load_par(s, par)
                    for ky in range(kh):
                        for kx in range(kw):
                            s.compute.append(
                                _alu(
                                    AluOp.MOV if ky == kx == 0 else AluOp.MAX,
                                    dst,
                                    base + ky * win + kx,
                                    th_a,
                                    tw_a,
                                    tw_a,
                                    1,
                                    sh * win,
                                    sw,
                                )
                            )
                    self._emit_output(
                        s,
                        dst,
                        th_a * tw_a,
                        pbase,
                        y,
                        op.clamp,
                        ya + (oy0 * wo + ox0) * ch + cb * c,
                        th_a,
                        tw_a,
                        wo * ch,
                        ch,
                        [min(c, ch - cb * c)],
                    )
        return self._stats(op, 0, 0, f"{th}x{tw} px")

    def _maxpool_tile(self, op: QMaxPool, ho: int, wo: int) -> tuple[int, int]:
        half = self.em.half
        kh, kw = op.kernel
        sh, sw = op.stride
        for tw in sorted({-(-wo // d) for d in range(1, wo + 1)}, reverse=True):
            for th in range(min(ho, half["out"] // tw), 0, -1):
                if ((th - 1) * sh + kh) * ((tw - 1) * sw + kw) + th * tw <= half["acc"]:
                    return th, tw
        raise CompileError(f"layer '{op.name}': a {kh}x{kw} window does not fit the ACC buffer")

    def add(self, op: QAdd) -> LayerStats:
        cfg, em = self.cfg, self.em
        c = cfg.cols
        a, b, y = self.t[op.a], self.t[op.b], self.t[op.y]
        h, w, ch = y.hwc
        ra, rb = a.scale / y.scale, b.scale / y.scale
        n = min(62, math.floor(math.log2((1 << 22) / max(ra, rb))))
        if n < 0:
            raise CompileError(f"layer '{op.name}': input/output scale ratio too large")
        ma, mb = round(ra * 2**n), round(rb * 2**n)
        par = self.dram.add_const(_par_entry(cfg, -(a.zero_point * ma + b.zero_point * mb), 1, n))
        th, tw = self._flat_tile(h, w, per_px=2)
        aa, ba, ya = self.addr(op.a), self.addr(op.b), self.addr(op.y)
        em.begin_layer()
        pbase = None
        for oy0, th_a in _tiles(h, th):
            for ox0, tw_a in _tiles(w, tw):
                for cb in range(-(-ch // c)):
                    s = em.step()
                    cnt = th_a * tw_a
                    base = em.new_use("acc", 2 * cnt)
                    off = (oy0 * w + ox0) * ch + cb * c
                    eb = min(c, ch - cb * c)
                    for src, dst in ((aa, base), (ba, base + cnt)):
                        s.loads.append(
                            _load(Buffer.ACC, dst, src + off, th_a, tw_a, w * ch, ch, eb)
                        )
                    if pbase is None:  # one parameter entry serves the whole layer
                        pbase = self._load_par(s, par)
                    s.compute += [
                        _alu(AluOp.MULI, base, base, 1, cnt, 0, 1, 0, 1, ma),
                        _alu(AluOp.MULI, base + cnt, base + cnt, 1, cnt, 0, 1, 0, 1, mb),
                        _alu(AluOp.ADD, base, base + cnt, 1, cnt, 0, 1, 0, 1),
                    ]
                    self._emit_output(
                        s, base, cnt, pbase, y, op.clamp, ya + off, th_a, tw_a, w * ch, ch, [eb]
                    )
        return self._stats(op, 0, 0, f"{th}x{tw} px")

    def _flat_tile(self, h: int, w: int, per_px: int) -> tuple[int, int]:
        half = self.em.half
        cap = min(half["acc"] // per_px, half["out"])
        tw = min(w, cap)
        return max(1, min(h, cap // tw)), tw

    def concat(self, op: QConcat) -> LayerStats:
        cfg, em = self.cfg, self.em
        c = cfg.cols
        y = self.t[op.y]
        h, w, cy = y.hwc
        ya = self.addr(op.y)
        em.begin_layer()
        ch_off = 0
        th, tw = self._flat_tile(h, w, per_px=1)
        for name in op.inputs:
            x = self.t[name]
            cx = x.hwc[2]
            mult, shift = requant_params(x.scale / y.scale)
            par = self.dram.add_const(_par_entry(cfg, -x.zero_point, mult, shift))
            xa = self.addr(name)
            pbase = None
            for oy0, th_a in _tiles(h, th):
                for ox0, tw_a in _tiles(w, tw):
                    for cb in range(-(-cx // c)):
                        s = em.step()
                        cnt = th_a * tw_a
                        base = em.new_use("acc", cnt)
                        eb = min(c, cx - cb * c)
                        s.loads.append(
                            _load(
                                Buffer.ACC,
                                base,
                                xa + (oy0 * w + ox0) * cx + cb * c,
                                th_a,
                                tw_a,
                                w * cx,
                                cx,
                                eb,
                            )
                        )
                        if pbase is None:  # one parameter entry serves this input
                            pbase = self._load_par(s, par)
                        self._emit_output(
                            s,
                            base,
                            cnt,
                            pbase,
                            y,
                            (-128, 127),
                            ya + (oy0 * w + ox0) * cy + ch_off + cb * c,
                            th_a,
                            tw_a,
                            w * cy,
                            cy,
                            [eb],
                        )
            ch_off += cx
        return self._stats(op, 0, 0, f"{th}x{tw} px")

    def _stats(self, op: DpuOp, macs: int, weight_bytes: int, tile: str) -> LayerStats:
        steps = self.em.layers[-1]
        counts: dict[str, int] = {}
        for s in steps:
            for ins in (*s.loads, *s.compute, *(i for group in s.stores for i in group)):
                counts[ins.op.name] = counts.get(ins.op.name, 0) + 1
        peak = dict(self.em.peak)
        return LayerStats(op.name, op.kind, op.y, macs, counts, peak, weight_bytes, tile)


def compile_subgraph(
    cfg: HwConfig, ops: list[DpuOp], tensors: dict[str, QTensor], dram: Dram
) -> tuple[list[Instr], list[LayerStats]]:
    em = Emitter(cfg)
    lc = LayerCompiler(cfg, em, dram, tensors)
    stats = []
    for op in ops:
        if isinstance(op, QConv):
            stats.append(lc.conv(op))
        elif isinstance(op, QMaxPool):
            stats.append(lc.maxpool(op))
        elif isinstance(op, QAdd):
            stats.append(lc.add(op))
        elif isinstance(op, QConcat):
            stats.append(lc.concat(op))
        elif isinstance(op, QView):
            em.begin_layer()  # no instructions: the view shares its source's bytes
            stats.append(LayerStats(op.name, op.kind, op.y, 0, {}, {}, 0, "view"))
    stream = em.finish()
    for layer, (first, count) in zip(stats, em.ranges, strict=True):
        layer.first_instr, layer.num_instrs = first, count
    return stream, stats
