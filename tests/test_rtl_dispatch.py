"""RTL tests of hw/rtl/dpu_dispatch.sv: the cocotb tests of sim/dispatch_tests.py, and lint."""

from __future__ import annotations

import subprocess

import pytest

from dpukit.sim.cocotb_run import rtl_sources, run_testbench
from dpukit.sim.verilator_env import verilator_bin, verilator_env

QUEUE_DEPTHS = [16, 64]


@pytest.mark.parametrize("depth", QUEUE_DEPTHS)
def test_dispatch_cocotb(depth: int) -> None:
    run_testbench(
        "dpu_dispatch",
        rtl_sources("dpu_dispatch"),
        "dispatch_tests",
        {"QueueDepth": depth},
        extra_env={"DPU_DISPATCH_QUEUE_DEPTH": str(depth)},
    )


@pytest.mark.parametrize("depth", [1, 3, *QUEUE_DEPTHS])
def test_dispatch_lint(depth: int) -> None:
    sources = [str(p) for p in rtl_sources("dpu_dispatch")]
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", f"-GQueueDepth={depth}", *sources]
    res = subprocess.run(cmd, env=verilator_env(), capture_output=True, text=True, check=False)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log
    assert "%Warning" not in log and "%Error" not in log, log
