"""RTL tests of hw/rtl/dpu_compute.sv: the cocotb tests of sim/compute_tests.py, and lint."""

from __future__ import annotations

import pytest

from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.timing import COMPUTE_IN_FLIGHT
from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

SOURCES = ("dpu_pe", "dpu_array", "dpu_post", "dpu_alu_lanes", "dpu_compute")
ENTRIES = ("InpEntries", "WgtEntries", "AccEntries", "OutEntries", "ParEntries")

# (Rows, Cols, INP, WGT, ACC, OUT, PAR entries, MaxInFlight): a 4x4 array with small
# buffers whose sizes are not powers of two and few instructions in flight (the limit binds),
# and a 16x16 one with small buffers (addresses often out of range, entries often repeated)
SIMULATED = {
    "4x4": (4, 4, 48, 12, 40, 36, 6, 3),
    "16x16": (16, 16, 32, 8, 32, 32, 4, COMPUTE_IN_FLIGHT),
}


def config_params(name: str) -> tuple[int, ...]:
    c = load_config(name)
    return (
        c.rows,
        c.cols,
        c.inp_entries,
        c.wgt_entries,
        c.acc_entries,
        c.out_entries,
        c.par_entries,
        COMPUTE_IN_FLIGHT,
    )


LINT = {
    **SIMULATED,
    "sim-small": config_params("sim-small"),
    "pynq-z2": config_params("pynq-z2"),
    "ultra96v2": config_params("ultra96v2"),  # 16 x 24
    "full-64k": (16, 32, 65536, 65536, 65536, 65536, 65536, COMPUTE_IN_FLIGHT),
}


def params(values: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(("Rows", "Cols", *ENTRIES, "MaxInFlight"), values, strict=True))


@pytest.mark.parametrize("shape", list(SIMULATED))
def test_compute_cocotb(shape: str) -> None:
    p = params(SIMULATED[shape])
    env = {"DPU_ROWS": p["Rows"], "DPU_COLS": p["Cols"], "DPU_IN_FLIGHT": p["MaxInFlight"]}
    env |= {f"DPU_{k.removesuffix('Entries').upper()}": p[k] for k in ENTRIES}
    run_testbench(
        "dpu_compute",
        rtl_sources(*SOURCES),
        "compute_tests",
        p,
        extra_env={k: str(v) for k, v in env.items()},
    )


@pytest.mark.parametrize("shape", list(LINT))
def test_compute_lint(shape: str) -> None:
    assert_lint_clean("dpu_compute", rtl_sources(*SOURCES), params(LINT[shape]))
