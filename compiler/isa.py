"""The DPU instruction set, defined once.

Everything else is generated from or goes through this module: `hw/rtl/dpu_isa_pkg.sv`
and `docs/isa.md` are written by `python -m dpukit.compiler.isa_render`, the compiler builds
`Instr` values and encodes them here, the golden model and the RTL testbenches decode here.

Every instruction is one 256-bit little-endian word. Bits [3:0] hold the opcode, bits
[7:4] the dependency-token flags, and the opcode's fields follow from bit 8 upwards in the
order listed below. The machine is decoupled access-execute (as in VTA): three engines,
LOAD (DRAM -> on-chip buffers), COMPUTE (GEMM, POST, ALU) and STORE (OUT buffer -> DRAM),
run concurrently and synchronise only through four token FIFOs:

    load --l2c--> compute --c2s--> store
    load <--c2l-- compute <--s2c-- store

A flag `pop_prev` makes the instruction wait for (and consume) a token from the engine
before it in that chain, `pop_next` from the engine after it; `push_prev`/`push_next`
send one when the instruction completes. END waits until all engines are idle.

Errors: the text of each opcode says what is an error. The first one stops the DPU: nothing
more is dispatched, the LOAD and STORE engines finish the instruction they hold (writing no
buffer entry after the error), and done is raised with the error's code in ERROR_CODE
(docs/registers.md). The dispatcher checks opcodes and token flags as the words arrive, the
engines their instructions as they take them; `golden.first_error` gives a stream's error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from dpukit.errors import IsaError

INSTR_BITS = 256
INSTR_BYTES = INSTR_BITS // 8
OPCODE_BITS = 4
FLAG_BITS = 4
FIELDS_LSB = OPCODE_BITS + FLAG_BITS
# POST uses only the low POST_MULT_BITS bits of a PAR multiplier, unsigned: v * mult is a
# 32 x 23-bit product, two DSP48 multiplies per lane (hw/rtl/dpu_post.sv).
POST_MULT_BITS = 23
# MULI uses only the low MULI_IMM_BITS bits of imm, sign-extended: s * imm is then a
# 32 x 25-bit signed product, two DSP48 slices per lane (ADDI uses all 32 bits).
MULI_IMM_BITS = 25


class Opcode(enum.IntEnum):
    """Opcode 0 is illegal on purpose: zeroed memory never decodes as a program."""

    LOAD = 1
    STORE = 2
    GEMM = 3
    POST = 4
    ALU = 5
    END = 7


class Buffer(enum.IntEnum):
    """On-chip buffers a LOAD may write. Entry widths: docs/isa.md, `HwConfig.*_entry_bytes`."""

    INP = 0  # rows int8 lanes: activations streamed into the array's rows
    WGT = 1  # rows*cols int8: one weight tile of the array
    ACC = 2  # cols int32 lanes: accumulators; LOAD sign-extends int8 into them
    PAR = 3  # cols x (int32 bias, int32 multiplier, int32 shift): requantization parameters


class AluOp(enum.IntEnum):
    """ALU operations on ACC entries, lane-wise: dst = f(dst, src, imm), int32 wrapping."""

    MOV = 0  # dst = src
    ADD = 1  # dst = dst + src
    MAX = 2  # dst = max(dst, src)
    MULI = 3  # dst = src * imm
    ADDI = 4  # dst = src + imm


class Engine(enum.IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


ENGINE_OF = {
    Opcode.LOAD: Engine.LOAD,
    Opcode.STORE: Engine.STORE,
    Opcode.GEMM: Engine.COMPUTE,
    Opcode.POST: Engine.COMPUTE,
    Opcode.ALU: Engine.COMPUTE,
    Opcode.END: None,  # a barrier for all three
}

FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


@dataclass(frozen=True)
class Field:
    name: str
    bits: int
    signed: bool = False
    doc: str = ""
    default: int | None = None  # a field with a default may be left out of `make`

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


_DMA_2D = [
    Field("dram_offset", 32, doc="byte offset of the first element from the data base register"),
    Field("y_size", 16, doc="rows to transfer"),
    Field("x_size", 16, doc="entries per row"),
    Field("y_stride", 32, doc="bytes between rows in DRAM"),
    Field("x_stride", 24, doc="bytes between entries in DRAM"),
    Field("elem_bytes", 16, doc="bytes per entry (<= entry width; the rest of the entry is 0)"),
]

_DMA_PLANES = [
    Field("z_size", 16, doc="planes of y x x entries (e.g. channel blocks)", default=1),
    Field("z_stride", 32, doc="bytes between planes in DRAM", default=0),
]

LAYOUT: dict[Opcode, list[Field]] = {
    Opcode.LOAD: [
        Field("buffer", 2, doc="destination buffer (Buffer)"),
        Field("sram_base", 16, doc="first destination entry"),
        *_DMA_2D,
        Field("pad_top", 6, doc="rows of padding entries before the data"),
        Field("pad_bottom", 6, doc="rows of padding entries after the data"),
        Field("pad_left", 6, doc="padding entries before each row"),
        Field("pad_right", 6, doc="padding entries after each row"),
        Field("pad_value", 8, signed=True, doc="value of every lane of a padding entry"),
        *_DMA_PLANES,
    ],
    Opcode.STORE: [
        Field("sram_base", 16, doc="first OUT entry read"),
        *_DMA_2D,
        *_DMA_PLANES,
    ],
    Opcode.GEMM: [
        Field("reset", 1, doc="1: acc = product; 0: acc += product"),
        Field("wgt_addr", 16, doc="WGT entry preloaded into the array"),
        Field("inp_base", 16, doc="INP entry of the first streamed activation"),
        Field("acc_base", 16, doc="ACC entry of the first result"),
        Field("n_outer", 16, doc="outer loop count"),
        Field("n_inner", 16, doc="inner loop count"),
        Field("inp_outer_stride", 16, doc="INP entries per outer step"),
        Field("inp_inner_stride", 16, doc="INP entries per inner step"),
        Field("acc_outer_stride", 16, doc="ACC entries per outer step"),
        Field("acc_inner_stride", 16, doc="ACC entries per inner step"),
    ],
    Opcode.POST: [
        Field("acc_base", 16, doc="first ACC entry read"),
        Field("out_base", 16, doc="first OUT entry written"),
        Field("count", 16, doc="entries processed"),
        Field("par_addr", 16, doc="PAR entry with per-lane bias, multiplier, shift"),
        Field("zero_point", 8, signed=True, doc="output zero point"),
        Field("clamp_lo", 8, signed=True, doc="lowest output value (ReLU: the zero point)"),
        Field("clamp_hi", 8, signed=True, doc="highest output value (ReLU6: q(6))"),
        Field(
            "blocks", 16, doc="channel blocks processed, each with the next PAR entry", default=1
        ),
        Field("acc_block_stride", 16, doc="ACC entries between blocks", default=0),
        Field("out_block_stride", 16, doc="OUT entries between blocks", default=0),
    ],
    Opcode.ALU: [
        Field("alu_op", 3, doc="AluOp"),
        Field("dst_base", 16, doc="first ACC entry written"),
        Field("src_base", 16, doc="first ACC entry read"),
        Field("n_outer", 16, doc="outer loop count"),
        Field("n_inner", 16, doc="inner loop count"),
        Field("dst_outer_stride", 16, doc="dst entries per outer step"),
        Field("dst_inner_stride", 16, doc="dst entries per inner step"),
        Field("src_outer_stride", 16, doc="src entries per outer step"),
        Field("src_inner_stride", 16, doc="src entries per inner step"),
        Field(
            "imm",
            32,
            signed=True,
            doc=f"immediate operand of ADDI, and of MULI (its low {MULI_IMM_BITS} bits)",
        ),
    ],
    Opcode.END: [],
}

for _op, _fields in LAYOUT.items():
    assert FIELDS_LSB + sum(f.bits for f in _fields) <= INSTR_BITS, _op

# What each instruction does, in prose: the one place its meaning is written down. The golden
# model implements exactly this; docs/isa.md shows it next to the field tables.
SEMANTICS: dict[Opcode, str] = {
    Opcode.LOAD: (
        "For each plane `z` in `[0, z_size)`, `y` in `[0, pad_top + y_size + pad_bottom)` and "
        "`x` in `[0, pad_left + x_size + pad_right)`, with `rows = pad_top + y_size + "
        "pad_bottom` and `cols = pad_left + x_size + pad_right`, entry "
        "`sram_base + (z*rows + y)*cols + x` of `buffer` receives, if `(y, x)` "
        "is inside the data (`pad_top <= y < pad_top + y_size` and "
        "`pad_left <= x < pad_left + x_size`), the `elem_bytes` bytes read from DRAM at "
        "`base + dram_offset + z*z_stride + (y - pad_top)*y_stride + (x - pad_left)*x_stride`, "
        "zero-filled to the entry width; otherwise `pad_value` in every lane. INP and WGT "
        "lanes are int8; into ACC each byte is sign-extended to one int32 lane; into PAR the "
        "bytes are copied raw. An `elem_bytes` wider than the buffer's entries, a DRAM byte "
        "outside `[0, limit)` of the data window (nothing is read then) or an entry outside "
        "the buffer is an error, checked in that order. (`base` and `limit` are the data "
        "window's base address and size registers.)"
    ),
    Opcode.STORE: (
        "For `z < z_size`, `y < y_size` and `x < x_size`, the first `elem_bytes` lanes (int8) "
        "of OUT entry `sram_base + (z*y_size + y)*x_size + x` are written to DRAM at "
        "`base + dram_offset + z*z_stride + y*y_stride + x*x_stride`. An `elem_bytes` wider "
        "than an OUT entry, a DRAM byte outside `[0, limit)` of the data window (nothing is "
        "written then) or an entry outside OUT is an error, checked in that order."
    ),
    Opcode.GEMM: (
        "Weight-stationary: WGT entry `wgt_addr` is held in the array as `W` (lane "
        "`r*cols + c` is `W[r][c]`). For `o < n_outer`, `i < n_inner`: "
        "`a = INP[inp_base + o*inp_outer_stride + i*inp_inner_stride]` (rows int8 lanes), "
        "`p[c] = sum_r a[r]*W[r][c]` computed exactly, and "
        "`ACC[acc_base + o*acc_outer_stride + i*acc_inner_stride][c]` becomes `p[c]` if "
        "`reset`, else `old + p[c]` wrapped to int32. An INP, WGT or ACC entry outside its "
        "buffer is an error (a GEMM of no iterations touches none)."
    ),
    Opcode.POST: (
        "For each block `b < blocks`, with `(bias, mult, shift)` from PAR entry "
        "`par_addr + b`, `a = acc_base + b*acc_block_stride` and "
        "`o = out_base + b*out_block_stride`, for `k < count` and lane `c`: "
        "`v = wrap32(ACC[a + k][c] + bias[c])` (wrapped to int32); "
        f"`m = mult[c] mod 2^{POST_MULT_BITS}` (the low {POST_MULT_BITS} bits, unsigned); "
        "`r = round(v*m / 2^shift[c])` exactly in 64 bits, to nearest with ties to even "
        "(as ONNX QuantizeLinear rounds; in hardware: floor shift, then add 1 when the "
        "remainder exceeds half, or equals half and the quotient is odd); "
        "`OUT[o + k][c] = min(max(r + zero_point, clamp_lo), clamp_hi)` in exact arithmetic "
        "(`clamp_hi` wins if `clamp_lo > clamp_hi`). "
        f"`mult` is in `[0, 2^{POST_MULT_BITS})` (only its low {POST_MULT_BITS} bits are used) "
        "and `shift` in `[0, 62]` (only its low 6 bits are used). An ACC, PAR or OUT entry "
        "outside its buffer is an error (a POST of count or blocks 0 touches none)."
    ),
    Opcode.ALU: (
        "For `o < n_outer`, `i < n_inner`: "
        "`d = dst_base + o*dst_outer_stride + i*dst_inner_stride`, "
        "`s = src_base + o*src_outer_stride + i*src_inner_stride`, and "
        "`ACC[d] = alu_op(ACC[d], ACC[s], imm)` lane-wise with int32 wrap: MOV `s`; "
        "ADD `d + s`; MAX `max(d, s)`; MULI `s*m` with `m` the low "
        f"{MULI_IMM_BITS} bits of `imm` sign-extended (`m` in `[-2^{MULI_IMM_BITS - 1}, "
        f"2^{MULI_IMM_BITS - 1})`); ADDI `s + imm`. Iterations run in "
        "order, so a reduction with dst strides 0 accumulates. An `alu_op` not listed is an "
        "error, and so is an entry outside ACC (checked after `alu_op`)."
    ),
    Opcode.END: "Waits until all engines are idle, then raises done and the interrupt.",
}

# The token flags mean the same for every opcode.
TOKEN_SEMANTICS = (
    "Before it starts, an instruction with `pop_prev` (`pop_next`) waits for and consumes one "
    "token from the FIFO from the previous (next) engine in the chain load -> compute -> "
    "store; when it completes, `push_prev` (`push_next`) pushes one token to that engine. "
    "A flag naming a neighbour the engine does not have (LOAD's `*_prev`, STORE's `*_next`) "
    "is an error; so is a token in a FIFO beyond its depth (`queue_depth` of the hardware "
    "config), and a stream that cannot reach END (a pop no push satisfies, or no END: a "
    "deadlock)."
)


@dataclass(frozen=True)
class Instr:
    """One instruction as a value: opcode, token flags and the opcode's fields by name."""

    op: Opcode
    fields: dict[str, int] = field(default_factory=dict)
    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def engine(self) -> Engine | None:
        return ENGINE_OF[self.op]

    def with_flags(self, **flags: bool) -> Instr:
        current = {f: getattr(self, f) for f in FLAGS}
        return Instr(self.op, self.fields, **(current | flags))


