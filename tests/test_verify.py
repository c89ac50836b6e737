"""`dpukit verify`: each outcome on a case whose answer is known without the code under test.

- ties: an average pool whose scales make exact x.5 values common; the DPU's outputs are
  checked against round-half-even computed by hand, and verify must call the 1-LSB
  differences from onnxruntime ties (never more of them than the hand-counted exact ties);
- the end-to-end bound: a 1x1 conv after that pool, whose bound is worked out by hand;
- float32's own error: large sums that cancel, where onnxruntime is off and the DPU rounds
  the exact value (worked out in integers here) right, are not called bugs;
- bugs: a program with one layer's requantization multipliers corrupted must be flagged at
  that layer and no other, through the API and the CLI (exit 1, the layer named), also when
  it is off by a single LSB; a host quantization, or a host layer between DPU layers, that
  differs from the model's must be flagged;
- models whose shape once hid layers from verify (unnamed nodes, an int8 graph input, a
  Flatten read through without a QuantizeLinear), and a program for another model;
- the RTL backend: checked against the golden model bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dpukit.compiler import isa
from dpukit.compiler.compile import compile_model
from dpukit.compiler.program import Program
from dpukit.errors import ModelError
from dpukit.host import cpu_ops
from dpukit.host.runner import create_runner
from dpukit.models import zoo
from dpukit.verify import top1_at_risk, verify_model

S = 0.1  # every activation scale: not a power of two, so float32 breaks exact ties
W_Q, W_S = 50, 0.02  # the 1x1 conv's int8 weight and its scale


def _qdq_model(with_conv: bool) -> onnx.ModelProto:
    """input [1,1,32,32] -Q-> x -DQ-> AveragePool 2x2/2 -Q-> p [-DQ-> Conv 1x1 -Q-> y] -DQ->.

    Written by hand (not by the quantizer) so every scale is the one chosen here."""
    inits = [
        numpy_helper.from_array(np.array(S, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["x"], name="quant_in"),
        helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["x_f"], name="dq_x"),
        helper.make_node(
            "AveragePool", ["x_f"], ["p_f"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("QuantizeLinear", ["p_f", "s", "zp"], ["p"], name="q_pool"),
    ]
    last = "p"
    if with_conv:
        inits += [
            numpy_helper.from_array(np.full((1, 1, 1, 1), W_Q, np.int8), "w"),
            numpy_helper.from_array(np.array(W_S, np.float32), "w_s"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", ["p", "s", "zp"], ["p_f2"], name="dq_p"),
            helper.make_node("DequantizeLinear", ["w", "w_s", "zp"], ["w_f"], name="dq_w"),
            helper.make_node("Conv", ["p_f2", "w_f"], ["y_f"], name="conv", kernel_shape=[1, 1]),
            helper.make_node("QuantizeLinear", ["y_f", "s", "zp"], ["y"], name="q_conv"),
        ]
        last = "y"
    nodes.append(helper.make_node("DequantizeLinear", [last, "s", "zp"], ["out"], name="dq_out"))
    graph = helper.make_graph(
        nodes,
        "ties",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _tie_inputs(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Inputs that quantize to known integers (k * S, k well inside int8), and those ints."""
    q = np.random.default_rng(5).integers(-60, 61, (n, 1, 32, 32))
    return (q * S).astype(np.float32), q


