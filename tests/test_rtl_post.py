"""RTL tests of hw/rtl/dpu_post.sv: the cocotb tests of sim/post_tests.py, and lint."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import RTL, assert_lint_clean, rtl_sources, run_testbench

COLS = [4, 16]


@pytest.mark.parametrize("cols", COLS)
def test_post_cocotb(cols: int) -> None:
    run_testbench(
        "dpu_post",
        rtl_sources("dpu_post"),
        "post_tests",
        {"Cols": cols},
        extra_env={"DPU_POST_COLS": str(cols)},
    )


@pytest.mark.parametrize("cols", COLS)
def test_post_lint(cols: int) -> None:
    assert_lint_clean("dpu_post", [RTL / "dpu_post.sv"], {"Cols": cols})
