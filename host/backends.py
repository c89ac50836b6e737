"""The Runner's DPU backends, by name. Light to import: the CLI lists them, and each
backend's own imports (Verilator's library, pynq) happen only when it is chosen."""

from __future__ import annotations

BACKENDS = ("golden", "rtl", "pynq")
# What a backend's DPU cycles are: counted by the hardware, or the cycle model's. The words
# every table, report and JSON file uses.
CYCLES_KIND = {
    "golden": "modeled (cycle model)",
    "rtl": "measured (RTL counters in Verilator)",
    "pynq": "measured (the DPU's counters)",
}
BACKEND_DOCS = {
    "golden": "the bit-exact golden model (numpy; modeled cycles)",
    "rtl": "the virtual board: the DPU's RTL in Verilator behind the board driver (measured "
    "counters)",
    "pynq": "a PYNQ board: the overlay's DPU behind the same driver (run on the board)",
}


def create_dpu(backend: str, cfg, *, overlay=None):
    """The DPU of `backend` for hardware config `cfg`; `overlay` is the .bit file (pynq)."""
    from dpukit.errors import ExecutionError

    if backend == "golden":
        from dpukit.compiler.golden import GoldenDPU

        return GoldenDPU(cfg)
    if backend == "rtl":
        from dpukit.host.board_backend import rtl_dpu

        return rtl_dpu(cfg)
    if backend == "pynq":
        from dpukit.host.board_backend import BoardDPU
        from dpukit.host.pynq_board import PynqBoard

        if overlay is None:
            raise ExecutionError(
                "the pynq backend needs the overlay: give its .bit file (the .hwh beside it)"
            )
        return BoardDPU(PynqBoard(overlay, cfg=cfg), cfg, owns_board=True)
    raise ExecutionError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