def _pool_by_hand(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 mean of integer windows, rounded half to even (the DPU's rounding), and where the
    mean is an exact tie."""
    sums = q.reshape(len(q), 1, 16, 2, 16, 2).sum(axis=(3, 5))
    return np.rint(sums / 4).astype(np.int64), sums % 4 == 2


def test_ties_are_told_from_bugs(tmp_path: Path) -> None:
    path = tmp_path / "ties.onnx"
    onnx.save(_qdq_model(with_conv=False), path)
    x, q = _tie_inputs()
    program = compile_model(path, "sim-small")
    pooled, exact_tie = _pool_by_hand(q)
    # the DPU rounds the exact mean half to even, as computed by hand
    golden = create_runner(program).run({"input": x}).outputs["out"]
    np.testing.assert_array_equal(np.rint(golden / S).astype(np.int64), pooled)

    report = verify_model(path, {"input": x}, program=program)
    (pool,) = report.layers
    assert pool.kind == "AveragePool" and pool.elements == pooled.size
    assert pool.away == 0 and report.ok, report.bugs
    # float32 evaluation breaks some exact ties, never anything else
    assert 1 <= pool.ties <= int(exact_tie.sum()), (pool.ties, int(exact_tie.sum()))
    assert pool.equal + pool.ties == pool.elements
    (out,) = report.outputs
    assert out.unit == "LSB" and out.max_diff == 1 and out.elements - out.equal == pool.ties


def test_end_to_end_bound_is_the_one_worked_out_by_hand(tmp_path: Path) -> None:
    """A flipped tie (1 LSB) through the 1x1 conv moves the exact value by |w| * s_w * S / S
    = 50 * 0.02 = 1.0 LSB, so it may move the output by floor(1.0) + 1 = 2 LSB at most; an
    element with no flip upstream may differ only at a tie of its own: 1 LSB."""
    path = tmp_path / "ties_conv.onnx"
    onnx.save(_qdq_model(with_conv=True), path)
    x, _ = _tie_inputs()
    report = verify_model(path, {"input": x}, config="sim-small")
    pool, conv = report.layers
    assert (pool.kind, conv.kind) == ("AveragePool", "Conv")
    assert pool.ties >= 1 and pool.e2e_differ == pool.ties  # the flips reach the pool's output
    assert conv.away == 0 and conv.e2e_unexplained == 0 and report.ok, report.bugs
    assert conv.e2e_bound_max == 2
    assert 1 <= conv.e2e_max_lsb <= 2


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    from dpukit.quantize import quantize_model

    model, shape = zoo.MODELS["residual_block"]()
    path = tmp_path_factory.mktemp("verify") / "residual.qdq.onnx"
    quantize_model(model, path, zoo.calibration_data(shape))
    return path, zoo.calibration_data(shape, n=2, seed=3)


def _corrupt_multipliers(program: Program, layer_index: int, factor: float) -> str:
    """Scale every requantization multiplier of one DPU layer in the program's constants;
    returns the layer's name. A PAR entry is int32 [bias x cols, multiplier x cols,
    shift x cols] (docs/isa.md); the layer's PAR LOADs say which entries are its own."""
    sg = next(s for s in program.subgraphs if s.device == "DPU")
    layer = sg.layers[layer_index]
    fields = isa.decode_array(sg.payload)
    span = slice(layer["first_instr"], layer["first_instr"] + layer["num_instrs"])
    par = (fields["op"][span] == isa.Opcode.LOAD) & (fields["buffer"][span] == isa.Buffer.PAR)
    c = program.config["cols"]
    firsts, counts = fields["dram_offset"][span][par], fields["x_size"][span][par]
    entries = {
        int(first) + k * 12 * c
        for first, count in zip(firsts, counts, strict=True)
        for k in range(int(count))
    }
    assert entries, f"layer {layer['name']} loads no requantization parameters"
    const = bytearray(program.const)
    for entry in sorted(entries):
        off = entry - program.const_base
        words = np.frombuffer(const, "<i4", count=3 * c, offset=off).copy()
        words[c : 2 * c] = np.round(words[c : 2 * c] * factor)
        const[off : off + 12 * c] = words.tobytes()
    program.const = bytes(const)
    return layer["name"]


def test_corrupted_multiplier_is_flagged_at_its_layer(residual, tmp_path: Path) -> None:
    path, x = residual
    program = compile_model(path, "sim-small")
    bad = _corrupt_multipliers(program, 2, 1.05)
    report = verify_model(path, {"input": x}, program=program)
    flagged = [c.layer for c in report.layers if c.away]
    assert flagged == [bad], flagged
    assert not report.ok and bad in report.bugs[0]
    for c in report.layers:  # layers after it read its wrong output and are still exact
        assert c.away == 0 or c.layer == bad
        assert c.e2e_unexplained == 0 or c.layer == bad
    # end to end too: nothing upstream differs, so its differences are beyond the bound
    assert next(c for c in report.layers if c.layer == bad).e2e_unexplained > 0

    # the same through the CLI: the report, then one error line naming the layer, exit 1
    dpu = tmp_path / "bad.dpu"
    program.save(dpu)
    out = tmp_path / "report.json"
    argv = ["verify", str(path), "--program", str(dpu), "--random", "2", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "dpukit.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and bad in line, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["ok"] is False and any(c["away"] for c in doc["layers"] if c["layer"] == bad)


def test_clean_program_passes_through_the_cli(residual, tmp_path: Path) -> None:
    path, _ = residual
    out = tmp_path / "report.json"
    argv = ["verify", str(path), "--config", "sim-small", "--random", "2", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "dpukit.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified:" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["samples"] == 2 and doc["config"] == "sim-small"
    assert {c["kind"] for c in doc["layers"]} >= {"Conv", "Add"}
    for c in doc["layers"]:
        assert c["away"] == 0 and c["equal"] + c["ties"] == c["elements"] > 0


def test_host_quantization_that_differs_is_flagged(residual) -> None:
    """The program's CPU subgraph quantizes the image with another scale than the model."""
    path, x = residual
    program = compile_model(path, "sim-small")
    cpu = program.subgraphs[0]
    assert cpu.device == "CPU"
    sub = cpu_ops.decode(cpu.payload)
    q = next(n for n in sub.nodes if n.op_type == "QuantizeLinear")
    sub.constants[q.inputs[1]] = sub.constants[q.inputs[1]] * np.float32(1.5)
    cpu.payload = cpu_ops.encode(sub)
    report = verify_model(path, {"input": x}, program=program)
    assert q.outputs[0] in report.host_tensors_differ
    assert not report.ok and q.outputs[0] in " ".join(report.bugs)


@pytest.mark.slow
def test_rtl_backend_is_checked_against_golden(quantized_zoo) -> None:
    path = quantized_zoo("mlp")
    x = zoo.calibration_data((1, 64), n=2, seed=4)
    report = verify_model(path, {"input": x}, config="sim-small", backend="rtl")
    assert report.ok, report.bugs
    assert report.layers and all(c.rtl_vs_golden_differ == 0 for c in report.layers)


def test_a_bug_of_one_lsb_is_not_taken_for_a_tie(residual) -> None:
    """Multipliers 0.3 % off move outputs of up to 127 LSB by less than 0.4 LSB: every wrong
    element is 1 LSB off, and it is still a bug, found at its layer."""
    path, x = residual
    program = compile_model(path, "sim-small")
    bad = _corrupt_multipliers(program, 1, 1.003)
    report = verify_model(path, {"input": x}, program=program)
    (layer,) = [c for c in report.layers if c.away]
    assert layer.layer == bad and layer.max_lsb == 1, (layer, report.bugs)


def test_top1_at_risk_by_hand() -> None:
    ref = np.array([[10, 7, 0], [10, 9, 0], [5, 5, 5]])
    bound = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    # row 0: 10 - 7 = 3 > 1 + 1: safe. row 1: 10 - 9 = 1 > 0: safe. row 2: a three-way tie
    assert top1_at_risk(ref, bound) == 1
    assert top1_at_risk(ref, bound + 1) == 3  # now 3 <= 2 + 2 and 1 <= 1 + 1 too


# --- hand-written QDQ models: every scale chosen here -----------------------------------------


class _Qdq:
    """A QDQ graph built node by node; ``named=False`` leaves every node unnamed."""

    def __init__(self, named: bool = True, seed: int = 0):
        self.nodes, self.inits, self.k, self.named = [], [], 0, named
        self.rng = np.random.default_rng(seed)

    def const(self, value) -> str:
        self.k += 1
        self.inits.append(numpy_helper.from_array(np.asarray(value), f"c{self.k}"))
        return f"c{self.k}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.k += 1
        name = {"name": f"{op.lower()}_{self.k}"} if self.named else {}
        self.nodes.append(helper.make_node(op, inputs, [f"t{self.k}"], **name, **attrs))
        return f"t{self.k}"

    def q(self, x: str, scale: float, zp: int = 0) -> str:
        return self.node(
            "QuantizeLinear", [x, self.const(np.float32(scale)), self.const(np.int8(zp))]
        )

    def dq(self, x: str, scale: float, zp: int = 0) -> str:
        return self.node(
            "DequantizeLinear", [x, self.const(np.float32(scale)), self.const(np.int8(zp))]
        )

    def requant(self, x: str, scale: float, zp: int = 0) -> str:
        return self.dq(self.q(x, scale, zp), scale, zp)

    def weights(self, w: np.ndarray, scale: float) -> str:
        return self.dq(self.const(np.asarray(w, np.int8)), scale)

    def conv1x1(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.integers(-60, 61, (cout, cin, 1, 1))
        return self.node("Conv", [x, self.weights(w, 0.01)], kernel_shape=[1, 1])

    def save(self, path: Path, inputs: list, out: str, out_shape: list[int]) -> Path:
        graph = helper.make_graph(
            self.nodes,
            "hand",
            inputs,
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)
        return path


def _image(shape=(1, 8, 4, 4)) -> list:
    return [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))]


def test_float32_error_of_onnxruntime_is_not_a_bug(tmp_path: Path) -> None:
    """A Gemm over 4096 products of about +-127 * 127 that cancel: onnxruntime's float32 sum
    is off by up to tenths of an LSB, so it rounds some elements the other way than the
    exact value, computed here in integers. The DPU rounds the exact value."""
    k, n = 4096, 16
    rng = np.random.default_rng(0)
    w = np.where(np.arange(k)[:, None] < k // 2, 127, -127) + rng.integers(-3, 4, (k, n))
    w = np.clip(w, -127, 127)
    m = _Qdq()
    y = m.node("Gemm", [m.requant("input", 0.01), m.weights(w, 0.01)])
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, k])]
    path = m.save(tmp_path / "cancel.onnx", inputs, m.requant(y, 0.02), [1, n])
    xq = rng.integers(120, 128, (8, k))
    exact = (xq @ w.astype(np.int64)) * (0.01 * 0.01 / 0.02)  # in output LSB
    program = compile_model(path, "sim-small")
    report = verify_model(path, {"input": (xq * 0.01).astype(np.float32)}, program=program)
    out = create_runner(program).run({"input": (xq * 0.01).astype(np.float32)}).outputs
    got = np.rint(next(iter(out.values())) / 0.02)
    np.testing.assert_array_equal(got, np.clip(np.rint(exact), -128, 127))
    (gemm,) = report.layers
    assert report.ok and gemm.away == 0, report.bugs
    assert gemm.float32_off > 0 and gemm.exact


