"""The golden model against onnxruntime on the same QDQ models: compile, run, compare.

The reference is onnxruntime evaluating the QDQ graph as written (DequantizeLinear -> float
op -> QuantizeLinear, graph optimizations off), which is what the QDQ format means. With
the default session options onnxruntime first fuses the graph into its integer kernels
(QLinearConv, QGemm, ...), and on x86 CPUs with AVX2/AVX-512 but no VNNI those use
`vpmaddubsw`, whose int16 pair sums saturate: on such a CPU the default session is off by
up to 24 LSB from its own unfused result on these models (onnxruntime issue #14642; the
session option `session.x64quantprecision` is the upstream workaround).

Float32 evaluation breaks exact rounding ties (x.5 before QuantizeLinear) and near-ties
either way, while the DPU computes them exactly and rounds half to even; 2x2 average
pooling makes exact ties common, and one flipped tie can grow to several LSB a few layers
later. So every comparison here is `dpukit.verify`'s, through `verified.assert_verified`:
each layer bit-exact except at rounding ties, end to end within what ties explain, and the
top class equal wherever ties cannot reach it. A share of identical outputs is never
asserted: it depends on which ties the weights and inputs happen to make.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from verified import assert_verified

from dpukit.compiler.compile import compile_model
from dpukit.host import cpu_ops
from dpukit.host.runner import create_runner
from dpukit.models import zoo
from dpukit.models.digits import load_digits_split
from dpukit.quantize import quantize_model
from dpukit.verify import dpu_tensors

MAIN_QUANT = [(False, "int8"), (True, "uint8")]
EXTRA_QUANT = [(True, "int8"), (False, "uint8")]  # on sim-small only
CASES = [
    (name, config, pc, act)
    for name in sorted(zoo.MODELS)
    for config in ("sim-small", "pynq-z2")
    for pc, act in MAIN_QUANT
] + [(name, "sim-small", pc, act) for name in sorted(zoo.MODELS) for pc, act in EXTRA_QUANT]


def _id(case: tuple) -> str:
    name, config, pc, act = case
    return f"{name}-{config}-{'pc' if pc else 'pt'}-{act}"


def _inputs(model: onnx.ModelProto, n: int = 3, seed: int = 0) -> np.ndarray:
    """``n`` samples uniform in [0, 1), the calibration distribution."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return zoo.calibration_data(tuple(d.dim_value for d in dims), n=n, seed=seed)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_golden_matches_onnxruntime(quantized_zoo, case: tuple) -> None:
    name, config, per_channel, activation_type = case
    path = quantized_zoo(name, per_channel, activation_type)
    assert_verified(path, _inputs(onnx.load(path), seed=11), config)


# --- Flatten of a spatial tensor feeding a Gemm -----------------------------------------------


def _conv_flatten_gemm() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Conv-Relu on 4x4x3 -> 8 channels, Flatten of the 8x4x4 map, Gemm 128 -> 10."""
    shape = (1, 3, 4, 4)
    g = zoo._GraphBuilder(seed=3)
    x = g.relu(g.conv("input", 3, 8, 3))
    x = g.node("Flatten", [x], axis=1)
    x = g.gemm(x, 8 * 4 * 4, 10)
    return g.model("conv_flatten_gemm", shape, x), shape


def test_flatten_of_a_feature_map_then_gemm_is_exact(tmp_path: Path) -> None:
    """A Gemm's weights must follow the DPU's HWC byte order of a flattened CHW map."""
    model, shape = _conv_flatten_gemm()
    path = quantize_model(model, tmp_path / "cfg.onnx", zoo.calibration_data(shape))
    assert_verified(path, zoo.calibration_data(shape, n=3, seed=11), "sim-small")


# --- layers whose input window is larger than the INP buffer ----------------------------------


def _big_windows() -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A 7x7 conv with dilation 4 (a 25x25 window per output) and a global average pool
    over 24x24: on sim-small (512 INP entries per half) neither window fits whole."""
    shape = (1, 3, 24, 24)
    g = zoo._GraphBuilder(seed=5)
    x = g.relu(g.conv("input", 3, 6, 7, dilation=4))
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    x = g.gemm(x, 6, 4)
    return g.model("big_windows", shape, x), shape


def test_windows_larger_than_the_input_buffer_compile_and_are_exact(tmp_path: Path) -> None:
    """Any layer that fits in DRAM compiles: kernel rows are split over several loads."""
    model, shape = _big_windows()
    path = quantize_model(model, tmp_path / "big.onnx", zoo.calibration_data(shape))
    program = compile_model(path, "sim-small")
    tiles = [layer["tile"] for sg in program.subgraphs for layer in sg.layers]
    assert sum("kernel rows" in t for t in tiles) == 2, tiles
    assert_verified(path, zoo.calibration_data(shape, n=2, seed=11), "sim-small")


