"""The demo digits CNN, the model zoo, and float -> QDQ quantization."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from dpukit.errors import ModelError
from dpukit.models import zoo
from dpukit.models.digits import (
    digits_model,
    evaluate,
    load_digits_split,
    train_digits_cnn,
)
from dpukit.quantize import quantize_model

CONFIGS = [(pc, act) for pc in (False, True) for act in ("int8", "uint8")]


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """Run a batch-1 model over every sample of ``x`` and stack the outputs."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


# --- digits CNN -------------------------------------------------------------------------------


def test_digits_split_is_fixed_and_scaled() -> None:
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(10))
    np.testing.assert_array_equal(load_digits_split()[3], y_test)


def test_digits_cnn_reaches_96_percent(digits_float: Path) -> None:
    _, _, x_test, y_test = load_digits_split()
    assert evaluate(digits_float, x_test, y_test) >= 0.96


def test_digits_cnn_graph(digits_float: Path) -> None:
    model = onnx.load(digits_float)
    expected = "Conv Relu Conv Relu MaxPool Conv Relu Flatten Gemm".split()
    assert _ops(model) == expected
    assert model.opset_import[0].version == 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == "input"
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, 8, 8]
    assert [o.name for o in model.graph.output] == ["logits"]


def test_digits_model_is_cached(digits_float: Path) -> None:
    mtime = digits_float.stat().st_mtime_ns
    assert digits_model(digits_float.parent) == digits_float
    assert digits_float.stat().st_mtime_ns == mtime


