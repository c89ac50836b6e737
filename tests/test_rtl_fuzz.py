"""Differential fuzzing of the RTL DPU against the golden model (hypothesis).

Valid programs: random instructions of every opcode with random fields (strides of 0,
padding, partial entries, accumulate/reset, repeated ACC addresses, every ALU op, extreme
requantization parameters loaded from random DRAM), chained by dependency tokens so that
each instruction starts after the previous one (a valid, hazard-free program: the golden
model's checker must accept it, or hypothesis discards it). Golden and RTL run the same
stream on the same random DRAM: the whole DRAM afterwards and the activity counters agree.

Error streams: such a program, free of errors, with one fault injected (an illegal opcode
or token flag, a random address, size or width field, a DRAM access at the window's edge, a
pop with no push, a push dropped, more tokens than a FIFO holds, the END cut off) goes to
the RTL with the checking pass bypassed. The RTL reports the golden model's first error
(`golden.first_error`, NONE when the fault turned out harmless), always signals done, and
writes nothing outside the data window. Every directed case of every error code, and the
recovery after it: tests/test_rtl_errors.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stream_helpers import instr, serialize

from dpukit.compiler import isa
from dpukit.compiler.golden import GoldenDPU, first_error
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Buffer, Engine, Opcode
from dpukit.errors import DpuKitError, ExecutionError
from dpukit.host.board_backend import rtl_dpu
from dpukit.host.regmap import ErrorCode
from dpukit.sim.rtl_harness import Run, run_programs

CFG = load_config("sim-small")
DRAM_BYTES = 4096
ENTRIES = {
    Buffer.INP: CFG.inp_entries,
    Buffer.WGT: CFG.wgt_entries,
    Buffer.ACC: CFG.acc_entries,
    Buffer.PAR: CFG.par_entries,
}
LANES = {
    Buffer.INP: CFG.inp_entry_bytes,
    Buffer.WGT: CFG.wgt_entry_bytes,
    Buffer.ACC: CFG.cols,
    Buffer.PAR: CFG.par_entry_bytes,
}
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@st.composite
def loads(draw) -> isa.Instr:
    buf = draw(st.sampled_from(list(Buffer)))
    z, y, x = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    eb = draw(st.integers(0, LANES[buf]))
    pads = [draw(st.integers(0, 2)) for _ in range(4)] if buf != Buffer.WGT else [0] * 4
    xs = draw(st.sampled_from([eb, eb + draw(st.integers(1, 9))]))
    ys = draw(st.sampled_from([xs * x, xs * x + draw(st.integers(1, 40))]))
    zs = ys * y + draw(st.integers(0, 64))
    entries = z * (y + pads[0] + pads[1]) * (x + pads[2] + pads[3])
    return instr(
        Opcode.LOAD,
        buffer=buf,
        sram_base=draw(st.integers(0, max(0, ENTRIES[buf] - entries))),
        dram_offset=draw(st.integers(0, 1024)),
        z_size=z,
        z_stride=zs,
        y_size=y,
        x_size=x,
        y_stride=ys,
        x_stride=xs,
        elem_bytes=eb,
        pad_top=pads[0],
        pad_bottom=pads[1],
        pad_left=pads[2],
        pad_right=pads[3],
        pad_value=draw(st.integers(-128, 127)),
    )


@st.composite
def stores(draw) -> isa.Instr:
    z, y, x = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    eb = draw(st.integers(0, CFG.out_entry_bytes))
    xs = eb + draw(st.integers(0, 5))
    ys = xs * x + draw(st.integers(0, 20))
    return instr(
        Opcode.STORE,
        sram_base=draw(st.integers(0, CFG.out_entries - z * y * x)),
        dram_offset=draw(st.integers(2048, 3000)),
        z_size=z,
        z_stride=ys * y + draw(st.integers(0, 30)),
        y_size=y,
        x_size=x,
        y_stride=ys,
        x_stride=xs,
        elem_bytes=eb,
    )


def _loop(draw, entries: int, prefix: str) -> dict[str, int]:
    """Base and strides of a 2-level loop that stays inside `entries` (strides may be 0)."""
    no, ni = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    so, si = draw(st.integers(0, 6)), draw(st.integers(0, 2))
    span = max(no - 1, 0) * so + max(ni - 1, 0) * si
    base = draw(st.integers(0, max(0, entries - 1 - span)))
    return {
        "n_outer": no,
        "n_inner": ni,
        f"{prefix}_base": base,
        f"{prefix}_outer_stride": so,
        f"{prefix}_inner_stride": si,
    }


@st.composite
def gemms(draw) -> isa.Instr:
    f = _loop(draw, CFG.acc_entries, "acc")
    span = max(f["n_outer"] - 1, 0) * 7 + max(f["n_inner"] - 1, 0) * 3
    return instr(
        Opcode.GEMM,
        **f,
        reset=draw(st.integers(0, 1)),
        wgt_addr=draw(st.integers(0, CFG.wgt_entries - 1)),
        inp_base=draw(st.integers(0, CFG.inp_entries - 1 - span)),
        inp_outer_stride=draw(st.integers(0, 7)),
        inp_inner_stride=draw(st.integers(0, 3)),
    )


@st.composite
def posts(draw) -> isa.Instr:
    blocks, count = draw(st.integers(1, 3)), draw(st.integers(0, 5))
    return instr(
        Opcode.POST,
        acc_base=draw(st.integers(0, CFG.acc_entries - 40)),
        out_base=draw(st.integers(0, CFG.out_entries - 40)),
        count=count,
        blocks=blocks,
        acc_block_stride=draw(st.integers(0, 8)),
        out_block_stride=draw(st.integers(0, 8)),
        par_addr=draw(st.integers(0, CFG.par_entries - blocks)),
        zero_point=draw(st.integers(-128, 127)),
        clamp_lo=draw(st.integers(-128, 127)),
        clamp_hi=draw(st.integers(-128, 127)),
    )


@st.composite
def alus(draw) -> isa.Instr:
    f = _loop(draw, CFG.acc_entries, "dst")
    span = max(f["n_outer"] - 1, 0) * 6 + max(f["n_inner"] - 1, 0) * 2
    return instr(
        Opcode.ALU,
        **f,
        alu_op=draw(st.sampled_from(list(AluOp))),
        src_base=draw(st.integers(0, CFG.acc_entries - 1 - span)),
        src_outer_stride=draw(st.integers(0, 6)),
        src_inner_stride=draw(st.integers(0, 2)),
        imm=draw(st.integers(-(2**31), 2**31 - 1)),
    )


programs = st.lists(
    st.one_of(loads(), loads(), gemms(), posts(), alus(), stores()), min_size=1, max_size=12
)


def _dram(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, DRAM_BYTES, dtype=np.uint8)


@FUZZ
@given(body=programs, seed=st.integers(0, 2**32 - 1))
def test_valid_programs_match_golden(body: list[isa.Instr], seed: int) -> None:
    stream = isa.to_bytes(serialize(body))
    golden = GoldenDPU(CFG, merge_gemms=False)
    try:
        golden.prepare(stream, DRAM_BYTES)
    except ExecutionError:
        assume(False)  # the generator made something the checker rejects
    want, got = _dram(seed), _dram(seed)
    # Both sides start with zeroed buffers: the golden model's are, and every virtual board is
    # a fresh Verilator model (--x-initial fast zero-initialises its memories).
    act = golden.run(stream, want)
    rtl = rtl_dpu(CFG, stall_pct=10, seed=seed % 1000)
    try:
        rtl_act = rtl.run(stream, got)
    finally:
        rtl.close()
    np.testing.assert_array_equal(got, want)
    assert rtl_act.buffer_reads == act.buffer_reads
    assert rtl_act.buffer_writes == act.buffer_writes
    assert rtl_act.mac_cycles == act.mac_cycles
    assert (rtl_act.dram_read_beats, rtl_act.dram_write_beats) == (
        act.dram_read_beats,
        act.dram_write_beats,
    )


# -- error streams ------------------------------------------------------------------------
def _fault_fields(ins: isa.Instr) -> dict[str, int]:
    """Fields a fault may change, each with the bound its values are checked against (an
    entry count, the window's size, an entry's width): addresses, strides, widths, the
    buffer and the ALU op; not loop counts or sizes, so that no fault makes an instruction
    run for millions of cycles."""
    if ins.op in (Opcode.LOAD, Opcode.STORE):
        load = ins.op == Opcode.LOAD
        strides = {"z_stride": DRAM_BYTES // 2, "y_stride": DRAM_BYTES // 4, "x_stride": 256}
        return (
            strides
            | {
                "sram_base": ENTRIES[ins.buffer] if load else CFG.out_entries,
                "dram_offset": DRAM_BYTES,
                "elem_bytes": LANES[ins.buffer] if load else CFG.out_entry_bytes,
            }
            | ({"buffer": len(Buffer)} if load else {})
        )
    if ins.op == Opcode.GEMM:
        loops = ("inp", CFG.inp_entries), ("acc", CFG.acc_entries)
        return {"wgt_addr": CFG.wgt_entries} | _loop_fields(loops)
    if ins.op == Opcode.POST:
        blocks = {
            "acc_block_stride": CFG.acc_entries // 4,
            "out_block_stride": CFG.out_entries // 4,
        }
        return blocks | {
            "acc_base": CFG.acc_entries,
            "out_base": CFG.out_entries,
            "par_addr": CFG.par_entries,
        }
    loops = ("dst", CFG.acc_entries), ("src", CFG.acc_entries)
    return {"alu_op": len(AluOp)} | _loop_fields(loops)


def _loop_fields(loops) -> dict[str, int]:
    """Base and strides of 2-level loops over buffers of the given sizes (at most 3 outer
    and 4 inner iterations: programs() draws no more)."""
    return {
        name: bound
        for prefix, size in loops
        for name, bound in (
            (f"{prefix}_base", size),
            (f"{prefix}_outer_stride", size // 3),
            (f"{prefix}_inner_stride", size // 4),
        )
    }


ILLEGAL_OPCODES = sorted(set(range(1 << isa.OPCODE_BITS)) - {int(o) for o in Opcode})
# the flags each engine may carry (its neighbours in load -> compute -> store)
LEGAL_POPS = {Engine.LOAD: ("pop_next",), Engine.COMPUTE: ("pop_prev", "pop_next"),
              Engine.STORE: ("pop_prev",)}  # fmt: skip
NO_ENTRIES = instr(Opcode.LOAD, buffer=Buffer.INP, z_size=1, y_size=0, x_size=0)


def _field_fault(draw, ins: isa.Instr) -> isa.Instr:
    """One field set to a value near its bound, or anywhere in its range."""
    bounds = _fault_fields(ins)
    name = draw(st.sampled_from(sorted(bounds)))
    f = next(f for f in isa.LAYOUT[ins.op] if f.name == name)
    near = st.integers(bounds[name] - 8, bounds[name] + 8).map(lambda v: min(max(v, f.lo), f.hi))
    return _with(ins, **{name: draw(st.one_of(near, st.integers(f.lo, f.hi)))})


def _with(ins: isa.Instr, **fields: int) -> isa.Instr:
    flags = {f: getattr(ins, f) for f in isa.FLAGS}
    return isa.Instr(ins.op, ins.fields | fields, **flags)


FAULTS = ("opcode", "flags", "field", "window", "pop", "push", "overflow", "cut")


@st.composite
def faulty_streams(draw, kind: str) -> bytes:
    """An error-free random program with one fault of `kind` injected, as raw words. The
    program is chained by tokens, or has none: then its engines run side by side, and other
    instructions are in flight when the fault is met."""
    body = draw(programs)
    body = serialize(body) if draw(st.booleans()) else [*body, instr(Opcode.END)]
    assume(first_error(CFG, isa.to_bytes(body), DRAM_BYTES).code == ErrorCode.NONE)
    k = draw(st.integers(0, len(body) - 2))  # an instruction, not the END
    ins = body[k]
    dma = [i for i, b in enumerate(body) if b.op in (Opcode.LOAD, Opcode.STORE)]
    words = [isa.encode(b) for b in body]
    if kind == "opcode":
        words[k] = words[k] & ~((1 << isa.OPCODE_BITS) - 1) | draw(st.sampled_from(ILLEGAL_OPCODES))
    elif kind == "flags":  # a flag naming a neighbour the engine does not have
        if ins.engine == Engine.COMPUTE:
            ins = NO_ENTRIES
            words.insert(k, 0)
        bad = ("pop_prev", "push_prev") if ins.engine == Engine.LOAD else ("pop_next", "push_next")
        words[k] = isa.encode(ins.with_flags(**{draw(st.sampled_from(bad)): True}))
    elif kind == "field":
        words[k] = isa.encode(_field_fault(draw, ins))
    elif kind == "window" and dma:  # a DMA access ending just past the window
        j = draw(st.sampled_from(dma))
        words[j] = isa.encode(_with(body[j], dram_offset=DRAM_BYTES - draw(st.integers(0, 40))))
    elif kind == "pop":  # a token popped that no instruction pushes for it
        words[k] = isa.encode(
            ins.with_flags(**{draw(st.sampled_from(LEGAL_POPS[ins.engine])): True})
        )
    elif kind == "push":  # a push dropped: its pop waits forever
        words[k] = isa.encode(ins.with_flags(push_prev=False, push_next=False))
    elif kind == "overflow":  # more tokens than the FIFO holds, never popped
        extra = CFG.queue_depth + draw(st.integers(1, 2))
        words[k:k] = [isa.encode(NO_ENTRIES.with_flags(push_next=True))] * extra
    elif kind == "cut":  # no END
        words = words[: k + 1]
    return b"".join(w.to_bytes(isa.INSTR_BYTES, "little") for w in words)


@pytest.mark.parametrize("kind", FAULTS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data(), seed=st.integers(0, 999))
def test_error_streams_match_golden(kind: str, data: st.DataObject, seed: int) -> None:
    stream = data.draw(faulty_streams(kind))
    want = first_error(CFG, stream, DRAM_BYTES).code
    if want not in (ErrorCode.NONE, ErrorCode.TOKEN_OVERFLOW):
        # the checking pass stops every stream the hardware would stop (it does not count
        # tokens: a FIFO overflow is the one error it lets through)
        with pytest.raises(DpuKitError):
            GoldenDPU(CFG).prepare(stream, DRAM_BYTES)
    (res,) = run_programs(
        CFG, [Run(stream, _dram(seed))], max_cycles=200_000, stall_pct=10, seed=seed
    )
    assert not res.timed_out and res.done, "the DPU hung"
    assert res.outside_writes == 0, "DRAM outside the data window changed"
    assert res.error_code == want, (res.error_code, want)
    assert res.error == (want != ErrorCode.NONE)
