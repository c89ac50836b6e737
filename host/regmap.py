"""The DPU's AXI4-Lite control/status register map, defined once.

The host's register driver (RTL simulation and PYNQ board alike), the RTL package
`hw/rtl/dpu_regs_pkg.sv` and the reference `docs/registers.md` all come from the tables
here. `python -m dpukit.host.regmap` writes the two generated files; with `--check` it
writes nothing and exits non-zero naming the files that are out of date.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass

from dpukit.generated import ROOT, md_table, write_or_check

SV_PACKAGE = ROOT / "hw" / "rtl" / "dpu_regs_pkg.sv"
MARKDOWN = ROOT / "docs" / "registers.md"
COMMAND = "python -m dpukit.host.regmap"

WIDTH = 32  # every register is one 32-bit AXI4-Lite word


class RegMapError(Exception):
    """A register or field name that is not in the map."""


class Access(enum.Enum):
    """What a bus write does to a field (reads always return the field's value)."""

    RW = "read/write"
    RO = "read-only; writes are ignored"
    W1C = "write 1 to clear; writing 0 has no effect"
    W1S = "write 1 to trigger a one-cycle pulse; reads as 0 (self-clearing)"


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    bits: int
    access: Access
    doc: str
    reset: int = 0

    @property
    def mask(self) -> int:
        return ((1 << self.bits) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: Access
    doc: str
    fields: tuple[Field, ...]
    width: int = WIDTH

    @property
    def reset(self) -> int:
        return sum((f.reset << f.lsb) for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise RegMapError(f"register {self.name} has no field {name!r}")


def _word(access: Access, doc: str) -> tuple[Field, ...]:
    return (Field("value", 0, WIDTH, access, doc),)


# 64-bit activity counters, read as <NAME>_LO then <NAME>_HI (see COUNTER_SEMANTICS).
# They count from the start of a program and are cleared by CTRL.start and CTRL.soft_reset.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("CYCLES", "clock cycles while busy"),
    ("MAC_CYCLES", "cycles in which the systolic array performs MACs"),
    *(
        (
            f"STALL_{eng}",
            f"cycles the {eng.lower()} engine is idle while its next instruction "
            "waits for a dependency token",
        )
        for eng in ("LOAD", "COMPUTE", "STORE")
    ),
    (
        "DRAM_READ_BEATS",
        "AXI read data beats of LOAD instructions (instruction fetch not included)",
    ),
    ("DRAM_WRITE_BEATS", "AXI write data beats of STORE instructions"),
    *(
        (f"{buf}_{rw}S", f"entries {verb} the {buf} buffer")
        for buf in ("INP", "WGT", "ACC", "OUT", "PAR")
        for rw, verb in (("READ", "read from"), ("WRITE", "written to"))
    ),
)
COUNTER_BASE = 0x040


class ErrorCode(enum.IntEnum):
    """ERROR_CODE values: why the core stopped. The RTL package gets `Err<Name>` constants."""

    NONE = 0
    ILLEGAL_OPCODE = 1
    ILLEGAL_FLAGS = 2
    TOKEN_OVERFLOW = 3
    DEADLOCK = 4
    FETCH_AXI = 5
    FETCH_ALIGN = 6
    LOAD_ELEM_BYTES = 7
    LOAD_RANGE = 8
    LOAD_AXI = 9
    LOAD_BUFFER = 10
    STORE_ELEM_BYTES = 11
    STORE_RANGE = 12
    STORE_AXI = 13
    STORE_BUFFER = 14
    COMPUTE_BUFFER = 15
    ILLEGAL_ALU_OP = 16


ERROR_DOCS: dict[ErrorCode, str] = {
    ErrorCode.NONE: "no error",
    ErrorCode.ILLEGAL_OPCODE: "an instruction with an opcode the ISA does not define",
    ErrorCode.ILLEGAL_FLAGS: "a token flag naming a neighbour the engine does not have",
    ErrorCode.TOKEN_OVERFLOW: "a dependency-token queue would exceed its depth",
    ErrorCode.DEADLOCK: "no engine can make progress: an instruction waits for a token "
    "that is never pushed, or the stream has no END",
    ErrorCode.FETCH_AXI: "an AXI error response while fetching instructions",
    ErrorCode.FETCH_ALIGN: "INSTR_BASE is not a multiple of the 32-byte instruction size",
    ErrorCode.LOAD_ELEM_BYTES: "a LOAD's elem_bytes exceeds its buffer's entry width",
    ErrorCode.LOAD_RANGE: "a LOAD reaches outside the data window (nothing was read)",
    ErrorCode.LOAD_AXI: "an AXI error response to a LOAD's read",
    ErrorCode.LOAD_BUFFER: "a LOAD writes an entry outside its buffer",
    ErrorCode.STORE_ELEM_BYTES: "a STORE's elem_bytes exceeds the OUT entry width",
    ErrorCode.STORE_RANGE: "a STORE reaches outside the data window (nothing was written)",
    ErrorCode.STORE_AXI: "an AXI error response to a STORE's write",
    ErrorCode.STORE_BUFFER: "a STORE reads an entry outside the OUT buffer",
    ErrorCode.COMPUTE_BUFFER: "a GEMM, POST or ALU addresses an entry outside its buffer",
    ErrorCode.ILLEGAL_ALU_OP: "an ALU instruction with an alu_op the ISA does not define",
}

COUNTER_SEMANTICS = (
    "Each 64-bit counter is a `_LO`/`_HI` pair at consecutive word addresses. Reading `_LO` "
    "returns the low 32 bits and, in the same cycle, latches the high 32 bits of that "
    "counter; reading `_HI` returns the latched value. Read `_LO` first, then `_HI`, and the "
    "pair is one consistent 64-bit snapshot, however fast the counter runs. Each counter has "
    "its own latch, so interleaved reads of different counters stay consistent; `_HI` read "
    "before any `_LO` of that counter returns 0."
)

CONTROL_REGISTERS: tuple[Register, ...] = (
    Register(
        "CTRL",
        0x000,
        Access.RW,
        "Control.",
        (
            Field(
                "start",
                0,
                1,
                Access.W1S,
                "start the program at INSTR_BASE; clears STATUS.done "
                "and the counters; ignored by the core while busy",
            ),
            Field(
                "soft_reset",
                1,
                1,
                Access.W1S,
                "reset the core (engines, queues, STATUS, "
                "counters); this register file keeps its values",
            ),
            Field("irq_enable", 2, 1, Access.RW, "drive irq_o while IRQ_STATUS.done is set"),
        ),
    ),
    Register(
        "STATUS",
        0x004,
        Access.RO,
        "Status of the core.",
        (
            Field("busy", 0, 1, Access.RO, "a program is running"),
            Field(
                "done",
                1,
                1,
                Access.RO,
                "the last program finished (or stopped on an "
                "error) since the last start or soft reset",
            ),
            Field("error", 2, 1, Access.RO, "the core stopped on an error; see ERROR_CODE"),
        ),
    ),
    Register(
        "ERROR_CODE",
        0x008,
        Access.RO,
        "Why the core stopped; valid while STATUS.error is set.",
        (Field("code", 0, 8, Access.RO, "error code from the core; 0 means no error"),),
    ),
    Register(
        "IRQ_STATUS",
        0x00C,
        Access.W1C,
        "Interrupt status; irq_o = CTRL.irq_enable & IRQ_STATUS.done.",
        (Field("done", 0, 1, Access.W1C, "set when a program finishes or stops on an error"),),
    ),
    Register(
        "INSTR_BASE_LO",
        0x010,
        Access.RW,
        "Instruction stream DRAM byte address, bits [31:0].",
        _word(Access.RW, "address bits [31:0]"),
    ),
    Register(
        "INSTR_BASE_HI",
        0x014,
        Access.RW,
        "Instruction stream DRAM byte address, bits [63:32].",
        _word(Access.RW, "address bits [63:32]"),
    ),
    Register(
        "INSTR_COUNT",
        0x018,
        Access.RW,
        "Number of instructions in the stream.",
        _word(Access.RW, "instruction count"),
    ),
    Register(
        "DATA_BASE_LO",
        0x01C,
        Access.RW,
        "Data window DRAM byte address, bits [31:0]; "
        "instruction addresses are relative to it, so programs are relocatable.",
        _word(Access.RW, "address bits [31:0]"),
    ),
    Register(
        "DATA_BASE_HI",
        0x020,
        Access.RW,
        "Data window DRAM byte address, bits [63:32].",
        _word(Access.RW, "address bits [63:32]"),
    ),
    Register(
        "DATA_LIMIT",
        0x024,
        Access.RW,
        "Data window size in bytes; an access at or "
        "beyond DATA_BASE + DATA_LIMIT stops the core with an error.",
        _word(Access.RW, "window size in bytes"),
    ),
    Register(
        "CONFIG_FINGERPRINT_LO",
        0x028,
        Access.RO,
        "Hardware config fingerprint, bits "
        "[31:0]; the host refuses a program compiled for another config.",
        _word(Access.RO, "fingerprint bits [31:0]"),
    ),
    Register(
        "CONFIG_FINGERPRINT_HI",
        0x02C,
        Access.RO,
        "Hardware config fingerprint, bits [63:32].",
        _word(Access.RO, "fingerprint bits [63:32]"),
    ),
)
COUNTER_REGISTERS: tuple[Register, ...] = tuple(
    Register(
        f"{name}_{half}",
        COUNTER_BASE + 8 * i + 4 * k,
        Access.RO,
        f"Counter: {doc}, bits {bits}.",
        _word(Access.RO, f"counter bits {bits}"),
    )
    for i, (name, doc) in enumerate(COUNTERS)
    for k, (half, bits) in enumerate((("LO", "[31:0]"), ("HI", "[63:32]")))
)
REGISTERS: tuple[Register, ...] = CONTROL_REGISTERS + COUNTER_REGISTERS

BY_NAME: dict[str, Register] = {r.name: r for r in REGISTERS}
ADDR_BITS = max(r.offset for r in REGISTERS).bit_length()


def register(name: str) -> Register:
    """The register called `name`, or a RegMapError listing the names there are."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise RegMapError(
            f"no register {name!r} in the DPU register map; known: {', '.join(BY_NAME)}"
        ) from None


def offset(name: str) -> int:
    return register(name).offset


def fingerprint_value(fingerprint: str) -> int:
    """The 64-bit CONFIG_FINGERPRINT of a config's hex `HwConfig.fingerprint` string."""
    value = int(fingerprint, 16)
    if value >> 64:
        raise RegMapError(f"fingerprint {fingerprint!r} is wider than 64 bits")
    return value


def _check() -> None:
    offsets = [r.offset for r in REGISTERS]
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 for o in offsets)
    assert len(BY_NAME) == len(REGISTERS)
    for r in REGISTERS:
        assert sum(f.mask for f in r.fields) == sum(set(f.mask for f in r.fields)), r.name
        assert all(f.lsb + f.bits <= r.width for f in r.fields), r.name
    assert COUNTER_BASE > max(r.offset for r in CONTROL_REGISTERS)
    assert set(ERROR_DOCS) == set(ErrorCode)
    assert max(ErrorCode) < 1 << register("ERROR_CODE").field("code").bits


_check()


# -- rendering -----------------------------------------------------------------------------
def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.lower().split("_"))


