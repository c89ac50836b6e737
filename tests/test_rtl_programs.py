"""Whole programs through the board driver on the virtual board (the RTL) against the golden model.

Models compiled by the real compiler run on both backends through the Runner with the same
inputs. Acceptance (issue 3): every byte the DPU leaves in DRAM (outputs and every
intermediate activation) equals the golden model's; the RTL's performance counters equal
the golden model's activity counts; the RTL's cycle count is within 5 % of the cycle model.
"""

from __future__ import annotations

import numpy as np
import pytest

from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import Activity
from dpukit.compiler.hwconfig import load_config
from dpukit.host.runner import Runner
from dpukit.models import zoo
from dpukit.models.digits import load_digits_split

MODELS = ("digits", "residual_block", "depthwise_separable", "mlp")
# ultra96v2 too: its 16 x 24 array, wider than tall, keeps several weight-tile reads in
# flight in the compute engine (dpu_compute's WGT read comes Cols - 3 cycles after the take)
CONFIGS = ("sim-small", "pynq-z2", "ultra96v2")
CYCLE_TOLERANCE = 0.05


def _inputs(name: str, program) -> dict[str, np.ndarray]:
    spec = program.inputs[0]
    if name == "digits":
        x = load_digits_split()[2][:2]  # two held-out images
    else:
        x = zoo.calibration_data(tuple(spec.shape), n=2, seed=7)
    return {spec.name: x.astype(spec.dtype)}


def _counted(act: Activity) -> dict[str, object]:
    """The activity the DPU counts in hardware (everything but cycles)."""
    return {
        "mac_cycles": act.mac_cycles,
        "macs": act.macs,
        "dram_read_beats": act.dram_read_beats,
        "dram_write_beats": act.dram_write_beats,
        "buffer_reads": act.buffer_reads,
        "buffer_writes": act.buffer_writes,
    }


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", MODELS)
def test_program_on_rtl_matches_golden(name: str, config: str, quantized_zoo, digits_qdq) -> None:
    path = digits_qdq if name == "digits" else quantized_zoo(name, True, "int8")
    program = compile_model(path, config)
    cfg = load_config(config)
    inputs = _inputs(name, program)

    golden = Runner(program, "golden", cfg)
    rtl = Runner(program, "rtl", cfg)
    want = golden.run(inputs)
    got = rtl.run(inputs)

    for out in want.outputs:
        np.testing.assert_array_equal(got.outputs[out], want.outputs[out])
    # every byte of the data window after the last image: activations of every layer
    np.testing.assert_array_equal(rtl.dram, golden.dram)

    assert len(got.per_subgraph) == len(want.per_subgraph) >= 1
    for mine, model in zip(got.per_subgraph, want.per_subgraph, strict=True):
        assert _counted(mine) == _counted(model)
        assert abs(mine.cycles - model.cycles) <= CYCLE_TOLERANCE * model.cycles, (
            f"RTL {mine.cycles} cycles vs cycle model {model.cycles}"
        )
