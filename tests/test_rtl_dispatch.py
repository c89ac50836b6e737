"""RTL tests of hw/rtl/dpu_dispatch.sv: the cocotb tests of sim/dispatch_tests.py, and lint."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

# (QueueDepth, ComputeInFlight): one-at-a-time engines, and a compute engine holding several
BUILDS = [(16, 1), (64, 1), (16, 4)]


@pytest.mark.parametrize(("depth", "in_flight"), BUILDS)
def test_dispatch_cocotb(depth: int, in_flight: int) -> None:
    params = {"QueueDepth": depth}
    if in_flight != 1:  # else the default, which the bench checks is 1
        params["ComputeInFlight"] = in_flight
    run_testbench(
        "dpu_dispatch",
        rtl_sources("dpu_fifo", "dpu_dispatch"),
        "dispatch_tests",
        params,
        extra_env={
            "DPU_DISPATCH_QUEUE_DEPTH": str(depth),
            "DPU_DISPATCH_COMPUTE_IN_FLIGHT": str(in_flight),
        },
    )


@pytest.mark.parametrize(
    ("depth", "in_flight"), [(1, 1), (3, 1), (16, 1), (64, 1), (1, 2), (3, 5), (16, 16)]
)
def test_dispatch_lint(depth: int, in_flight: int) -> None:
    params = {"QueueDepth": depth, "ComputeInFlight": in_flight}
    assert_lint_clean("dpu_dispatch", rtl_sources("dpu_fifo", "dpu_dispatch"), params)