def make(op: Opcode, **fields: int) -> Instr:
    """Build an instruction; every field without a default must be given (flags default 0)."""
    flags = {k: bool(fields.pop(k)) for k in FLAGS if k in fields}
    for f in LAYOUT[op]:
        if f.default is not None:
            fields.setdefault(f.name, f.default)
    names = [f.name for f in LAYOUT[op]]
    missing = set(names) - fields.keys()
    extra = fields.keys() - set(names)
    if missing or extra:
        raise IsaError(f"{op.name}: missing fields {sorted(missing)}, unknown {sorted(extra)}")
    return Instr(op, {n: int(fields[n]) for n in names}, **flags)


def encode(instr: Instr) -> int:
    """Pack an instruction into a 256-bit integer, checking every field's range."""
    word = int(instr.op) | sum(
        int(getattr(instr, f)) << (OPCODE_BITS + i) for i, f in enumerate(FLAGS)
    )
    pos = FIELDS_LSB
    for f in LAYOUT[instr.op]:
        value = instr.fields[f.name]
        if not f.lo <= value <= f.hi:
            raise IsaError(f"{instr.op.name}.{f.name} = {value} outside [{f.lo}, {f.hi}]")
        word |= (value & ((1 << f.bits) - 1)) << pos
        pos += f.bits
    return word


