"""Every error the DPU reports, on the RTL with the checking pass bypassed (issue 8).

Each stream goes straight to the RTL harness, as a board driver, a hand-written stream or a
bit flip in DDR would send it. For every ErrorCode: the core signals done (no hang), with
STATUS.error and the expected ERROR_CODE, which is also the golden model's first error
for the stream (`golden.first_error`, an independent reference); no DRAM byte outside the
data window changes; and the same DPU, without a PL reset, then runs a correct program to
the golden model's bytes and activity counts. Where possible an engine holds a long
instruction when the error happens: the core must wind it down (the hangs of issue 8 were
errors met while a LOAD was in flight).
"""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import instr, serialize

from dpukit.compiler import isa
from dpukit.compiler.golden import GoldenDPU, first_error
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Buffer, Opcode
from dpukit.host import regmap
from dpukit.host.regmap import ErrorCode
from dpukit.sim.rtl_harness import PAGE, Run, run_programs

CFG = load_config("sim-small")
DRAM_BYTES = 4096
MAX_CYCLES = 200_000  # every stream here finishes in a few thousand cycles


def _stream(*body: isa.Instr, end: bool = True) -> bytes:
    return isa.to_bytes(list(body) + ([instr(Opcode.END)] if end else []))


def _raw(word: int) -> bytes:
    return word.to_bytes(isa.INSTR_BYTES, "little")


# In flight when the error happens: a LOAD of 800 INP entries (about 800 cycles) and a
# STORE of 128 OUT entries, neither waiting for a token.
LONG_LOAD = instr(
    Opcode.LOAD, buffer=Buffer.INP, y_size=4, x_size=200, y_stride=800, x_stride=4, elem_bytes=4
)
LONG_STORE = instr(
    Opcode.STORE, dram_offset=DRAM_BYTES - 512, y_size=1, x_size=128, x_stride=4, elem_bytes=4
)
NO_ENTRIES = instr(Opcode.LOAD, buffer=Buffer.INP, z_size=1, y_size=0, x_size=0)
# The harness DRAM answers SLVERR from a page past the first run's window on; a window limit
# the program may use reaches there.
BEYOND = DRAM_BYTES + 2 * PAGE
WIDE = {"DATA_LIMIT": BEYOND + PAGE}

