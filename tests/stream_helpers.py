"""Building hand-written instruction streams in tests."""

from __future__ import annotations

from dpukit.compiler import isa
from dpukit.compiler.isa import Opcode


def instr(op: Opcode, **fields: int) -> isa.Instr:
    """An instruction; fields not given are 0, or their ISA default (flags 0)."""
    defaults = {f.name: 0 if f.default is None else f.default for f in isa.LAYOUT[op]}
    return isa.make(op, **(defaults | fields))
