"""Per-layer activity: it partitions the program's totals, and counts what the layers do."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from dpukit.compiler.compile import compile_model
from dpukit.host.runner import create_runner
from dpukit.models import zoo


def test_layer_activity_adds_up_to_the_subgraph_totals(quantized_zoo) -> None:
    program = compile_model(quantized_zoo("residual_block", False, "int8"), "sim-small")
    runner = create_runner(program)
    result = runner.run({"input": zoo.calibration_data(program.inputs[0].shape, n=1)})
    total, layers = result.activity, [la.activity for la in result.per_layer]
    assert len(layers) == sum(len(sg.layers) for sg in program.subgraphs)
    assert sum(a.cycles for a in layers) == total.cycles - 1  # END's cycle is nobody's
    for field in ("macs", "mac_cycles", "dram_read_bytes", "dram_write_bytes"):
        assert sum(getattr(a, field) for a in layers) == getattr(total, field), field
    for buf in total.buffer_reads:
        assert sum(a.buffer_reads[buf] for a in layers) == total.buffer_reads[buf], buf
        assert sum(a.buffer_writes[buf] for a in layers) == total.buffer_writes[buf], buf
    for name, count in total.instructions.items():
        mine = sum(a.instructions.get(name, 0) for a in layers)
        assert mine == count - (name == "END"), name


def test_conv_layers_whose_channels_fill_the_array_issue_exactly_their_macs(quantized_zoo):
    """On sim-small (4x4) the residual block's convs have 16 and 32 channels: the array
    wastes no lane, so the MACs it issues are the convolution's own, counted from ONNX."""
    path = quantized_zoo("residual_block", False, "int8")
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output]
    }
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    expected = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[producers[node.input[1]].input[0]]  # int8 weights behind their DQ
            _, _, ho, wo = shapes[node.output[0]]
            co, cig, kh, kw = w.shape
            if cig % 4 == 0 and co % 4 == 0:
                expected[node.name] = ho * wo * co * cig * kh * kw
    program = compile_model(path, "sim-small")
    runner = create_runner(program)
    result = runner.run({"input": zoo.calibration_data(program.inputs[0].shape, n=1)})
    issued = {la.layer: la.activity.macs for la in result.per_layer}
    assert len(expected) >= 3
    for name, macs in expected.items():
        assert issued[name] == macs, name
