"""The golden model's fast paths give exactly what instruction-by-instruction execution gives.

Merging GEMM groups into one product reads weights from the LOADs that filled WGT and
applies each group's result at its own place; with `merge_gemms=False` every group runs on
its own from the WGT buffer as it is at that moment. The whole DRAM image must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.host.runner import create_runner
from dpukit.models import zoo


def _dram_after(program, x: np.ndarray, merge: bool, tamper=None) -> np.ndarray:
    """The DRAM image after a run, followed by the on-chip buffers' final contents."""
    runner = create_runner(program)
    runner.dpu = GoldenDPU(load_config(program.config["name"]), merge_gemms=merge)
    runner.run({"input": x})
    if tamper is not None:  # the host rewrites part of the constants, then runs again
        tamper(runner.dram)
        runner.run({"input": x})
    dpu = runner.dpu
    buffers = [b.view(np.uint8).ravel() for b in (dpu.inp, dpu.wgt, dpu.acc, dpu.out, dpu.par)]
    return np.concatenate([runner.dram, *buffers])


@pytest.mark.parametrize("config", ["sim-small", "pynq-z2"])
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_merged_gemms_equal_one_group_at_a_time(quantized_zoo, name: str, config: str) -> None:
    program = compile_model(quantized_zoo(name, True, "int8"), config)
    shape = program.inputs[0].shape
    x = zoo.calibration_data(shape, n=1, seed=3)
    merged = _dram_after(program, x, merge=True)
    plain = _dram_after(program, x, merge=False)
    np.testing.assert_array_equal(merged, plain)
    assert merged[: program.const_base].any(), "the run wrote no activations"


def test_changed_weights_in_dram_are_used(quantized_zoo) -> None:
    program = compile_model(quantized_zoo("residual_block", False, "int8"), "sim-small")
    x = zoo.calibration_data(program.inputs[0].shape, n=1, seed=4)
    rng = np.random.default_rng(0)
    noise = rng.integers(-3, 4, len(program.const)).astype(np.int8)

    def tamper(dram: np.ndarray) -> None:
        const = dram[program.const_base :].view(np.int8)
        const[:] = np.clip(const.astype(np.int16) + noise, -127, 127).astype(np.int8)

    before = _dram_after(program, x, merge=True)
    merged = _dram_after(program, x, merge=True, tamper=tamper)
    plain = _dram_after(program, x, merge=False, tamper=tamper)
    np.testing.assert_array_equal(merged, plain)
    assert not np.array_equal(merged[: program.const_base], before[: program.const_base])
