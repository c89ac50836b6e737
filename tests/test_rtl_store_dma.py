"""RTL tests of hw/rtl/dpu_store_dma.sv: the cocotb tests of sim/store_dma_tests.py, and lint."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

SOURCES = ("dpu_dma_bursts", "dpu_store_dma")
# (AxiDataBits, EntryBytes, MaxBurstBeats, MaxOutstanding, dram latency): sim-small OUT,
# pynq-z2 OUT, ultra96v2's 128-bit bus, latency and 32-byte OUT entries with short bursts,
# so entries take several bursts; and few outstanding bursts, so the limit is reached
# (enough for a 2-cycle memory to stream)
CONFIGS = [
    (64, 4, 16, 64, 16),
    (64, 16, 16, 64, 40),
    (128, 32, 2, 64, 48),
    (64, 8, 4, 6, 2),
]
LINT = [c[:4] for c in CONFIGS] + [(32, 4, 1, 64), (64, 192, 16, 64), (128, 512, 16, 64)]


def params(bits: int, entry: int, burst: int, outstanding: int) -> dict[str, int]:
    return {
        "AxiDataBits": bits,
        "EntryBytes": entry,
        "MaxBurstBeats": burst,
        "MaxOutstanding": outstanding,
    }


@pytest.mark.parametrize(("bits", "entry", "burst", "outstanding", "latency"), CONFIGS)
def test_store_dma_cocotb(
    bits: int, entry: int, burst: int, outstanding: int, latency: int
) -> None:
    run_testbench(
        "dpu_store_dma",
        rtl_sources(*SOURCES),
        "store_dma_tests",
        params(bits, entry, burst, outstanding),
        extra_env={"DPU_MAX_BURST": str(burst), "DPU_DRAM_LATENCY": str(latency)},
    )


@pytest.mark.parametrize(("bits", "entry", "burst", "outstanding"), LINT)
def test_store_dma_lint(bits: int, entry: int, burst: int, outstanding: int) -> None:
    assert_lint_clean(
        "dpu_store_dma", rtl_sources(*SOURCES), params(bits, entry, burst, outstanding)
    )
