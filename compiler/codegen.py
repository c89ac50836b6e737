"""Code generation: tiling, scheduling and instruction emission for one DPU subgraph.

Every layer runs as a sequence of *steps*. A step loads what it needs (LOAD engine),
computes (COMPUTE engine) and, when an output tile is complete, requantizes it into OUT and
stores it (STORE engine). Each on-chip buffer is split into two halves; every new use of a
buffer (an input tile, a weight chunk, an accumulation, an output tile) takes the other half,
so step s+1 loads while step s computes. The tokens that make this safe:

  step s loads:    pop c2l (if s >= 2: compute of step s-2 is done) ... push l2c
  step s compute:  pop l2c ... push c2l (if step s+2 exists)
  output tile k:   POST pops s2c (if k >= 2: store of tile k-2 is done), pushes c2s;
                   its STOREs pop c2s ... push s2c (if tile k+2 exists)

A buffer use spans consecutive steps, and two uses apart alternate halves, so the use
before the previous one has finished by s-2. Between layers a one-cycle barrier (a
zero-trip ALU) waits for the last store (s2c) and releases the next layer's first load
(c2l): the next layer reads what this one stored. `check.py` proves all of it per program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dpukit.compiler import isa
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.ir import DpuOp, QAdd, QConcat, QConv, QMaxPool, QTensor, QView
from dpukit.compiler.isa import AluOp, Buffer, Instr, Opcode
from dpukit.errors import CompileError

ALIGN = 64


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
        top = 0
        for name, t in tensors.items():
            if name not in views:
                self.tensors[name] = top
                top += t.nbytes + (-t.nbytes % ALIGN)
        for view, src in views.items():
            while src in views:
                src = views[src]
            self.tensors[view] = self.tensors[src]
        self.const_base = top

    def add_const(self, data: bytes) -> int:
        self.const.extend(b"\0" * (-len(self.const) % ALIGN))
        off = self.const_base + len(self.const)
        self.const.extend(data)
        return off

    @property
    def size(self) -> int:
        return self.const_base + len(self.const)


@dataclass
class _Step:
    loads: list[Instr] = field(default_factory=list)
    compute: list[Instr] = field(default_factory=list)
    stores: list[list[Instr]] = field(default_factory=list)  # one group per POST, in order


@dataclass
class LayerStats:
    name: str
    kind: str
    macs: int  # the layer's own multiply-accumulates (what an ideal machine must do)
    instructions: dict[str, int]
    buffer_use: dict[str, int]  # most entries of one half used, per buffer
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

    def step(self) -> _Step:
        s = _Step()
        self.layers[-1].append(s)
        return s

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
            for si, s in enumerate(steps):
                if not s.loads or not s.compute:
                    raise CompileError("internal: a step without loads or compute")
                s.loads[0] = s.loads[0].with_flags(pop_next=si >= 2 or (si == 0 and barrier))
                s.loads[-1] = s.loads[-1].with_flags(push_next=True)
                s.compute[0] = s.compute[0].with_flags(pop_prev=True)
                s.compute[-1] = s.compute[-1].with_flags(push_prev=si + 2 < n)
                for ci, ins in enumerate(s.compute):
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
            # pipelining: loads of step s+1 go before compute of step s
            stream += steps[0].loads
            for si, s in enumerate(steps):
                if si + 1 < n:
                    stream += steps[si + 1].loads
                stream += s.compute
                stream += [ins for group in s.stores for ins in group]
            self.ranges[-1] = (first, len(stream) - first)
        stream.append(isa.make(Opcode.END))
        return stream


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


class LayerCompiler:
    """Lowers each IR op to steps."""

    def __init__(self, cfg: HwConfig, em: Emitter, dram: Dram, tensors: dict[str, QTensor]):
        self.cfg, self.em, self.dram, self.t = cfg, em, dram, tensors

    def addr(self, name: str) -> int:
        return self.dram.tensors[name]

    # -- convolution-like layers on the systolic array ---------------------------------
    def conv_consts(self, op: QConv) -> dict:
        """Pack weight tiles and requantization parameters into the constant segment."""
        cfg = self.cfg
        r, c = cfg.rows, cfg.cols
        x, y = self.t[op.x], self.t[op.y]
        ci, co = x.hwc[2], y.hwc[2]
        kh, kw = op.kernel
        g = op.groups
        cig, cog = ci // g, co // g
        n_ci, n_co = -(-ci // r), -(-co // c)
        dense = np.zeros((n_co * c, n_ci * r, kh, kw), np.int8)
        for gi in range(g):
            dense[gi * cog : (gi + 1) * cog, gi * cig : (gi + 1) * cig] = op.weight[
                gi * cog : (gi + 1) * cog
            ]
        # tiles[j, i, ky, kx] is an R x C matrix: [input lane, output lane]
        tiles = dense.reshape(n_co, c, n_ci, r, kh, kw).transpose(0, 2, 4, 5, 3, 1)
        needed = [[i for i in range(n_ci) if tiles[j, i].any()] or [0] for j in range(n_co)]
        terms = [
            [(i, ky, kx) for i in needed[j] for ky in range(kh) for kx in range(kw)]
            for j in range(n_co)
        ]
        entries = []
        for j in range(n_co):
            sl = slice(j * c, min((j + 1) * c, co))
            pairs = [requant_params(float(m)) for m in op.multiplier[sl]]
            mults, shifts = [p[0] for p in pairs], [p[1] for p in pairs]
            entries.append(_par_entry(cfg, op.bias[sl], mults, shifts))
        par0 = self.dram.add_const(b"".join(entries))  # entry j at par0 + j*entry bytes
        par = [par0 + j * cfg.par_entry_bytes for j in range(n_co)]
        return {
            "tiles": tiles,
            "terms": terms,
            "par": par,
            "n_co": n_co,
            "weight_bytes": sum(len(t) for t in terms) * r * c,
        }

    def conv(self, op: QConv) -> LayerStats:
        cfg, em = self.cfg, self.em
        r, c = cfg.rows, cfg.cols
        x, y = self.t[op.x], self.t[op.y]
        hi_, wi_, ci = x.hwc
        ho, wo, co = y.hwc
        kh, kw = op.kernel
        sh, sw = op.stride
        dh, dw = op.dilation
        pt, pl, _, _ = op.pads
        k = self.conv_consts(op)
        terms, n_co = k["terms"], k["n_co"]
        th, tw, max_blocks, krc = self._conv_tile(op, terms, x, y)
        # Split each co block's terms into chunks: few enough weight tiles for half of WGT,
        # few enough distinct input blocks for half of INP, and (when the input window is
        # too tall) kernel rows in groups of krc, each group a chunk of its own.
        chunks_of = []
        for j in range(n_co):
            ordered = sorted(terms[j], key=lambda t: (t[1] // krc, t[0], t[1], t[2]))
            chunks, cur, blocks = [], [], []
            for t in ordered:
                if cur and (
                    len(cur) == em.half["wgt"]
                    or (t[0] not in blocks and len(blocks) == max_blocks)
                    or t[1] // krc != cur[-1][1] // krc
                ):
                    chunks.append(cur)
                    cur, blocks = [], []
                cur.append(t)
                if t[0] not in blocks:
                    blocks.append(t[0])
            chunks.append(cur)
            chunks_of.append(chunks)
        # weights, packed per (co block, chunk) in term order
        wofs = {}
        for j in range(n_co):
            for q, chunk in enumerate(chunks_of[j]):
                data = np.stack([k["tiles"][j, i, ky, kx] for i, ky, kx in chunk])
                wofs[j, q] = self.dram.add_const(data.tobytes())
        xa, ya = self.addr(op.x), self.addr(op.y)
        em.begin_layer()
        last_inp = None
        inp_base = 0
        for oy0, th_a in _tiles(ho, th):
            for ox0, tw_a in _tiles(wo, tw):
                t = th_a * tw_a
                win = (tw_a - 1) * sw + (kw - 1) * dw + 1
                ix = ox0 * sw - pl
                vx0, xs, pad_l, pad_r = _window(ix, win, wi_)
                # Output channel blocks whose accumulators fit half of ACC together share
                # each input chunk: one INP load serves all of them.
                group = max(1, min(n_co, em.half["acc"] // t, em.half["out"] // t, em.half["par"]))
                for j0 in range(0, n_co, group):
                    members = range(j0, min(n_co, j0 + group))
                    acc_base = em.new_use("acc", t * len(members))
                    par_base = None
                    for q in range(max(len(chunks_of[j]) for j in members)):
                        for jl, j in enumerate(members):
                            if q >= len(chunks_of[j]):
                                continue
                            chunk = chunks_of[j][q]
                            s = em.step()
                            if par_base is None:  # the group's requantization parameters
                                par_base = self._load_par(s, k["par"][j0], len(members))
                            blocks = list(dict.fromkeys(term[0] for term in chunk))
                            ky0 = min(term[1] for term in chunk)
                            ky1 = max(term[1] for term in chunk)
                            # input rows this chunk's kernel rows meet, padding included
                            hin = (th_a - 1) * sh + (ky1 - ky0) * dh + 1
                            iy = oy0 * sh - pt + ky0 * dh
                            vy0, ys, pad_t, pad_b = _window(iy, hin, hi_)
                            pads = (pad_t, pad_l, pad_b, pad_r)
                            key = (oy0, ox0, tuple(blocks), ky0, ky1)
                            if key != last_inp:
                                inp_base = em.new_use("inp", len(blocks) * hin * win)
                                self._load_inp(
                                    s,
                                    inp_base,
                                    blocks,
                                    hin * win,
                                    xa + (vy0 * wi_ + vx0) * ci,
                                    ys,
                                    xs,
                                    wi_ * ci,
                                    ci,
                                    pads,
                                    x.zero_point,
                                )
                                last_inp = key
                            wbase = em.new_use("wgt", len(chunk))
                            s.loads.append(
                                _load(
                                    Buffer.WGT,
                                    wbase,
                                    wofs[j, q],
                                    1,
                                    len(chunk),
                                    len(chunk) * r * c,
                                    r * c,
                                    r * c,
                                )
                            )
                            acc = acc_base + jl * t
                            for ti, (i, ky, kx) in enumerate(chunk):
                                s.compute.append(
                                    isa.make(
                                        Opcode.GEMM,
                                        reset=int(q == 0 and ti == 0),
                                        wgt_addr=wbase + ti,
                                        inp_base=inp_base
                                        + blocks.index(i) * hin * win
                                        + (ky - ky0) * dh * win
                                        + kx * dw,
                                        acc_base=acc,
                                        n_outer=th_a,
                                        n_inner=tw_a,
                                        inp_outer_stride=sh * win,
                                        inp_inner_stride=sw,
                                        acc_outer_stride=tw_a,
                                        acc_inner_stride=1,
                                    )
                                )
                    # every accumulation of the group is complete: requantize and store
                    self._emit_output(
                        s,
                        acc_base,
                        t,
                        par_base,
                        y,
                        op.clamp,
                        ya + (oy0 * wo + ox0) * co + j0 * c,
                        th_a,
                        tw_a,
                        wo * co,
                        co,
                        [min(c, co - j * c) for j in members],
                    )
        macs = ho * wo * co * kh * kw * (ci // op.groups)
        rows = "" if krc == kh else f", {krc} kernel rows"
        tile = f"{th}x{tw} px, {max_blocks} in-blocks{rows}"
        return self._stats(op, macs, k["weight_bytes"], tile)

    def _load_par(self, s: _Step, dram: int, count: int = 1) -> int:
        """Load `count` consecutive PAR entries in this step; returns the first's address."""
        base = self.em.new_use("par", count)
        n = self.cfg.par_entry_bytes
        s.loads.append(_load(Buffer.PAR, base, dram, 1, count, count * n, n, n))
        return base

    def _load_inp(self, s, base, blocks, plane, src, ys, xs, ystride, ci, pads, zp) -> None:
        """INP loads of a tile: one per run of consecutive, equally wide channel blocks."""
        r = self.cfg.rows
        first = 0
        for k in range(1, len(blocks) + 1):
            same_run = (
                k < len(blocks)
                and blocks[k] == blocks[k - 1] + 1
                and min(r, ci - blocks[k] * r) == min(r, ci - blocks[first] * r)
            )
            if not same_run:
                b = blocks[first]
                s.loads.append(
                    _load(
                        Buffer.INP,
                        base + first * plane,
                        src + b * r,
                        ys,
                        xs,
                        ystride,
                        ci,
                        min(r, ci - b * r),
                        pads,
                        zp,
                        planes=k - first,
                        plane_stride=r,
                    )
                )
                first = k

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
        stores, first = [], 0
        for b in range(1, len(widths) + 1):  # one STORE per run of equally wide blocks
            if b == len(widths) or widths[b] != widths[first]:
                stores.append(
                    _store(
                        out + first * count,
                        dram + first * self.cfg.cols,
                        ys,
                        xs,
                        ystride,
                        xstride,
                        widths[first],
                        planes=b - first,
                        plane_stride=self.cfg.cols,
                    )
                )
                first = b
        s.stores.append(stores)

    def _conv_tile(self, op: QConv, terms, x: QTensor, y: QTensor) -> tuple[int, int, int, int]:
        """Pick (tile rows, tile cols, input blocks per chunk, kernel rows per chunk).

        The tiling with the fewest modeled cycles; kernel rows are split over chunks only
        when not even one output row's whole input window fits half of INP.
        """
        cfg, half = self.cfg, self.em.half
        ho, wo, _ = y.hwc
        kh, kw = op.kernel
        sh, sw = op.stride
        dh, dw = op.dilation
        most_blocks = max(len({t[0] for t in ts}) for ts in terms)
        widths = sorted({-(-wo // d) for d in range(1, wo + 1)}, reverse=True)[:24]
        if widths[-1] != 1:
            widths.append(1)
        for krc in range(kh, 0, -1):
            best = None
            for tw in widths:
                win = (tw - 1) * sw + (kw - 1) * dw + 1
                blocks_opts = sorted(
                    {most_blocks, *[max(1, most_blocks >> s) for s in range(1, 8)]}, reverse=True
                )
                for mb in blocks_opts:
                    th = min(ho, min(half["acc"], half["out"]) // tw)
                    while th > 0 and mb * ((th - 1) * sh + (krc - 1) * dh + 1) * win > half["inp"]:
                        th -= 1
                    if th < 1:
                        continue
                    cost = self._conv_cost(op, terms, x, th, tw, mb) * -(-kh // krc)
                    if best is None or cost < best[0]:
                        best = (cost, th, tw, mb, krc)
            if best is not None:
                return best[1:]
        raise CompileError(
            f"layer '{op.name}': one kernel row of one output pixel's input window "
            f"({kw} wide, dilation {dw}) does not fit the INP buffer of {cfg.name}"
        )

    def _conv_cost(self, op, terms, x, th, tw, mb) -> float:
        """Modeled cycles of a tiling: compute and DMA overlap; each step pays some latency."""
        cfg = self.cfg
        ho, wo, _ = self.t[op.y].hwc
        n_tiles = -(-ho // th) * -(-wo // tw)
        t = th * tw
        gemms = sum(len(ts) for ts in terms)
        compute = gemms * (2 * cfg.rows + cfg.cols - 2 + t)
        blocks = max(len({q[0] for q in ts}) for ts in terms)
        chunks = -(-blocks // mb)
        groups = -(-len(terms) // max(1, min(len(terms), self.em.half["acc"] // t)))
        shared = _same(terms)  # dense: co blocks of a group share each INP chunk
        inp_loads = (1 if chunks == 1 else groups * chunks) if shared else len(terms) * chunks
        hin = (th - 1) * op.stride[0] + (op.kernel[0] - 1) * op.dilation[0] + 1
        win = (tw - 1) * op.stride[1] + (op.kernel[1] - 1) * op.dilation[1] + 1
        inp_bytes = inp_loads * min(mb, blocks) * hin * win * cfg.rows
        dma = (inp_bytes + gemms * cfg.rows * cfg.cols) / cfg.bus_bytes
        steps = len(terms) * chunks
        return n_tiles * (max(compute, dma) + steps * cfg.dram_latency_cycles * 0.5)

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
        return LayerStats(op.name, op.kind, macs, counts, dict(self.em.peak), weight_bytes, tile)


def _same(terms) -> bool:
    first = {t[0] for t in terms[0]}
    return all({t[0] for t in ts} == first for ts in terms)


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
            stats.append(LayerStats(op.name, op.kind, 0, {}, {}, 0, "view"))
    stream = em.finish()
    for layer, (first, count) in zip(stats, em.ranges, strict=True):
        layer.first_instr, layer.num_instrs = first, count
    return stream, stats
