"""RTL tests of hw/rtl/dpu_dispatch.sv: the cocotb tests of sim/dispatch_tests.py, and lint."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

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
    assert_lint_clean("dpu_dispatch", rtl_sources("dpu_dispatch"), {"QueueDepth": depth})