# name: (stream, registers written before the start, the error)
CASES: dict[str, tuple[bytes, dict[str, int], ErrorCode]] = {
    # issue 8: an illegal opcode as the stream's last word (no END after it)
    "illegal_opcode_last": (
        _stream(LONG_LOAD, LONG_STORE, end=False) + _raw(6),
        {},
        ErrorCode.ILLEGAL_OPCODE,
    ),
    "illegal_flags": (
        _stream(LONG_LOAD, LONG_STORE, NO_ENTRIES.with_flags(push_prev=True)),
        {},
        ErrorCode.ILLEGAL_FLAGS,
    ),
    # one more token than the FIFO holds, and nothing pops them
    "token_overflow": (
        _stream(LONG_STORE, *[NO_ENTRIES.with_flags(push_next=True)] * (CFG.queue_depth + 1)),
        {},
        ErrorCode.TOKEN_OVERFLOW,
    ),
    "deadlock": (
        _stream(LONG_LOAD, instr(Opcode.ALU, n_outer=1, n_inner=1).with_flags(pop_prev=True)),
        {},
        ErrorCode.DEADLOCK,
    ),
    "no_end": (_stream(LONG_LOAD, LONG_STORE, end=False), {}, ErrorCode.DEADLOCK),
    "empty_stream": (b"", {}, ErrorCode.DEADLOCK),
    # Bus faults are not in the stream: registers point fetch, LOAD and STORE at addresses
    # where the harness DRAM answers SLVERR (or at a misaligned stream). The streams
    # themselves are correct.
    "fetch_axi": (_stream(LONG_LOAD), {"INSTR_BASE_LO": 1 << 24}, ErrorCode.FETCH_AXI),
    "fetch_align": (_stream(LONG_LOAD), {"INSTR_BASE_LO": 4}, ErrorCode.FETCH_ALIGN),
    "load_axi": (
        _stream(
            LONG_STORE,
            instr(
                Opcode.LOAD, buffer=Buffer.INP, dram_offset=BEYOND, y_size=1, x_size=8, elem_bytes=4
            ),
        ),
        WIDE,
        ErrorCode.LOAD_AXI,
    ),
    "store_axi": (
        _stream(
            LONG_LOAD, instr(Opcode.STORE, dram_offset=BEYOND, y_size=1, x_size=8, elem_bytes=4)
        ),
        WIDE,
        ErrorCode.STORE_AXI,
    ),
    "load_elem_bytes": (
        _stream(
            LONG_STORE,
            instr(Opcode.LOAD, buffer=Buffer.ACC, y_size=1, x_size=1, elem_bytes=CFG.cols + 1),
        ),
        {},
        ErrorCode.LOAD_ELEM_BYTES,
    ),
    "load_range": (
        _stream(
            LONG_STORE,
            instr(
                Opcode.LOAD,
                buffer=Buffer.INP,
                dram_offset=DRAM_BYTES - 2,
                y_size=1,
                x_size=1,
                elem_bytes=4,
            ),
        ),
        {},
        ErrorCode.LOAD_RANGE,
    ),
    # entries go on past the first one outside WGT: the LOAD must still finish
    "load_buffer": (
        _stream(
            LONG_STORE,
            instr(
                Opcode.LOAD, buffer=Buffer.WGT, sram_base=CFG.wgt_entries - 2, y_size=1, x_size=9
            ),
        ),
        {},
        ErrorCode.LOAD_BUFFER,
    ),
    "store_elem_bytes": (
        _stream(
            LONG_LOAD,
            instr(Opcode.STORE, y_size=1, x_size=1, elem_bytes=CFG.out_entry_bytes + 1),
        ),
        {},
        ErrorCode.STORE_ELEM_BYTES,
    ),
    # issue 8: a STORE outside the data window while a LOAD runs
    "store_range": (
        _stream(
            LONG_LOAD, instr(Opcode.STORE, dram_offset=DRAM_BYTES, y_size=1, x_size=1, elem_bytes=1)
        ),
        {},
        ErrorCode.STORE_RANGE,
    ),
    "store_buffer": (
        _stream(
            LONG_LOAD,
            instr(
                Opcode.STORE,
                sram_base=CFG.out_entries - 2,
                y_size=1,
                x_size=4,
                x_stride=4,
                elem_bytes=4,
            ),
        ),
        {},
        ErrorCode.STORE_BUFFER,
    ),
    # issue 8: GEMMs whose INP or ACC range leaves the buffer while a LOAD runs
    "gemm_inp_range": (
        _stream(
            LONG_LOAD,
            instr(
                Opcode.GEMM,
                reset=1,
                inp_base=CFG.inp_entries - 1,
                n_outer=1,
                n_inner=2,
                inp_inner_stride=1,
                acc_inner_stride=1,
            ),
        ),
        {},
        ErrorCode.COMPUTE_BUFFER,
    ),
    "gemm_acc_range": (
        _stream(
            LONG_LOAD,
            instr(
                Opcode.GEMM,
                reset=1,
                acc_base=CFG.acc_entries - 1,
                n_outer=1,
                n_inner=2,
                inp_inner_stride=1,
                acc_inner_stride=1,
            ),
        ),
        {},
        ErrorCode.COMPUTE_BUFFER,
    ),
    "post_out_range": (
        _stream(LONG_LOAD, instr(Opcode.POST, out_base=CFG.out_entries - 1, count=2, blocks=1)),
        {},
        ErrorCode.COMPUTE_BUFFER,
    ),
    "alu_src_range": (
        _stream(
            LONG_LOAD,
            instr(Opcode.ALU, alu_op=AluOp.MOV, src_base=CFG.acc_entries, n_outer=1, n_inner=1),
        ),
        {},
        ErrorCode.COMPUTE_BUFFER,
    ),
    "illegal_alu_op": (
        _stream(LONG_LOAD, instr(Opcode.ALU, alu_op=max(AluOp) + 1, n_outer=1, n_inner=1)),
        {},
        ErrorCode.ILLEGAL_ALU_OP,
    ),
}


