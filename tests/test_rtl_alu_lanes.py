"""RTL tests of hw/rtl/dpu_alu_lanes.sv: the cocotb tests of sim/alu_lanes_tests.py, and lint."""

from __future__ import annotations

import subprocess

import pytest

from dpukit.sim.cocotb_run import rtl_sources, run_testbench
from dpukit.sim.verilator_env import verilator_bin, verilator_env

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
    sources = [str(p) for p in rtl_sources("dpu_alu_lanes")]
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", f"-GCols={cols}", *sources]
    res = subprocess.run(cmd, env=verilator_env(), capture_output=True, text=True, check=False)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "%Warning" not in log and "%Error" not in log, log