def test_host_layer_between_dpu_layers_is_checked(tmp_path: Path) -> None:
    """DPU conv -> Sigmoid on the host -> DPU conv; the host's QuantizeLinear scale is then
    corrupted in the program: the host layer is flagged, the DPU layers are not."""
    m = _Qdq()
    y = m.requant(m.conv1x1(m.requant("input", 0.05), 8, 8), 0.07)
    s = m.requant(m.node("Sigmoid", [y]), 1 / 256, -128)
    path = m.save(
        tmp_path / "host.onnx", _image(), m.requant(m.conv1x1(s, 8, 8), 0.05), [1, 8, 4, 4]
    )
    x = np.random.default_rng(1).uniform(-1, 1, (2, 8, 4, 4)).astype(np.float32)
    clean = verify_model(path, {"input": x}, "sim-small")
    assert clean.ok and [c.device for c in clean.layers] == ["DPU", "CPU", "DPU"]
    program = compile_model(path, "sim-small")
    host = next(sg for sg in program.subgraphs if "Sigmoid" in sg.ops)
    sub = cpu_ops.decode(host.payload)
    q = next(n for n in sub.nodes if n.op_type == "QuantizeLinear")
    sub.constants[q.inputs[1]] = sub.constants[q.inputs[1]] * np.float32(1.5)
    host.payload = cpu_ops.encode(sub)
    report = verify_model(path, {"input": x}, program=program)
    assert [c.device for c in report.layers if c.away] == ["CPU"], report.bugs