def decode(word: int) -> Instr:
    """Unpack a 256-bit integer; an unknown opcode or non-zero unused bits are illegal."""
    code = word & ((1 << OPCODE_BITS) - 1)
    try:
        op = Opcode(code)
    except ValueError:
        raise IsaError(f"illegal opcode {code}") from None
    flags = {f: bool((word >> (OPCODE_BITS + i)) & 1) for i, f in enumerate(FLAGS)}
    values = {}
    pos = FIELDS_LSB
    for f in LAYOUT[op]:
        raw = (word >> pos) & ((1 << f.bits) - 1)
        values[f.name] = raw - (1 << f.bits) if f.signed and raw >> (f.bits - 1) else raw
        pos += f.bits
    if word >> pos:
        raise IsaError(f"{op.name}: reserved bits above bit {pos} are not zero")
    return Instr(op, values, **flags)


def to_bytes(instrs: list[Instr]) -> bytes:
    return b"".join(encode(i).to_bytes(INSTR_BYTES, "little") for i in instrs)


def from_bytes(blob: bytes) -> list[Instr]:
    if len(blob) % INSTR_BYTES:
        raise IsaError(
            f"instruction stream of {len(blob)} bytes is not a multiple of {INSTR_BYTES}"
        )
    return [
        decode(int.from_bytes(blob[i : i + INSTR_BYTES], "little"))
        for i in range(0, len(blob), INSTR_BYTES)
    ]


