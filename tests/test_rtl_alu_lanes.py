"""RTL tests of hw/rtl/dpu_alu_lanes.sv: the cocotb tests of sim/alu_lanes_tests.py, and lint."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

COLS = [4, 16]


@pytest.mark.parametrize("cols", COLS)
def test_alu_lanes_cocotb(cols: int) -> None:
    run_testbench(
        "dpu_alu_lanes",
        rtl_sources("dpu_alu_lanes"),
        "alu_lanes_tests",
        {"Cols": cols},
        extra_env={"DPU_ALU_COLS": str(cols)},
    )


@pytest.mark.parametrize("cols", COLS)
def test_alu_lanes_lint(cols: int) -> None:
    assert_lint_clean("dpu_alu_lanes", rtl_sources("dpu_alu_lanes"), {"Cols": cols})
