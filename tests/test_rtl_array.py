"""dpu_array (and dpu_pe) under cocotb + Verilator, and Verilator lint: the shipped shapes and
the edge cases of the pairing (odd Cols, Cols 1 and 2)."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

SHAPES = [
    pytest.param(4, 4, id="sim-small-4x4"),
    pytest.param(16, 16, id="pynq-z2-16x16"),
    pytest.param(4, 8, id="non-square-4x8"),
    # odd Cols (the last multiplier carries one column), and the short pipelines of Cols 1, 2
    pytest.param(3, 5, id="odd-3x5"),
    pytest.param(5, 2, id="two-cols-5x2"),
    pytest.param(2, 1, id="one-col-2x1"),
]


@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_array(rows: int, cols: int) -> None:
    run_testbench(
        "dpu_array",
        rtl_sources("dpu_pe", "dpu_array"),
        "array_tests",
        {"Rows": rows, "Cols": cols},
        extra_env={"DPU_ROWS": str(rows), "DPU_COLS": str(cols)},
    )


@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_array_lint(rows: int, cols: int) -> None:
    assert_lint_clean("dpu_array", rtl_sources("dpu_pe", "dpu_array"), {"Rows": rows, "Cols": cols})
