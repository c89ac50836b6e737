"""Render the ISA tables of `isa.py` as the RTL package and the ISA reference.

`python -m dpukit.compiler.isa_render` writes `hw/rtl/dpu_isa_pkg.sv` and `docs/isa.md`;
with `--check` it writes nothing and exits non-zero naming the files that are out of date.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterator

from dpukit.compiler import isa
from dpukit.compiler.hwconfig import available_configs, load_config
from dpukit.generated import ROOT, md_table, write_or_check

SV_PACKAGE = ROOT / "hw" / "rtl" / "dpu_isa_pkg.sv"
MARKDOWN = ROOT / "docs" / "isa.md"
COMMAND = "python -m dpukit.compiler.isa_render"

# Fields whose values are one of the ISA's enums: typed with that enum in the RTL.
# (SV type name, prefix of its UpperCamelCase value names, enum class, field name.)
_ENUMS: list[tuple[str, str, type[enum.IntEnum], str]] = [
    ("buffer_e", "Buf", isa.Buffer, "buffer"),
    ("alu_op_e", "AluOp", isa.AluOp, "alu_op"),
]

# Entry layout of each buffer; byte counts per config come from `HwConfig.<name>_entry_bytes`.
_ENTRIES: list[tuple[str, str]] = [
    ("INP", "`rows` int8 lanes: one activation vector, lane `r` feeds array row `r`."),
    (
        "WGT",
        "`rows*cols` int8 lanes: one weight tile; lane `r*cols + c` holds the weight from "
        "input lane `r` to output lane `c`.",
    ),
    ("ACC", "`cols` int32 lanes (little-endian): one accumulator per output lane."),
    ("OUT", "`cols` int8 lanes: requantized outputs, written by POST, read by STORE."),
    (
        "PAR",
        "`cols` x 3 int32 (little-endian): `bias[cols]`, then `multiplier[cols]`, then "
        "`shift[cols]`.",
    ),
]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _placed(op: isa.Opcode) -> Iterator[tuple[isa.Field, int]]:
    """The opcode's fields with their LSB positions in the instruction word, LSB first."""
    pos = isa.FIELDS_LSB
    for f in isa.LAYOUT[op]:
        yield f, pos
        pos += f.bits


def _reserved_lsb(op: isa.Opcode) -> int:
    return isa.FIELDS_LSB + sum(f.bits for f in isa.LAYOUT[op])


def _param(op: isa.Opcode, name: str) -> str:
    return _camel(op.name.lower()) + _camel(name)


def _enum_width(field_name: str) -> tuple[str, int]:
    """The width localparam and bit count of the first field named `field_name`."""
    op, f = next((op, f) for op, fs in isa.LAYOUT.items() for f in fs if f.name == field_name)
    return _param(op, f"{f.name}_bits"), f.bits


def _sv_enum(
    type_name: str, prefix: str, values: type[enum.IntEnum], width: tuple[str, int]
) -> list[str]:
    param, bits = width
    items = [f"  {prefix}{_camel(v.name.lower())} = {bits}'d{int(v)}" for v in values]
    return [f"typedef enum logic [{param}-1:0] {{", ",\n".join(items), f"}} {type_name};", ""]


def render_sv_package() -> str:
    """The SystemVerilog package `dpu_isa_pkg`: field positions, enums, one struct per opcode."""
    body = [
        f"localparam int unsigned InstrBits = {isa.INSTR_BITS};",
        f"localparam int unsigned OpcodeBits = {isa.OPCODE_BITS};",
        f"localparam int unsigned FlagBits = {isa.FLAG_BITS};",
        "localparam int unsigned FieldsLsb = OpcodeBits + FlagBits;",
        "",
        "// Field positions in the instruction word: <Op><Field>Lsb and <Op><Field>Bits.",
        "// The bits from <Op>ReservedLsb upwards must be 0.",
    ]
    for op in isa.Opcode:
        body += [f"// {op.name}"]
        prev = "FieldsLsb"
        for f, lsb in _placed(op):
            name = _param(op, f.name)
            bits = _bits(lsb + f.bits - 1, lsb)
            body += [f"localparam int unsigned {name}Lsb = {prev};"]
            body += [f"localparam int unsigned {name}Bits = {f.bits};  // {bits}"]
            prev = f"{name}Lsb + {name}Bits"
        body += [f"localparam int unsigned {_param(op, 'reserved')}Lsb = {prev};", ""]

    body += _sv_enum("opcode_e", "Op", isa.Opcode, ("OpcodeBits", isa.OPCODE_BITS))
    for type_name, prefix, values, field_name in _ENUMS:
        body += _sv_enum(type_name, prefix, values, _enum_width(field_name))
    body += [
        "// Dependency-token flags, bits [FieldsLsb-1:OpcodeBits] of every instruction.",
        "typedef struct packed {",
        *(f"  logic {name};" for name in reversed(isa.FLAGS)),
        "} flags_t;",
        "",
        "// The common head of every instruction; cast the word to <op>_instr_t for its fields.",
        "typedef struct packed {",
        "  logic [InstrBits-FieldsLsb-1:0] fields;",
        "  flags_t flags;",
        "  opcode_e opcode;",
        "} instr_t;",
        "",
    ]
    enum_of = {field_name: type_name for type_name, _, _, field_name in _ENUMS}
    body += ["// One struct per opcode: <op>_instr_t'(word) decodes an instruction word."]
    for op in isa.Opcode:
        # Packed structs put the first member at the MSBs: list the fields MSB first.
        members = []
        if _reserved_lsb(op) < isa.INSTR_BITS:
            members.append(f"logic [InstrBits-{_param(op, 'reserved')}Lsb-1:0] reserved;")
        for f, _ in reversed(list(_placed(op))):
            if f.name in enum_of:
                members.append(f"{enum_of[f.name]} {f.name};")
            else:
                sign = " signed" if f.signed else ""
                members.append(f"logic{sign} [{_param(op, f.name)}Bits-1:0] {f.name};")
        members += ["flags_t flags;", "opcode_e opcode;"]
        body += ["typedef struct packed {", *(f"  {m}" for m in members)]
        body += [f"}} {op.name.lower()}_instr_t;", ""]

    out = [
        f"// generated by {COMMAND}; do not edit",
        "// Source of truth: compiler/isa.py. Reference: docs/isa.md.",
        "",
        "package dpu_isa_pkg;",
        "",
        *(f"  {line}" if line else "" for text in body for line in text.split("\n")),
        "endpackage : dpu_isa_pkg",
        "",
    ]
    return "\n".join(out)


