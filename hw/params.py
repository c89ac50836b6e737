"""The RTL's parameters and sources, from a hardware config: one place for the simulators,
the harness and the synthesis estimate (principle 1: nothing duplicated by hand)."""

from __future__ import annotations

from pathlib import Path

from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.timing import COMPUTE_IN_FLIGHT
from dpukit.host.regmap import fingerprint_value

RTL_DIR = Path(__file__).resolve().parent / "rtl"
PACKAGES = ("dpu_isa_pkg.sv", "dpu_regs_pkg.sv")


def top_parameters(cfg: HwConfig) -> dict[str, int | str]:
    """`dpu_top`'s parameters for `cfg`, as Verilator -G / yosys chparam values."""
    return {
        "Rows": cfg.rows,
        "Cols": cfg.cols,
        "InpEntries": cfg.inp_entries,
        "WgtEntries": cfg.wgt_entries,
        "AccEntries": cfg.acc_entries,
        "OutEntries": cfg.out_entries,
        "ParEntries": cfg.par_entries,
        "QueueDepth": cfg.queue_depth,
        "ComputeInFlight": COMPUTE_IN_FLIGHT,
        "AxiDataBits": cfg.axi_data_bits,
        "AxiAddrBits": cfg.axi_addr_bits,
        "MaxBurstBeats": cfg.max_burst_beats,
        "ConfigFingerprint": f"64'h{fingerprint_value(cfg.fingerprint):016x}",
    }


def rtl_files() -> list[Path]:
    """Every RTL source of the DPU, packages first (the order tools must read them in)."""
    modules = sorted(p for p in RTL_DIR.glob("dpu_*.sv") if p.name not in PACKAGES)
    return [RTL_DIR / p for p in PACKAGES] + modules
