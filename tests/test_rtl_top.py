"""dpu_top: the protocol-level cocotb bench (sim/top_tests.py: AxiLiteMaster and AxiRam with
pauses on every channel) on a program checked against the golden model, and Verilator lint
of the whole DPU as configured by each hardware config. The instruction fetch unit is
exercised through dpu_top here and by the program-level tests (tests/test_rtl_programs.py,
tests/test_rtl_fuzz.py); its lint runs on both bus widths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stream_helpers import instr, serialize

from dpukit.compiler import isa
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Buffer, Opcode
from dpukit.host.regmap import fingerprint_value
from dpukit.hw.params import rtl_files, top_parameters
from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench


def _case_program(cfg) -> list[isa.Instr]:
    """One instruction of each kind over a few entries, serialised by tokens."""
    r, c = cfg.rows, cfg.cols
    return serialize(
        [
            instr(
                Opcode.LOAD,
                buffer=Buffer.INP,
                y_size=3,
                x_size=4,
                y_stride=4 * r + 3,
                x_stride=r,
                elem_bytes=r,
                pad_left=1,
                pad_value=-3,
            ),
            instr(
                Opcode.LOAD,
                buffer=Buffer.WGT,
                dram_offset=700,
                y_size=1,
                x_size=2,
                x_stride=r * c,
                elem_bytes=r * c,
            ),
            instr(
                Opcode.LOAD,
                buffer=Buffer.PAR,
                dram_offset=1500,
                y_size=1,
                x_size=1,
                elem_bytes=12 * c,
            ),
            instr(
                Opcode.GEMM,
                reset=1,
                wgt_addr=0,
                n_outer=3,
                n_inner=5,
                inp_outer_stride=5,
                inp_inner_stride=1,
                acc_outer_stride=5,
                acc_inner_stride=1,
            ),
            instr(
                Opcode.GEMM,
                wgt_addr=1,
                n_outer=1,
                n_inner=15,
                inp_inner_stride=1,
                acc_inner_stride=1,
            ),
            instr(
                Opcode.ALU,
                alu_op=AluOp.MAX,
                dst_base=20,
                src_base=0,
                n_outer=1,
                n_inner=6,
                src_inner_stride=1,
            ),
            instr(
                Opcode.POST,
                count=15,
                blocks=1,
                par_addr=0,
                zero_point=3,
                clamp_lo=-100,
                clamp_hi=90,
            ),
            instr(
                Opcode.STORE,
                dram_offset=2048,
                y_size=3,
                x_size=5,
                y_stride=5 * c + 1,
                x_stride=c,
                elem_bytes=c,
            ),
        ]
    )


def test_top_cocotb(tmp_path: Path) -> None:
    cfg = load_config("sim-small")
    stream = isa.to_bytes(_case_program(cfg))
    before = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8)
    # PAR: moderate multipliers and shifts, so POST's output is not all clamped
    par = np.zeros((3, cfg.cols), "<i4")
    par[0] = np.random.default_rng(6).integers(-5000, 5000, cfg.cols)
    par[1], par[2] = 1 << 20, 26
    before[1500 : 1500 + par.nbytes] = par.view(np.uint8).ravel()
    after = before.copy()
    golden = GoldenDPU(cfg, merge_gemms=False)
    act = golden.run(stream, after)
    assert not np.array_equal(after[2048:2400], before[2048:2400])  # the STORE wrote
    case = tmp_path / "case.npz"
    np.savez(
        case,
        stream=np.frombuffer(stream, np.uint8),
        dram_before=before,
        dram_after=after,
        mac_cycles=act.mac_cycles,
        dram_read_beats=act.dram_read_beats,
        dram_write_beats=act.dram_write_beats,
        acc_writes=act.buffer_writes["acc"],
        out_reads=act.buffer_reads["out"],
        fingerprint=fingerprint_value(cfg.fingerprint),
    )
    run_testbench(
        "dpu_top",
        rtl_files(),
        "top_tests",
        top_parameters(cfg),
        extra_env={"DPU_TOP_CASE": str(case)},
    )


@pytest.mark.parametrize("config", ["sim-small", "pynq-z2", "ultra96v2"])
def test_top_lint(config: str) -> None:
    assert_lint_clean("dpu_top", rtl_files(), top_parameters(load_config(config)))


@pytest.mark.parametrize("bits", [64, 128])
def test_fetch_lint(bits: int) -> None:
    assert_lint_clean("dpu_fetch", rtl_sources("dpu_fetch"), {"AxiDataBits": bits})