# --- a Relu that stays a node of its own ------------------------------------------------------


def test_relu_whose_input_is_shared_runs_on_the_dpu_with_its_clamp(tmp_path: Path) -> None:
    """Conv output feeding both a Relu and an Add: onnxruntime keeps DQ -> Relu -> Q."""
    shape = (1, 3, 8, 8)
    g = zoo._GraphBuilder(seed=7)
    conv = g.conv("input", 3, 8, 3)
    out = g.node("Add", [g.relu(conv), conv])
    model = g.model("shared_relu", shape, out)
    path = quantize_model(model, tmp_path / "relu.onnx", zoo.calibration_data(shape))
    qdq = onnx.load(path)
    # Give the Relu's output a zero point of 0, so its int8 range also holds negative
    # values: saturation no longer does the Relu, the DPU's clamp must.
    relu = next(n for n in qdq.graph.node if n.op_type == "Relu")
    q = next(n for n in qdq.graph.node if relu.output[0] in n.input)
    zp = next(t for t in qdq.graph.initializer if t.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.zeros((), np.int8), zp.name))
    onnx.save(qdq, path)
    program = compile_model(path, "sim-small")
    kinds = [layer["kind"] for sg in program.subgraphs for layer in sg.layers]
    assert kinds == ["Conv", "Relu", "Add"]
    assert_verified(path, zoo.calibration_data(shape, n=3, seed=11), "sim-small")


# --- the digits CNN ---------------------------------------------------------------------------


def test_digits_cnn_on_the_held_out_set(digits_qdq: Path) -> None:
    _, _, x_test, y_test = load_digits_split()
    program = compile_model(digits_qdq, "pynq-z2")
    report = assert_verified(digits_qdq, x_test, program=program)
    (logits,) = report.outputs
    assert logits.top1_agree is not None and report.samples == len(y_test)
    golden = create_runner(program).run({"input": x_test}).outputs["logits"]
    assert float(np.mean(golden.argmax(axis=1) == y_test)) > 0.9


# --- a CPU layer after the DPU ----------------------------------------------------------------


def _with_softmax(float_model: Path) -> onnx.ModelProto:
    """The float digits CNN with a Softmax over its logits appended (as
    ``train_digits_cnn(softmax=True)`` exports it, without training again)."""
    model = onnx.load(float_model)
    logits = model.graph.output[0]
    model.graph.node.append(
        onnx.helper.make_node("Softmax", [logits.name], ["probs"], name="softmax", axis=-1)
    )
    probs = onnx.helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["N", 10])
    del model.graph.output[:]
    model.graph.output.append(probs)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_softmax_runs_on_the_cpu_after_the_dpu(digits_float: Path, tmp_path: Path) -> None:
    x_train, _, x_test, _ = load_digits_split()
    path = quantize_model(
        _with_softmax(digits_float), tmp_path / "digits_softmax.onnx", x_train, per_channel=True
    )
    program = compile_model(path, "pynq-z2")
    devices = [sg.device for sg in program.subgraphs]
    assert "DPU" in devices and devices[-1] == "CPU", devices
    last_cpu_ops = program.subgraphs[-1].ops
    assert "Softmax" in last_cpu_ops, last_cpu_ops
    dpu_layers = [
        layer["kind"] for sg in program.subgraphs if sg.device == "DPU" for layer in sg.layers
    ]
    assert "Conv" in dpu_layers and "Gemm" in dpu_layers, dpu_layers

    x = x_test[:100]
    assert_verified(path, x, program=program)  # the DPU layers, up to the logits
    # The CPU's softmax, against numpy on the golden model's own logits: its input is the
    # quantized logits the DPU wrote, its output quantized as the model says.
    runner = create_runner(program)
    cpu = cpu_ops.decode(program.subgraphs[-1].payload)
    inits = cpu.constants
    dq = next(n for n in cpu.nodes if n.op_type == "DequantizeLinear")
    q = next(n for n in cpu.nodes if n.op_type == "QuantizeLinear")
    for b in range(len(x)):
        probs = runner.run({"input": x[b : b + 1]}).outputs["probs"]
        logits_q = dpu_tensors(runner, program)[dq.inputs[0]].astype(np.float64)
        logits = (logits_q - inits[dq.inputs[2]]) * inits[dq.inputs[1]]
        e = np.exp(logits - logits.max())
        scale, zp = float(inits[q.inputs[1]]), inits[q.inputs[2]]
        info = np.iinfo(zp.dtype)
        want_q = np.clip(np.rint(e / e.sum() / scale) + int(zp), info.min, info.max)
        got_q = np.rint(probs / scale) + int(zp)
        assert np.abs(got_q - want_q).max() <= 1, f"sample {b}: {got_q} != {want_q}"