def _named_fields(r: Register) -> tuple[Field, ...]:
    """Fields worth a localparam: all but a single field spanning the whole register."""
    return () if len(r.fields) == 1 and r.fields[0].bits == r.width else r.fields


def _bits(f: Field) -> str:
    hi = f.lsb + f.bits - 1
    return f"[{hi}]" if hi == f.lsb else f"[{hi}:{f.lsb}]"


def render_sv_package() -> str:
    """The SystemVerilog package `dpu_regs_pkg`: offsets, reset values, field positions."""
    hexw = (ADDR_BITS + 3) // 4
    body = [
        f"localparam int unsigned RegAddrBits = {ADDR_BITS};  // covers every offset",
        f"localparam int unsigned RegDataBits = {WIDTH};",
        "",
        "// Register byte offsets and reset values: <Reg>Offset, <Reg>Reset.",
    ]
    for r in CONTROL_REGISTERS:
        name = _camel(r.name)
        body += [
            f"localparam int unsigned {name}Offset = 32'h{r.offset:0{hexw}x};",
            f"localparam logic [RegDataBits-1:0] {name}Reset = 32'h{r.reset:08x};",
        ]
    body += ["", "// Field positions: <Reg><Field>Lsb and <Reg><Field>Bits."]
    for r in REGISTERS:
        for f in _named_fields(r):
            name = _camel(r.name) + _camel(f.name)
            body += [
                f"localparam int unsigned {name}Lsb = {f.lsb};",
                f"localparam int unsigned {name}Bits = {f.bits};  // {_bits(f)}",
            ]
    body += [
        "",
        "// 64-bit counters: counter i has its _LO word at CounterBaseOffset + 8*i and its",
        "// _HI word 4 bytes above; reading _LO latches _HI. Index i = Cnt<Name>. All reset to 0.",
        f"localparam int unsigned CounterBaseOffset = 32'h{COUNTER_BASE:0{hexw}x};",
        f"localparam int unsigned NumCounters = {len(COUNTERS)};",
    ]
    body += [f"localparam int unsigned Cnt{_camel(n)} = {i};" for i, (n, _) in enumerate(COUNTERS)]
    body += ["", "// ERROR_CODE values (host/regmap.py ErrorCode)."]
    body += [
        f"localparam logic [ErrorCodeCodeBits-1:0] Err{_camel(e.name)} = 8'd{e.value};"
        for e in ErrorCode
    ]
    out = [
        f"// generated by {COMMAND}; do not edit",
        "// Source of truth: host/regmap.py. Reference: docs/registers.md.",
        "",
        "package dpu_regs_pkg;",
        "",
        "  // A map, not all of it used by each module that imports it.",
        "  /* verilator lint_off UNUSEDPARAM */",
        *(f"  {line}" if line else "" for line in body),
        "  /* verilator lint_on UNUSEDPARAM */",
        "",
        "endpackage : dpu_regs_pkg",
        "",
    ]
    return "\n".join(out)