def _bits(hi: int, lo: int) -> str:
    return f"[{hi}]" if hi == lo else f"[{hi}:{lo}]"


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} B"


def render_markdown() -> str:
    """The ISA reference `docs/isa.md`."""
    intro = isa.__doc__.strip().split("\n", 1)[1]
    out = [
        f"<!-- generated by {COMMAND} from compiler/isa.py; do not edit -->",
        "",
        "# DPU instruction set",
        "",
        intro.strip(),
        "",
        "## Instruction word",
        "",
    ]
    flag_bits = [isa.OPCODE_BITS + i for i in range(len(isa.FLAGS))]
    word = [
        [_bits(isa.OPCODE_BITS - 1, 0), "`opcode`", "see below; 0 and unlisted values are illegal"],
        *([_bits(b, b), f"`{f}`", "token flag"] for b, f in zip(flag_bits, isa.FLAGS, strict=True)),
        [
            _bits(isa.INSTR_BITS - 1, isa.FIELDS_LSB),
            "fields",
            "the opcode's fields, LSB first; bits above the last are reserved and must be 0",
        ],
    ]
    out += md_table(["Bits", "Name", "Contents"], word)
    out += ["**Token flags.** " + isa.TOKEN_SEMANTICS, ""]
    engines = {op: "all" if e is None else e.name.lower() for op, e in isa.ENGINE_OF.items()}
    out += md_table(
        ["Opcode", "Value", "Engine"],
        [[op.name, str(int(op)), engines[op]] for op in isa.Opcode],
    )
    for type_name, _, values, field_name in _ENUMS:
        out += [f"Values of `{field_name}` ({values.__name__}, `{type_name}` in the RTL):", ""]
        out += md_table(["Name", "Value"], [[v.name, str(int(v))] for v in values])
    for op in isa.Opcode:
        out += [f"## {op.name} (opcode {int(op)}, engine: {engines[op]})", ""]
        out += [isa.SEMANTICS[op], ""]
        rows = [
            [
                _bits(lsb + f.bits - 1, lsb),
                f"`{f.name}`",
                str(f.bits),
                "yes" if f.signed else "no",
                f.doc,
            ]
            for f, lsb in _placed(op)
        ]
        if _reserved_lsb(op) < isa.INSTR_BITS:
            rows.append(
                [
                    _bits(isa.INSTR_BITS - 1, _reserved_lsb(op)),
                    "reserved",
                    str(isa.INSTR_BITS - _reserved_lsb(op)),
                    "",
                    "must be 0",
                ]
            )
        out += md_table(["Bits", "Field", "Width", "Signed", "Description"], rows)
    out += ["## Buffer entries", "", "An entry's width follows from the array shape:", ""]
    out += md_table(["Buffer", "Entry"], [[name, text] for name, text in _ENTRIES])
    out += [
        "## Shipped hardware configs",
        "",
        "From `hw/configs/*.toml`; entries x entry bytes:",
        "",
    ]
    rows = []
    for name in available_configs():
        cfg = load_config(name)
        cells = [f"`{name}`", f"{cfg.rows} x {cfg.cols}"]
        for buf, _ in _ENTRIES:
            entries = getattr(cfg, f"{buf.lower()}_entries")
            entry_bytes = getattr(cfg, f"{buf.lower()}_entry_bytes")
            cells.append(f"{entries} x {entry_bytes} B = {_size(entries * entry_bytes)}")
        cells.append(f"{cfg.axi_data_bits} bit")
        rows.append(cells)
    out += md_table(["Config", "Array", *(b for b, _ in _ENTRIES), "Bus"], rows)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    outputs = {SV_PACKAGE: render_sv_package(), MARKDOWN: render_markdown()}
    return write_or_check(outputs, COMMAND, __doc__.splitlines()[0], argv, ROOT)


if __name__ == "__main__":
    sys.exit(main())
