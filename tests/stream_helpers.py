"""Building hand-written instruction streams in tests."""

from __future__ import annotations

from dpukit.compiler import isa
from dpukit.compiler.isa import AluOp, Engine, Opcode


def instr(op: Opcode, **fields: int) -> isa.Instr:
    """An instruction; fields not given are 0, or their ISA default (flags 0)."""
    defaults = {f.name: 0 if f.default is None else f.default for f in isa.LAYOUT[op]}
    return isa.make(op, **(defaults | fields))


def _barrier(**flags: bool) -> isa.Instr:
    """A zero-trip ALU: the compute engine passes a token on."""
    return instr(Opcode.ALU, alu_op=AluOp.MOV, n_outer=0, n_inner=0, **flags)


def serialize(body: list[isa.Instr]) -> list[isa.Instr]:
    """Chain instructions with tokens so each starts after the previous one finished."""
    out: list[isa.Instr] = []
    for ins in body:
        if out:
            prev = out[-1]
            a, b = prev.engine, ins.engine
            if a != b:
                if {a, b} == {Engine.LOAD, Engine.STORE}:  # via compute
                    if a == Engine.LOAD:
                        out[-1] = prev.with_flags(push_next=True)
                        out.append(_barrier(pop_prev=True, push_next=True))
                    else:
                        out[-1] = prev.with_flags(push_prev=True)
                        out.append(_barrier(pop_next=True, push_prev=True))
                    prev, a = out[-1], Engine.COMPUTE
                forward = b > a
                out[-1] = prev.with_flags(**{"push_next" if forward else "push_prev": True})
                ins = ins.with_flags(**{"pop_prev" if forward else "pop_next": True})
        out.append(ins)
    return out + [instr(Opcode.END)]
