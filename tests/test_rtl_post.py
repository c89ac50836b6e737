"""RTL tests of hw/rtl/dpu_post.sv: the cocotb tests of sim/post_tests.py, and lint."""

from __future__ import annotations

import subprocess

import pytest

from dpukit.sim.cocotb_run import RTL, rtl_sources, run_testbench
from dpukit.sim.verilator_env import verilator_bin, verilator_env

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
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", f"-GCols={cols}", str(RTL / "dpu_post.sv")]
    res = subprocess.run(cmd, env=verilator_env(), capture_output=True, text=True, check=False)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "%Warning" not in log and "%Error" not in log, log
