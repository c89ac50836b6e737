"""RTL tests of hw/rtl/dpu_load_dma.sv: the cocotb tests of sim/load_dma_tests.py, and lint
(of the shared hw/rtl/dpu_dma_bursts.sv on its own too)."""

from __future__ import annotations

import pytest

from dpukit.sim.cocotb_run import assert_lint_clean, rtl_sources, run_testbench

SOURCES = ("dpu_dma_bursts", "dpu_load_dma")
# (AxiDataBits, EntryBytes, MaxBurstBeats, MaxOutstanding, dram latency): sim-small INP,
# pynq-z2 INP and WGT (the LOAD engine's widest entry), ultra96v2's 128-bit bus and latency
# with 48-byte (sim-small PAR) entries and short bursts, so entries take several bursts; and
# few outstanding bursts, so the limit is reached (enough for a 2-cycle memory to stream)
CONFIGS = [
    (64, 4, 16, 64, 16),
    (64, 16, 16, 64, 40),
    (64, 256, 16, 64, 40),
    (128, 48, 2, 64, 48),
    (64, 8, 4, 3, 2),
]
LINT = [c[:4] for c in CONFIGS] + [(64, 192, 16, 64), (64, 512, 16, 64), (128, 512, 16, 64)]


def params(bits: int, entry: int, burst: int, outstanding: int) -> dict[str, int]:
    return {
        "AxiDataBits": bits,
        "EntryBytes": entry,
        "MaxBurstBeats": burst,
        "MaxOutstanding": outstanding,
    }


@pytest.mark.parametrize(("bits", "entry", "burst", "outstanding", "latency"), CONFIGS)
def test_load_dma_cocotb(bits: int, entry: int, burst: int, outstanding: int, latency: int) -> None:
    run_testbench(
        "dpu_load_dma",
        rtl_sources(*SOURCES),
        "load_dma_tests",
        params(bits, entry, burst, outstanding),
        extra_env={"DPU_MAX_BURST": str(burst), "DPU_DRAM_LATENCY": str(latency)},
    )


def lint(top: str, parameters: dict[str, int]) -> None:
    assert_lint_clean(top, rtl_sources(*SOURCES), parameters)


@pytest.mark.parametrize(("bits", "entry", "burst", "outstanding"), LINT)
def test_load_dma_lint(bits: int, entry: int, burst: int, outstanding: int) -> None:
    lint("dpu_load_dma", params(bits, entry, burst, outstanding))


@pytest.mark.parametrize(
    ("bits", "addr", "burst", "outstanding"), [(64, 32, 16, 64), (128, 40, 2, 3), (32, 32, 1, 1)]
)
def test_dma_bursts_lint(bits: int, addr: int, burst: int, outstanding: int) -> None:
    lint(
        "dpu_dma_bursts",
        {
            "AxiDataBits": bits,
            "AxiAddrBits": addr,
            "MaxBurstBeats": burst,
            "MaxOutstanding": outstanding,
        },
    )
