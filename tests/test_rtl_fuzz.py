"""Differential fuzzing of the RTL DPU against the golden model (hypothesis).

Valid programs: random instructions of every opcode with random fields (strides of 0,
padding, partial entries, accumulate/reset, repeated ACC addresses, every ALU op, extreme
requantization parameters loaded from random DRAM), chained by dependency tokens so that
each instruction starts after the previous one (a valid, hazard-free program: the golden
model's checker must accept it, or hypothesis discards it). Golden and RTL run the same
stream on the same random DRAM: the whole DRAM afterwards and the activity counters agree.

Invalid programs: each kind of fault the hardware can see (illegal opcode, token flag on a
missing neighbour, unsatisfiable pop, no END, an entry outside a buffer, a DRAM access
outside the window, elem_bytes wider than an entry, an undefined ALU op) ends in the error
state with the right ERROR_CODE, never a hang, and nothing written outside the window.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stream_helpers import instr, serialize

from dpukit.compiler import isa
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Buffer, Opcode
from dpukit.errors import ExecutionError
from dpukit.host.regmap import ErrorCode
from dpukit.host.rtl_backend import RtlDPU
from dpukit.sim.rtl_harness import run_program

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
    # Both sides start with zeroed buffers: the golden model's are, and every harness run is
    # a fresh Verilator model (--x-initial fast zero-initialises its memories).
    act = golden.run(stream, want)
    rtl = RtlDPU(CFG, stall_pct=10, seed=seed % 1000)
    rtl_act = rtl.run(stream, got)
    np.testing.assert_array_equal(got, want)
    assert rtl_act.buffer_reads == act.buffer_reads
    assert rtl_act.buffer_writes == act.buffer_writes
    assert rtl_act.mac_cycles == act.mac_cycles
    assert (rtl_act.dram_read_beats, rtl_act.dram_write_beats) == (
        act.dram_read_beats,
        act.dram_write_beats,
    )


def _stream(*body: isa.Instr, end: bool = True) -> bytes:
    return isa.to_bytes(list(body) + ([instr(Opcode.END)] if end else []))


def _raw(word: int) -> bytes:
    return word.to_bytes(isa.INSTR_BYTES, "little")


GOOD_LOAD = instr(Opcode.LOAD, buffer=Buffer.INP, y_size=1, x_size=2, x_stride=4, elem_bytes=4)
INVALID = {
    "illegal_opcode": (_raw(6) + _stream(), ErrorCode.ILLEGAL_OPCODE),
    "flag_without_neighbour": (
        _stream(GOOD_LOAD.with_flags(pop_prev=True)),
        ErrorCode.ILLEGAL_FLAGS,
    ),
    "pop_never_pushed": (_stream(GOOD_LOAD.with_flags(pop_next=True)), ErrorCode.DEADLOCK),
    "no_end": (_stream(GOOD_LOAD, end=False), ErrorCode.DEADLOCK),
    "empty_stream": (b"", ErrorCode.DEADLOCK),
    "load_outside_buffer": (
        _stream(
            instr(Opcode.LOAD, buffer=Buffer.WGT, sram_base=CFG.wgt_entries - 1, y_size=1, x_size=2)
        ),
        ErrorCode.LOAD_BUFFER,
    ),
    "load_outside_window": (
        _stream(
            instr(
                Opcode.LOAD,
                buffer=Buffer.INP,
                dram_offset=DRAM_BYTES - 2,
                y_size=1,
                x_size=1,
                elem_bytes=4,
            )
        ),
        ErrorCode.LOAD_RANGE,
    ),
    "store_outside_window": (
        _stream(instr(Opcode.STORE, dram_offset=DRAM_BYTES, y_size=1, x_size=1, elem_bytes=1)),
        ErrorCode.STORE_RANGE,
    ),
    "load_too_wide": (
        _stream(instr(Opcode.LOAD, buffer=Buffer.ACC, y_size=1, x_size=1, elem_bytes=CFG.cols + 1)),
        ErrorCode.LOAD_ELEM_BYTES,
    ),
    "store_too_wide": (
        _stream(instr(Opcode.STORE, y_size=1, x_size=1, elem_bytes=CFG.cols + 1)),
        ErrorCode.STORE_ELEM_BYTES,
    ),
    "gemm_outside_acc": (
        _stream(
            instr(
                Opcode.GEMM,
                reset=1,
                acc_base=CFG.acc_entries - 1,
                n_outer=1,
                n_inner=2,
                acc_inner_stride=1,
            )
        ),
        ErrorCode.COMPUTE_BUFFER,
    ),
    "post_outside_out": (
        _stream(instr(Opcode.POST, out_base=CFG.out_entries, count=1, blocks=1)),
        ErrorCode.COMPUTE_BUFFER,
    ),
    "bad_alu_op": (
        _stream(instr(Opcode.ALU, alu_op=max(AluOp) + 1, n_outer=1, n_inner=1)),
        ErrorCode.ILLEGAL_ALU_OP,
    ),
}


# AXI error responses: the harness DRAM answers SLVERR beyond its image, which ends one page
# past the data window; a window limit the program may use reaches there.
BEYOND = DRAM_BYTES + 2 * 4096
AXI_FAULTS = {
    "load_axi_error": (
        _stream(
            instr(
                Opcode.LOAD, buffer=Buffer.INP, dram_offset=BEYOND, y_size=1, x_size=1, elem_bytes=4
            )
        ),
        {"DATA_LIMIT": BEYOND + 4096},
        ErrorCode.LOAD_AXI,
    ),
    "store_axi_error": (
        _stream(instr(Opcode.STORE, dram_offset=BEYOND, y_size=1, x_size=1, elem_bytes=4)),
        {"DATA_LIMIT": BEYOND + 4096},
        ErrorCode.STORE_AXI,
    ),
    "fetch_axi_error": (_stream(), {"INSTR_BASE_LO": 1 << 20}, ErrorCode.FETCH_AXI),
}


@pytest.mark.parametrize("case", sorted(AXI_FAULTS))
def test_axi_error_response_stops_with_error(case: str) -> None:
    stream, overrides, code = AXI_FAULTS[case]
    res = run_program(CFG, stream, _dram(0), max_cycles=200_000, registers=overrides)
    assert not res.timed_out, "the DPU hung instead of stopping on the error"
    assert res.error and res.error_code == code, (res.error_code, code)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_program_stops_with_error(case: str) -> None:
    stream, code = INVALID[case]
    dram = _dram(0)
    before = dram.copy()
    res = run_program(CFG, stream, dram, max_cycles=200_000)
    assert not res.timed_out, "the DPU hung instead of stopping on the error"
    assert res.error and res.error_code == code, (res.error_code, code)
    if code in (ErrorCode.LOAD_RANGE, ErrorCode.STORE_RANGE):
        np.testing.assert_array_equal(dram, before)  # nothing touched