def _reset(r: Register) -> str:
    """RO registers show core inputs or a parameter: they have no reset value of their own."""
    return "-" if r.access is Access.RO else f"0x{r.reset:08X}"


def render_markdown() -> str:
    """The register reference `docs/registers.md`."""
    intro = __doc__.strip().split("\n\n")[0].split("\n", 1)[0]
    out = [
        f"<!-- generated by {COMMAND} from host/regmap.py; do not edit -->",
        "",
        "# DPU control and status registers",
        "",
        intro,
        "",
        f"All registers are {WIDTH} bits wide at word-aligned byte offsets of the `s_axil_` "
        "slave of `dpu_regs` (`hw/rtl/dpu_regs.sv`). Byte strobes apply to writes. An access "
        "to an unmapped offset completes with SLVERR (reads return 0, writes are dropped); "
        "a write to a read-only register completes with OKAY and is ignored. Read-only "
        "registers show the core's inputs (or, for the fingerprint, a parameter), so the "
        "map lists no reset value for them.",
        "",
        "## Access types",
        "",
    ]
    out += md_table(["Access", "Meaning"], [[a.name, a.value] for a in Access])
    out += ["## Map", ""]
    out += md_table(
        ["Offset", "Name", "Access", "Reset", "Description"],
        [[f"0x{r.offset:03X}", f"`{r.name}`", r.access.name, _reset(r), r.doc] for r in REGISTERS],
    )
    out += ["## Fields", ""]
    for r in REGISTERS:
        if _named_fields(r):
            out += [f"### {r.name} (0x{r.offset:03X})", "", r.doc, ""]
            out += md_table(
                ["Bits", "Field", "Access", "Reset", "Description"],
                [[_bits(f), f"`{f.name}`", f.access.name, str(f.reset), f.doc] for f in r.fields],
            )
    out += ["Bits not listed are reserved: they read as 0 and ignore writes.", ""]
    out += ["## 64-bit counters", "", COUNTER_SEMANTICS, ""]
    out += md_table(
        ["Counter", "LO offset", "HI offset", "Counts"],
        [
            [f"`{n}`", f"0x{offset(n + '_LO'):03X}", f"0x{offset(n + '_HI'):03X}", doc]
            for n, doc in COUNTERS
        ],
    )
    out += [
        "## Error codes",
        "",
        "Values of `ERROR_CODE.code` (RTL: `Err<Name>` in dpu_regs_pkg).",
        "",
    ]
    out += md_table(
        ["Code", "Name", "Cause"], [[str(e.value), f"`{e.name}`", ERROR_DOCS[e]] for e in ErrorCode]
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    outputs = {SV_PACKAGE: render_sv_package(), MARKDOWN: render_markdown()}
    return write_or_check(outputs, COMMAND, __doc__.splitlines()[0], argv, ROOT)


if __name__ == "__main__":
    sys.exit(main())