def _seven_layers(m: _Qdq) -> str:
    """Conv, MaxPool, Relu, Add, Concat, Flatten, Gemm on [1, 3, 8, 8]."""
    w = m.rng.integers(-60, 61, (8, 3, 3, 3))
    y = m.requant(
        m.node("Conv", [m.requant("input", 0.05), m.weights(w, 0.01)], kernel_shape=[3, 3],
               pads=[1, 1, 1, 1]), 0.07)  # fmt: skip
    p = m.requant(m.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2]), 0.07)
    r = m.requant(m.node("Relu", [p]), 0.06)
    a = m.requant(m.node("Add", [r, p]), 0.09)
    c = m.requant(m.node("Concat", [a, p], axis=1), 0.09)
    f = m.requant(m.node("Flatten", [c], axis=1), 0.09)
    g = m.node("Gemm", [f, m.weights(m.rng.integers(-60, 61, (256, 10)), 0.01)])
    return m.requant(g, 0.2)


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_every_layer_is_checked_named_or_not(tmp_path: Path, named: bool) -> None:
    """Layers are found by the tensor they write, not by node names (which may be empty)."""
    m = _Qdq(named=named)
    path = m.save(tmp_path / "seven.onnx", _image((1, 3, 8, 8)), _seven_layers(m), [1, 10])
    program = compile_model(path, "sim-small")
    (dpu,) = [sg for sg in program.subgraphs if sg.device == "DPU"]
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    report = verify_model(path, {"input": x}, program=program)
    assert report.ok, report.bugs
    checked = {c.output for c in report.layers}
    assert checked >= {layer["output"] for layer in dpu.layers if layer["tile"] != "view"}
    bad = _corrupt_multipliers(program, 1, 1.3)  # the MaxPool
    report = verify_model(path, {"input": x}, program=program)
    assert [c.layer for c in report.layers if c.away] == [bad]