def decode_array(blob: bytes) -> dict[str, np.ndarray]:
    """Decode a whole stream at once into one int64 column per field name (0 where absent).

    The golden model uses this; it gives the same values as `decode`, much faster.
    """
    if len(blob) % INSTR_BYTES:
        raise IsaError(
            f"instruction stream of {len(blob)} bytes is not a multiple of {INSTR_BYTES}"
        )
    words = np.frombuffer(blob, dtype="<u8").reshape(-1, INSTR_BITS // 64)
    n = len(words)

    def bits(lo: int, width: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.uint64)
        got = 0
        while got < width:
            w, b = divmod(lo + got, 64)
            take = min(width - got, 64 - b)
            chunk = (words[:, w] >> np.uint64(b)) & np.uint64((1 << take) - 1)
            out |= chunk << np.uint64(got)
            got += take
        return out

    cols: dict[str, np.ndarray] = {"op": bits(0, OPCODE_BITS).astype(np.int64)}
    bad = ~np.isin(cols["op"], [int(o) for o in Opcode])
    if bad.any():
        i = int(np.argmax(bad))
        raise IsaError(f"instruction {i}: illegal opcode {int(cols['op'][i])}")
    for i, f in enumerate(FLAGS):
        cols[f] = bits(OPCODE_BITS + i, 1).astype(np.int64)
    for fields in LAYOUT.values():  # every field has a column, whatever the stream holds
        for f in fields:
            cols.setdefault(f.name, np.zeros(n, dtype=np.int64))
    for op, fields in LAYOUT.items():
        sel = cols["op"] == int(op)
        if not sel.any():
            continue
        pos = FIELDS_LSB
        for f in fields:
            raw = bits(pos, f.bits).astype(np.int64)
            if f.signed:
                raw = np.where(raw >> (f.bits - 1), raw - (1 << f.bits), raw)
            cols[f.name][sel] = raw[sel]
            pos += f.bits
        rest = np.zeros(n, dtype=bool)
        for w in range(INSTR_BITS // 64):
            lo = max(pos - 64 * w, 0)
            if lo < 64:
                rest |= (words[:, w] >> np.uint64(lo)) != 0 if lo else words[:, w] != 0
        if (rest & sel).any():
            i = int(np.argmax(rest & sel))
            raise IsaError(f"instruction {i}: {op.name} reserved bits above bit {pos} are not zero")
    return cols
