"""`dpukit verify`: each outcome on a case whose answer is known without the code under test.

- ties: an average pool whose scales make exact x.5 values common; the DPU's outputs are
  checked against round-half-even computed by hand, and verify must call the 1-LSB
  differences from onnxruntime ties (never more of them than the hand-counted exact ties);
- the end-to-end bound: a 1x1 conv after that pool, whose bound is worked out by hand;
- bugs: a program with one layer's requantization multipliers corrupted must be flagged at
  that layer and no other, through the API and the CLI (exit 1, the layer named); a host
  quantization that differs from the model's must be flagged at its tensor;
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
from dpukit.host.runner import create_runner
from dpukit.models import zoo
from dpukit.verify import verify_model

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
    sub = onnx.load_from_string(cpu.payload)
    q = next(n for n in sub.graph.node if n.op_type == "QuantizeLinear")
    scale = next(t for t in sub.graph.initializer if t.name == q.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 1.5, scale.name))
    cpu.payload = sub.SerializeToString()
    report = verify_model(path, {"input": x}, program=program)
    assert q.output[0] in report.host_tensors_differ
    assert not report.ok and q.output[0] in " ".join(report.bugs)


@pytest.mark.slow
def test_rtl_backend_is_checked_against_golden(quantized_zoo) -> None:
    path = quantized_zoo("mlp")
    x = zoo.calibration_data((1, 64), n=2, seed=4)
    report = verify_model(path, {"input": x}, config="sim-small", backend="rtl")
    assert report.ok, report.bugs
    assert report.layers and all(c.rtl_vs_golden_differ == 0 for c in report.layers)