def test_digits_training_is_deterministic_and_softmax_option_works() -> None:
    a = train_digits_cnn(epochs=1, softmax=True)
    b = train_digits_cnn(epochs=1, softmax=True)
    for ta, tb in zip(a.graph.initializer, b.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(ta), numpy_helper.to_array(tb))
    assert _ops(a)[-1] == "Softmax" and [o.name for o in a.graph.output] == ["probs"]
    x = load_digits_split()[2][:5]
    session = ort.InferenceSession(a.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


_TRAIN_WITH_ANOTHER_KERNEL = """
import sys
from threadpoolctl import threadpool_info
from dpukit.models.digits import train_digits_cnn
model = train_digits_cnn()
print(*sorted({i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"}),
      file=sys.stderr)
sys.stdout.buffer.write(model.SerializeToString())
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OpenBLAS kernel names are x86's")
def test_digits_training_is_the_same_with_another_blas_kernel(digits_float: Path) -> None:
    """BLAS kernels differ by CPU; the trained model must not (models/digits.py). Nehalem's
    SSE kernels run on every x86-64 CPU, and differ from what any AVX machine picks."""
    env = {**os.environ, "OPENBLAS_CORETYPE": "Nehalem"}
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN_WITH_ANOTHER_KERNEL],
        env=env,
        capture_output=True,
        timeout=600,
        check=True,
    )
    assert proc.stderr.decode().split() == ["Nehalem"], proc.stderr
    other = onnx.load_from_string(proc.stdout)
    ours = onnx.load(digits_float)
    for ta, tb in zip(ours.graph.initializer, other.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(ta), numpy_helper.to_array(tb))


@pytest.mark.parametrize("per_channel,activation_type", CONFIGS)
def test_quantized_digits_keeps_accuracy(
    digits_float: Path, tmp_path: Path, per_channel: bool, activation_type: str
) -> None:
    x_train, _, x_test, y_test = load_digits_split()
    qdq = quantize_model(
        digits_float,
        tmp_path / "digits.qdq.onnx",
        x_train[:100],  # 100 samples: 32-sample batches plus a remainder
        per_channel=per_channel,
        activation_type=activation_type,
    )
    assert evaluate(qdq, x_test, y_test) >= evaluate(digits_float, x_test, y_test) - 0.02


# --- zoo --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_model_is_valid_and_well_scaled(name: str) -> None:
    model, shape = zoo.MODELS[name]()
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert tuple(d.dim_value for d in dims) == shape and shape[0] == 1
    assert model.opset_import[0].version == 17
    out = _run(model, zoo.calibration_data(shape, n=4))
    assert np.isfinite(out).all() and 0.1 < np.abs(out).max() < 100
    again, _ = zoo.MODELS[name]()
    assert again.SerializeToString() == model.SerializeToString()  # seeded


def test_conv_variants_covers_the_conv_attributes() -> None:
    model, _ = zoo.conv_variants()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in convs]
    weights = {t.name: t.dims for t in model.graph.initializer}
    assert {tuple(a["kernel_shape"]) for a in attrs} == {(1, 1), (3, 3), (5, 5)}
    assert [2, 2] in [a["strides"] for a in attrs] and [2, 2] in [a["dilations"] for a in attrs]
    assert any(a["pads"][:2] != a["pads"][2:] for a in attrs)  # asymmetric padding
    assert {len(n.input) for n in convs} == {2, 3}  # with and without bias
    assert {weights[n.input[1]][0] for n in convs} >= {5, 7, 13, 20}
    assert {"Relu", "Clip"} <= set(_ops(model))


def test_depthwise_separable_has_depthwise_and_grouped_convs() -> None:
    model, _ = zoo.depthwise_separable()
    groups = [
        onnx.helper.get_attribute_value(a)
        for n in model.graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "group"
    ]
    assert {16, 24, 2} <= set(groups)
    assert "BatchNormalization" in _ops(model)


def test_resnet18_topology() -> None:
    model, shape = zoo.resnet18(input_hw=32)
    ops = _ops(model)
    assert shape == (1, 3, 32, 32)
    assert ops.count("Conv") == 20 and ops.count("Add") == 8 and ops.count("Gemm") == 1
    assert _run(model, zoo.calibration_data(shape, n=1)).shape == (1, 1000)


def test_single_conv_is_conv_plus_relu() -> None:
    model, shape = zoo.single_conv(9, 3, 5, 3, stride=2, pad=1)
    assert shape == (1, 3, 9, 9) and _ops(model) == ["Conv", "Relu"]
    w, b = (numpy_helper.to_array(t) for t in model.graph.initializer)
    x = zoo.calibration_data(shape, n=1)
    xp = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    ref = np.zeros((5, 5, 5), np.float64)  # direct convolution, stride 2
    for oy in range(5):
        for ox in range(5):
            patch = xp[:, 2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3]
            ref[:, oy, ox] = np.tensordot(w, patch, axes=3) + b
    np.testing.assert_allclose(_run(model, x)[0], np.maximum(ref, 0), rtol=1e-5, atol=1e-5)


def test_calibration_data_is_seeded() -> None:
    a = zoo.calibration_data((1, 3, 16, 16), n=5, seed=3)
    assert a.shape == (5, 3, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, zoo.calibration_data((1, 3, 16, 16), n=5, seed=3))


@pytest.mark.parametrize("per_channel,activation_type", CONFIGS)
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_quantizes_close_to_float(
    quantized_zoo: Callable[..., Path], name: str, per_channel: bool, activation_type: str
) -> None:
    model, shape = zoo.MODELS[name]()
    path = quantized_zoo(name, per_channel, activation_type)
    qdq = onnx.load(path)
    ops = set(_ops(qdq))
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    zp_type = {"int8": np.int8, "uint8": np.uint8}[activation_type]
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear":
            assert inits[node.input[2]].dtype == zp_type
    x = zoo.calibration_data(shape, n=8, seed=1)  # not the calibration samples
    ref, got = _run(model, x).ravel(), _run(path, x).ravel()
    assert np.corrcoef(ref, got)[0, 1] > 0.9


# --- quantize_model errors and inputs ---------------------------------------------------------


def test_calibration_iterable_equals_array(tmp_path: Path) -> None:
    model, shape = zoo.conv_variants()
    data = zoo.calibration_data(shape, n=4)
    a = quantize_model(model, tmp_path / "a.onnx", data)
    b = quantize_model(model, tmp_path / "b.onnx", (data[i : i + 1] for i in range(4)))
    assert a.read_bytes() == b.read_bytes()


def test_quantize_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=r"nope\.onnx: no such model file"):
        quantize_model(missing, tmp_path / "q.onnx", np.zeros((1, 1, 8, 8), np.float32))


def test_quantize_garbage_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffthis is not a protobuf\xff" * 10)
    with pytest.raises(ModelError, match=r"garbage\.onnx: not a readable ONNX model"):
        quantize_model(garbage, tmp_path / "q.onnx", np.zeros((1, 1, 8, 8), np.float32))


def test_quantize_already_quantized(quantized_zoo: Callable[..., Path], tmp_path: Path) -> None:
    path = quantized_zoo("mlp", False, "int8")
    with pytest.raises(ModelError, match="already quantized.*pass the float model"):
        quantize_model(path, tmp_path / "q.onnx", zoo.calibration_data((1, 64)))


@pytest.mark.parametrize(
    "calibration", [np.empty((0, 3, 16, 16), np.float32), []], ids=["array", "list"]
)
def test_quantize_empty_calibration(tmp_path: Path, calibration: object) -> None:
    model, _ = zoo.conv_variants()
    with pytest.raises(ModelError, match="calibration data is empty"):
        quantize_model(model, tmp_path / "q.onnx", calibration)


def test_quantize_wrong_calibration_shape(tmp_path: Path) -> None:
    model, _ = zoo.conv_variants()
    with pytest.raises(ModelError, match=r"shape \[1, 3, 8, 8\] does not fit .*\[1, 3, 16, 16\]"):
        quantize_model(model, tmp_path / "q.onnx", np.zeros((2, 3, 8, 8), np.float32))