def test_int8_graph_input_and_a_flatten_read_through(tmp_path: Path) -> None:
    """An input the user quantizes (DQ reads the graph input) and DQ -> Flatten -> Gemm with
    no QuantizeLinear after the Flatten (the Gemm reads its input through the view)."""
    m = _Qdq()
    y = m.requant(m.conv1x1(m.dq("input", 0.05), 8, 8), 0.07)
    g = m.node(
        "Gemm",
        [m.node("Flatten", [y], axis=1), m.weights(m.rng.integers(-60, 61, (128, 10)), 0.01)],
    )
    inputs = [helper.make_tensor_value_info("input", TensorProto.INT8, [1, 8, 4, 4])]
    path = m.save(tmp_path / "int8.onnx", inputs, m.requant(g, 0.2), [1, 10])
    x = np.random.default_rng(3).integers(-128, 128, (3, 8, 4, 4)).astype(np.int8)
    report = verify_model(path, {"input": x}, "sim-small")
    assert report.ok and [c.kind for c in report.layers] == ["Conv", "Gemm"], report.bugs


@pytest.mark.parametrize("second_scale", [0.07, 0.05], ids=["same-grid", "another-grid"])
def test_relu_between_two_quantizations(tmp_path: Path, second_scale: float) -> None:
    """Conv -> Q -> DQ -> Relu -> Q: on the same grid twice the Relu joins the conv (one
    rounding); on another grid the model rounds twice and the Relu must stay a layer."""
    m = _Qdq()
    y = m.requant(m.conv1x1(m.requant("input", 0.05), 8, 8), 0.07)
    r = m.requant(m.node("Relu", [y]), second_scale)
    path = m.save(
        tmp_path / "relu.onnx", _image(), m.requant(m.conv1x1(r, 8, 8), 0.05), [1, 8, 4, 4]
    )
    x = np.random.default_rng(4).uniform(-1, 1, (3, 8, 4, 4)).astype(np.float32)
    report = verify_model(path, {"input": x}, "sim-small")
    assert report.ok, report.bugs
    kinds = [c.kind for c in report.layers]
    assert kinds == (["Conv", "Conv"] if second_scale == 0.07 else ["Conv", "Relu", "Conv"])
    assert all(c.e2e_bound_max is not None for c in report.layers)


def test_program_of_another_model_is_refused(residual, tmp_path: Path) -> None:
    """The same architecture with other weights and scales: not the model's program."""
    from dpukit.quantize import quantize_model

    path, x = residual
    model, shape = zoo.MODELS["residual_block"](seed=1)
    other = quantize_model(model, tmp_path / "other.qdq.onnx", zoo.calibration_data(shape))
    program = compile_model(other, "sim-small")
    with pytest.raises(ModelError, match="was not compiled from"):
        verify_model(path, {"input": x}, program=program)
    dpu = tmp_path / "other.dpu"
    program.save(dpu)
    proc = subprocess.run(
        [sys.executable, "-m", "dpukit.cli", "verify", str(path), "--program", str(dpu)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = proc.stderr.strip()
    assert proc.returncode == 1 and "\n" not in line and "was not compiled from" in line, line