def _good_program() -> bytes:
    """A correct program that writes every entry it reads: its result does not depend on
    what an earlier program left in the buffers."""
    r, c = CFG.rows, CFG.cols
    return isa.to_bytes(
        serialize(
            [
                instr(
                    Opcode.LOAD,
                    buffer=Buffer.INP,
                    y_size=2,
                    x_size=4,
                    y_stride=64,
                    x_stride=r,
                    elem_bytes=r,
                    pad_left=1,
                    pad_value=-5,
                ),
                instr(
                    Opcode.LOAD,
                    buffer=Buffer.WGT,
                    dram_offset=512,
                    y_size=1,
                    x_size=1,
                    elem_bytes=r * c,
                ),
                instr(
                    Opcode.LOAD,
                    buffer=Buffer.PAR,
                    dram_offset=1024,
                    y_size=1,
                    x_size=1,
                    elem_bytes=12 * c,
                ),
                instr(
                    Opcode.GEMM,
                    reset=1,
                    n_outer=1,
                    n_inner=10,
                    inp_inner_stride=1,
                    acc_inner_stride=1,
                ),
                instr(Opcode.POST, count=10, blocks=1, zero_point=2, clamp_lo=-120, clamp_hi=110),
                instr(
                    Opcode.STORE,
                    dram_offset=2048,
                    y_size=2,
                    x_size=5,
                    y_stride=32,
                    x_stride=c,
                    elem_bytes=c,
                ),
            ]
        )
    )


def _good_dram() -> np.ndarray:
    dram = np.random.default_rng(11).integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    par = np.zeros((3, CFG.cols), "<i4")  # bias, multiplier, shift: outputs not all clamped
    par[0] = np.random.default_rng(12).integers(-3000, 3000, CFG.cols)
    par[1], par[2] = 1 << 20, 24
    dram[1024 : 1024 + par.nbytes] = par.view(np.uint8).ravel()
    return dram


GOOD = _good_program()


def test_every_error_code_has_a_case() -> None:
    assert {code for _, _, code in CASES.values()} == set(ErrorCode) - {ErrorCode.NONE}


@pytest.mark.parametrize("recover", ["start", "soft_reset"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_error_stops_cleanly_and_the_dpu_recovers(case: str, recover: str) -> None:
    stream, registers, code = CASES[case]
    # The golden model's verdict on the stream, in the window the run gives it: the bus
    # faults (the cases that set registers) are not in the stream, which is correct.
    window = registers.get("DATA_LIMIT", DRAM_BYTES)
    assert first_error(CFG, stream, window).code == (ErrorCode.NONE if registers else code)
    want = _good_dram()
    act = GoldenDPU(CFG, merge_gemms=False).run(GOOD, want)

    bad_dram = np.random.default_rng(3).integers(0, 256, DRAM_BYTES, dtype=np.uint8)
    good_dram = _good_dram()
    # the next program only writes its registers and starts, or soft-resets the core first
    soft_reset = {"CTRL": regmap.register("CTRL").field("soft_reset").mask}
    bad, good = run_programs(
        CFG,
        [
            Run(stream, bad_dram, dict(registers)),
            Run(GOOD, good_dram, soft_reset if recover == "soft_reset" else {}),
        ],
        max_cycles=MAX_CYCLES,
        stall_pct=10,
        seed=len(case),
    )

    assert not bad.timed_out, "the DPU hung instead of stopping on the error"
    assert bad.done and bad.error, hex(bad.registers["STATUS"])
    assert bad.error_code == code, (bad.error_code, code)
    assert bad.outside_writes == 0, "DRAM outside the data window changed"

    assert not good.timed_out and good.done and not good.error, good.error_code
    assert good.outside_writes == 0
    np.testing.assert_array_equal(good_dram, want)
    counted = {
        "MAC_CYCLES": act.mac_cycles,
        "DRAM_READ_BEATS": act.dram_read_beats,
        "DRAM_WRITE_BEATS": act.dram_write_beats,
        **{f"{b.upper()}_READS": n for b, n in act.buffer_reads.items()},
        **{f"{b.upper()}_WRITES": n for b, n in act.buffer_writes.items()},
    }
    assert {k: good.registers[k] for k in counted} == counted
