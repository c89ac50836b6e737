"""The numpy executor of CPU subgraphs (host/cpu_ops.py) against onnxruntime, op by op.

Each case is a one-node ONNX model built with onnx.helper, run by onnxruntime (graph
optimizations off, as the Runner runs CPU subgraphs) and by the executor after lowering
(compiler/cpu_lower.py) and a trip through the stored form. Results must be equal, bit for
bit, where onnxruntime computes exactly: QuantizeLinear and DequantizeLinear (one float32
division or product, then rounding half to even: tested at ties and their neighbours, and
at saturation), data movement, Relu and the other piecewise-linear ops, and the four
arithmetic ops (IEEE float32, correctly rounded). The transcendental ops are the exception,
with a tolerance stated where they are tested: onnxruntime (MLAS) computes exp, tanh and the
logistic function with its own polynomial and rational approximations, numpy with its own;
both are within a few float32 ulp of the true value, not of each other bit for bit.

Then whole programs: the CPU subgraphs of the digits CNN and of a zoo model through the
executor, equal to onnxruntime on the same subgraph; a program whose CPU part has an op the
executor lacks (kept as ONNX, refused for a board, and named where onnxruntime is missing);
and damaged stored forms.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dpukit.compiler.compile import compile_model
from dpukit.compiler.cpu_lower import lower_cpu_part
from dpukit.compiler.frontend import value_types
from dpukit.compiler.program import Program
from dpukit.errors import CompileError, ExecutionError, ProgramError
from dpukit.host import cpu_ops
from dpukit.host.cpu import cpu_graph_nodes, load_cpu_subgraph
from dpukit.models import zoo
from dpukit.models.digits import load_digits_split
from dpukit.quantize import quantize_model

EPS32 = float(np.finfo(np.float32).eps)


def _session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def both(op: str, args: list, *, consts=(), opset: int = 17, out=None, **attrs):
    """(onnxruntime's, the executor's) output of one `op` node on `args` (arrays by input
    position; None leaves an optional input out). Positions in `consts` are initializers,
    the others graph inputs; `out` is the output's dtype (default: the first input's)."""
    names = ["" if a is None else f"in{k}" for k, a in enumerate(args)]
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(op, names, ["out"], name="node", **attrs)
    inits = [numpy_helper.from_array(args[k], f"in{k}") for k in consts]
    feeds = {f"in{k}": a for k, a in enumerate(args) if a is not None and k not in consts}
    graph = helper.make_graph(
        [node],
        "one_node",
        [helper.make_tensor_value_info(n, _elem(a.dtype), a.shape) for n, a in feeds.items()],
        [helper.make_tensor_value_info("out", _elem(out or args[0].dtype), None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    want = _session(model).run(None, feeds)[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    part = lower_cpu_part(
        list(model.graph.node),
        list(feeds),
        ["out"],
        {f"in{k}": args[k] for k in consts},
        value_types(inferred),
        opset,
    )
    assert not part.unsupported, part.unsupported
    graph = cpu_ops.decode(cpu_ops.encode(part.graph))
    (got,) = graph.run(feeds)
    return want, got


def exact(op: str, args: list, **kw) -> np.ndarray:
    want, got = both(op, args, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    np.testing.assert_array_equal(got, want)
    return got


@pytest.fixture
def rng() -> np.random.Generator:
    """Each test's own random values, the same whatever ran before it."""
    return np.random.default_rng(0)


# -- QuantizeLinear and DequantizeLinear ----------------------------------------------------


def _ties(rng, scale: np.ndarray, shape, broadcast=()) -> np.ndarray:
    """Values (k + 0.5) * scale, half of them moved one ulp up or down: where dividing and
    multiplying by 1/scale round apart, and round-half-even decides."""
    k = rng.integers(-300, 300, shape).astype(np.float32)
    s = scale.reshape(broadcast) if broadcast else scale
    x = ((k + np.float32(0.5)) * s).astype(np.float32)
    step = rng.choice(np.array([-np.inf, np.nan, np.inf], np.float32), shape)
    moved = np.nextafter(x, step)
    return np.where(np.isnan(step), x, moved).astype(np.float32)


@pytest.mark.parametrize("dtype, zp", [(np.int8, -5), (np.uint8, 130), (np.int8, 0)])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 15, 17, 33, 1000, 4099])  # vector and tail paths
def test_quantize_rounds_ties_as_onnxruntime(dtype, zp, n, rng) -> None:
    """onnxruntime divides by the scale (x * (1/scale) differs at about 1 in 20 of these)."""
    for scale in rng.uniform(1e-3, 0.7, 3).astype(np.float32):
        x = _ties(rng, scale, (n,))
        exact("QuantizeLinear", [x, scale, np.array(zp, dtype)], consts=(1, 2), out=dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantize_saturates(dtype) -> None:
    big = np.float32(3e38)
    x = np.array(
        [-np.inf, -big, -1e9, -1000.5, -128.5, -127.5, -0.0, 0.0, 126.5, 127.5, 255.5, 1e9, big,
         np.inf] * 3,
        np.float32,
    )  # fmt: skip
    for scale, zp in ((1.0, 0), (0.5, 3), (1e-30, 100), (1e30, -1)):
        zp = np.array(zp if dtype == np.int8 else abs(zp), dtype)
        exact("QuantizeLinear", [x, np.float32(scale), zp], consts=(1, 2), out=dtype)


@pytest.mark.parametrize(
    "shape, axis",
    [((2, 5, 3, 3), 1), ((7, 4), 0), ((3, 6), -1), ((2, 3, 4), 2), ((1, 9, 4, 6), -3)],
)
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantize_and_dequantize_per_axis(shape, axis, dtype, rng) -> None:
    c = shape[axis]
    scale = rng.uniform(1e-3, 0.1, c).astype(np.float32)
    zp = rng.integers(0, 100, c).astype(dtype)
    bshape = [1] * len(shape)
    bshape[axis] = c
    x = _ties(rng, scale, shape, bshape)
    q = exact("QuantizeLinear", [x, scale, zp], consts=(1, 2), out=dtype, axis=axis)
    exact("DequantizeLinear", [q, scale, zp], consts=(1, 2), out=np.float32, axis=axis)


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
def test_quantize_and_dequantize_at_each_opset(opset, rng) -> None:
    """The zero point left out (uint8 0); a scale of shape [1], as the quantizer writes
    biases' (per tensor for onnxruntime)."""
    scale = np.float32(0.037)
    x = _ties(rng, scale, (4, 9))
    exact("QuantizeLinear", [x, scale], consts=(1,), out=np.uint8, opset=opset)
    if opset >= 13:
        exact("QuantizeLinear", [x, np.array([scale]), np.array([7], np.int8)], consts=(1, 2),
              out=np.int8, opset=opset)  # fmt: skip
    for dtype, lo, hi in ((np.int8, -128, 128), (np.uint8, 0, 256), (np.int32, -(2**31), 2**31)):
        q = rng.integers(lo, hi, (3, 11), dtype=dtype)
        zp = np.array(0 if dtype == np.int32 else lo + 3, dtype)
        exact("DequantizeLinear", [q, scale, zp], consts=(1, 2), out=np.float32, opset=opset)
        exact("DequantizeLinear", [q, np.float32(1e-3)], consts=(1,), out=np.float32, opset=opset)


def test_quantize_output_dtype_attribute(rng) -> None:
    """Opset 21: the output type from `output_dtype` when there is no zero point."""
    x = _ties(rng, np.float32(0.1), (20,))
    exact("QuantizeLinear", [x, np.float32(0.1)], consts=(1,), out=np.int8, opset=21,
          output_dtype=TensorProto.INT8)  # fmt: skip


# -- Softmax, Sigmoid, Tanh: the transcendental ops -------------------------------------------


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 values lie between a and b (0: equal)."""

    def ordinal(v):
        i = v.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordinal(a) - ordinal(b))


def close_in_ulps(op: str, args: list, ulps: int, **kw) -> None:
    """Softmax: within `ulps` float32 ulp of each other (measured: up to 5, from MLAS's exp,
    its summation order and its product by 1/sum), or both below float32's smallest normal
    number, where the ulp is no longer relative (exp(-100) is subnormal for numpy, 0 for
    MLAS)."""
    want, got = both(op, args, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape
    tiny = np.finfo(np.float32).tiny
    ok = (_ulps(got, want) <= ulps) | ((np.abs(got) < tiny) & (np.abs(want) < tiny))
    assert ok.all(), (got[~ok], want[~ok])


def _logits(rng, shape) -> np.ndarray:
    x = rng.normal(0, 4, shape).astype(np.float32)
    x.reshape(-1)[::7] *= 25  # spreads of 100 and more: exp underflows
    return x


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -2])
def test_softmax(opset, axis, rng) -> None:
    close_in_ulps("Softmax", [_logits(rng, (3, 10, 4))], 8, opset=opset, axis=axis)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_before_opset_13_takes_the_trailing_dims_as_a_row(axis, rng) -> None:
    close_in_ulps("Softmax", [_logits(rng, (3, 5, 4))], 8, opset=11, axis=axis)
    close_in_ulps("Softmax", [np.full((2, 6), 3.0, np.float32)], 8, opset=11)  # all ties


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_sigmoid_and_tanh(op, rng) -> None:
    """Within 4 float32 ulp of 1.0 (4.8e-7), absolute: MLAS's rational approximations are
    accurate to about 1.4e-7 absolute, not relative (its Sigmoid is 0 below -16.6, where
    the true value is 6e-8); numpy's exp and tanh are within an ulp of the true value.
    Measured on this grid: 1.4e-7 (Sigmoid), 3e-7 (Tanh, 4 ulp)."""
    x = np.concatenate(
        [np.linspace(-30, 30, 60001), rng.normal(0, 3, 5000), [0.0, -0.0, 1e-30, 88.0, -88.0]]
    ).astype(np.float32)
    want, got = both(op, [x])
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * EPS32)


# -- data movement ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.uint8])
def test_pad_constant(dtype, rng) -> None:
    x = rng.integers(0, 100, (1, 3, 5, 4)).astype(dtype)
    value = np.array(7, dtype)
    for pads in ([0, 0, 1, 2, 0, 0, 3, 0], [0, 1, 0, 0, 0, 0, 2, 1], [0, 0, -1, 1, 0, 0, 2, -2]):
        exact("Pad", [x, np.array(pads, np.int64), value], consts=(1, 2))
        exact("Pad", [x, np.array(pads, np.int64)], consts=(1,))  # constant 0
    # opset 18: pads for the axes listed (negative ones count from the end)
    exact("Pad", [x, np.array([1, 0, 2, 3], np.int64), value, np.array([2, -1], np.int64)],
          consts=(1, 2, 3), opset=18)  # fmt: skip
    if dtype == np.float32:  # before opset 11: pads and value are attributes, floats only
        exact("Pad", [x], opset=10, pads=[0, 1, 1, 0, 0, 0, 2, 1], value=5.0)


@pytest.mark.parametrize("mode", ["edge", "reflect"])
def test_pad_edge_and_reflect(mode, rng) -> None:
    x = rng.normal(0, 1, (2, 3, 5, 4)).astype(np.float32)
    for pads in ([0, 0, 1, 2, 0, 0, 3, 0], [1, 2, 4, 3, 1, 0, 0, 3]):
        exact("Pad", [x, np.array(pads, np.int64)], consts=(1,), mode=mode)


def test_pad_as_the_compiler_stacks_input_rows(rng) -> None:
    """The front end's Pad of a quantized image by its zero point, read by Slice and Concat
    (compiler/frontend.py, _stacked_conv)."""
    x = rng.integers(0, 256, (1, 3, 16, 16)).astype(np.uint8)
    padded = exact("Pad", [x, np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64), np.uint8(128)],
                   consts=(1, 2))  # fmt: skip
    i64 = [np.array(v, np.int64) for v in ([2, 3], [2, 1])]  # axes (rows, columns), steps
    parts = [
        exact(
            "Slice", [padded, np.array([ky, 0]), np.array([ky + 15, 20]), *i64], consts=(1, 2, 3, 4)
        )
        for ky in range(3)
    ]
    exact("Concat", parts, axis=1)


def test_slice_clamps_as_onnx(rng) -> None:
    """Starts and ends past either end, negative ones, negative steps, INT32 and INT64
    extremes (an end of INT_MAX runs to the end in the step's direction, for onnxruntime)."""
    x = rng.normal(0, 1, (5, 6, 7)).astype(np.float32)
    big = np.iinfo(np.int64)
    ends_pool = [-10, -7, -6, -1, 0, 1, 3, 6, 7, 10, big.max, big.min, 2**31 - 1, -(2**31)]
    for _ in range(200):
        axes = rng.choice([0, 1, 2, -1, -2, -3], rng.integers(1, 3), replace=False)
        if len({a % 3 for a in axes}) != len(axes):
            continue
        starts = rng.choice(ends_pool, len(axes))
        ends = rng.choice(ends_pool, len(axes))
        steps = rng.choice([-3, -2, -1, 1, 2, 3], len(axes))
        ints = [np.array(v, np.int64) for v in (starts, ends, axes, steps)]
        exact("Slice", [x, *ints], consts=(1, 2, 3, 4))
    # without axes and steps; before opset 10, as attributes
    exact("Slice", [x, np.array([1, -5], np.int64), np.array([4, 100], np.int64)], consts=(1, 2))
    exact("Slice", [x], opset=9, starts=[1, -5], ends=[4, 100], axes=[0, 2])


def test_concat_reshape_transpose_flatten(rng) -> None:
    x = rng.normal(0, 1, (2, 3, 4)).astype(np.float32)
    exact("Concat", [x, x[:, :1], x[:, :2]], axis=-2)
    exact("Concat", [x.astype(np.int8)], axis=0)
    for shape in ([0, -1], [-1, 4], [2, 0, 2, 2], [24], [0, 0, 4], [4, 3, 2]):
        exact("Reshape", [x, np.array(shape, np.int64)], consts=(1,))
    exact("Reshape", [x, np.array([3, 8], np.int64)], consts=(1,), opset=14, allowzero=1)
    exact("Transpose", [x])
    exact("Transpose", [x], perm=[1, 2, 0])
    for axis in (0, 1, 2, 3, -1, -3):
        exact("Flatten", [x], axis=axis)
    exact("Identity", [x.astype(np.uint8)])


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_and_unsqueeze(opset, rng) -> None:
    x = rng.normal(0, 1, (1, 3, 1, 4)).astype(np.float32)

    def axes_of(op, axes):
        if opset < 13:
            return exact(op, [x], opset=opset, axes=axes)
        return exact(op, [x, np.array(axes, np.int64)], consts=(1,), opset=opset)

    axes_of("Squeeze", [0, -2])
    axes_of("Squeeze", [2])
    axes_of("Unsqueeze", [0, -1])
    axes_of("Unsqueeze", [1, 5, 3])
    if opset >= 13:
        exact("Squeeze", [x], opset=opset)  # every dim of 1


def test_shape_and_gather(rng) -> None:
    """The shape arithmetic of exported models: Shape, Gather (negative indices too)."""
    x = rng.normal(0, 1, (2, 3, 4, 5)).astype(np.float32)
    exact("Shape", [x], out=np.int64)
    exact("Shape", [x], out=np.int64, opset=15, start=1, end=-1)
    exact("Gather", [x, np.array([2, -1, 0], np.int64)], consts=(1,), axis=2)
    exact("Gather", [x, np.array([[1, 0], [-2, 1]], np.int32)], consts=(1,), axis=-4)
    exact("Gather", [np.array([7, 8, 9], np.int64), np.array(-1, np.int64)], consts=(1,))


# -- piecewise-linear activations, arithmetic, casts ----------------------------------------------

_GRID = np.concatenate(
    [np.linspace(-10, 10, 4001), [0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38, 6.0, -3.0, 3.0]]
).astype(np.float32)


def test_piecewise_linear_activations(rng) -> None:
    x = _GRID
    exact("Relu", [x])
    exact("Relu", [rng.integers(-128, 128, 50).astype(np.int8)], opset=14)
    exact("LeakyRelu", [x])
    exact("LeakyRelu", [x], alpha=0.37)
    exact("HardSigmoid", [x])
    exact("HardSigmoid", [x], alpha=0.3, beta=0.6)
    exact("HardSwish", [x], opset=14)


def test_clip(rng) -> None:
    x = _GRID
    lo, hi = np.float32(-1.5), np.float32(6.0)
    exact("Clip", [x, lo, hi], consts=(1, 2))
    exact("Clip", [x, lo], consts=(1,))
    exact("Clip", [x, None, hi], consts=(2,))
    exact("Clip", [x])
    exact("Clip", [x, hi, lo], consts=(1, 2))  # min > max: every value is max
    exact("Clip", [x], opset=6, min=-1.5, max=6.0)
    q = rng.integers(-128, 128, 100).astype(np.int8)
    exact("Clip", [q, np.int8(-5), np.int8(100)], consts=(1, 2), opset=13)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic_broadcasts(op, rng) -> None:
    shapes = [((2, 3, 4), (3, 1)), ((1,), (2, 3)), ((2, 1, 4), (1, 3, 1)), ((), (5,))]
    for a_shape, b_shape in shapes:
        a = rng.normal(0, 10, a_shape).astype(np.float32)
        b = rng.normal(0, 10, b_shape).astype(np.float32)
        exact(op, [a, b])
        exact(op, [a, b], consts=(1,))
    for dtype in (np.int32, np.int64):  # Div truncates toward zero
        a = rng.integers(-50, 50, (4, 6)).astype(dtype)
        b = rng.choice([-7, -3, -1, 1, 2, 5], (1, 6)).astype(dtype)
        exact(op, [a, b])


def test_cast() -> None:
    x = np.array([-3.7, -2.5, -1.0, -0.0, 0.0, 0.4, 2.5, 3.5, 100.9, 127.0], np.float32)
    for to, dtype in ((TensorProto.INT8, np.int8), (TensorProto.INT32, np.int32),
                      (TensorProto.INT64, np.int64), (TensorProto.DOUBLE, np.float64),
                      (TensorProto.BOOL, np.bool_), (TensorProto.FLOAT, np.float32)):  # fmt: skip
        exact("Cast", [x], out=dtype, to=to)
    exact("Cast", [np.abs(x)], out=np.uint8, to=TensorProto.UINT8)
    exact("Cast", [np.array([2**24 + 1, -(2**40) - 1, 7], np.int64)], out=np.float32, to=1)
    exact("Cast", [np.array([1e-46, 1.0000001, 3.4e38], np.float64)], out=np.float32, to=1)
    exact("Cast", [np.array([True, False])], out=np.float32, to=1)


# -- the stored form ------------------------------------------------------------------------


def _graph() -> cpu_ops.CpuGraph:
    """A small graph with constants of several dtypes and attributes of every kind."""
    return cpu_ops.CpuGraph(
        17,
        [cpu_ops.ValueInfo("x", "float32", (1, 3, None))],
        [cpu_ops.ValueInfo("y", "int8", (1, 3, 4))],
        [
            cpu_ops.Node("LeakyRelu", "act", ["x"], ["a"], {"alpha": 0.1}),
            cpu_ops.Node("Pad", "pad", ["a", "pads", ""], ["p"], {"mode": "constant"}),
            cpu_ops.Node("Transpose", "t", ["p"], ["t"], {"perm": [0, 1, 2]}),
            cpu_ops.Node("QuantizeLinear", "q", ["t", "scale", "zp"], ["y"], {"axis": 1}),
        ],
        {
            "pads": np.array([0, 0, 1, 0, 0, 1], np.int64),
            "scale": np.array([0.5, 0.25, 0.125], np.float32),
            "zp": np.array([1, -2, 3], np.int8),
        },
    )


def test_stored_form_round_trip(rng) -> None:
    graph = _graph()
    data = cpu_ops.encode(graph)
    again = cpu_ops.decode(data)
    assert (again.opset, again.inputs, again.outputs, again.nodes) == (
        graph.opset, graph.inputs, graph.outputs, graph.nodes,
    )  # fmt: skip
    assert again.constants.keys() == graph.constants.keys()
    for name, value in graph.constants.items():
        assert again.constants[name].dtype == value.dtype
        np.testing.assert_array_equal(again.constants[name], value)
    assert cpu_ops.encode(again) == data  # deterministic
    x = rng.normal(0, 1, (1, 3, 2)).astype(np.float32)
    (y,) = again.run({"x": x})
    assert y.dtype == np.int8 and y.shape == (1, 3, 4)
    np.testing.assert_array_equal(y, graph.run({"x": x})[0])
    assert again.ops() == ["LeakyRelu", "Pad", "Transpose", "QuantizeLinear"]


def _edit_json(edit):
    """The stored form of _graph() with its JSON edited by `edit`."""

    def damage(data: bytes) -> bytes:
        head_len = int.from_bytes(data[12:16], "little")
        doc = json.loads(data[16 : 16 + head_len])
        edit(doc)
        head = json.dumps(doc).encode()
        return data[:12] + len(head).to_bytes(4, "little") + head + data[16 + head_len :]

    return damage


def _set_node(key, value):
    return _edit_json(lambda doc: doc["nodes"][1].__setitem__(key, value))


DAMAGED = [
    ("empty", lambda d: b"", "bad magic"),
    ("onnx", lambda d: helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString(),
     "magic"),
    ("future-version", lambda d: d[:8] + (99).to_bytes(4, "little") + d[12:], "version 99"),
    ("json-past-end", lambda d: d[:12] + (10**6).to_bytes(4, "little") + d[16:], "runs past"),
    ("json-cut", lambda d: d[:12] + (20).to_bytes(4, "little") + d[16:], "not valid"),
    ("blob-cut", lambda d: d[:-3], "runs past the blob"),
    ("blob-extra", lambda d: d + b"\0", "end at byte"),
    ("unknown-op", _set_node("op_type", "Erf"), "Erf"),
    ("unknown-attr", _set_node("attrs", {"mode": "constant", "secret": 1}), "secret"),
    ("attr-type", _set_node("attrs", {"mode": 3}), "mode"),
    ("pad-mode", _set_node("attrs", {"mode": "wrap"}), "wrap"),
    ("reads-unknown", _set_node("inputs", ["nope", "pads"]), "nope"),
    ("too-many-inputs", _set_node("inputs", ["a", "pads", "", "", "", ""]), "inputs"),
    ("second-output", _set_node("outputs", ["p", "p2"]), "one output"),
    ("dtype", _edit_json(lambda doc: doc["constants"][0].__setitem__("dtype", "object")), "object"),
    ("shape", _edit_json(lambda doc: doc["constants"][0].__setitem__("shape", [-1])), "shape"),
    ("offset", _edit_json(lambda doc: doc["constants"][1].__setitem__("offset", 0)), "offset"),
    ("huge-constant", _edit_json(lambda doc: doc["constants"][2].__setitem__("shape", [2**40] * 2)),
     "runs past"),
    ("output-unmade", _edit_json(lambda doc: doc["outputs"][0].__setitem__("name", "z")), "'z'"),
    ("missing-key", _edit_json(lambda doc: doc.pop("nodes")), "nodes"),
    ("opset", _edit_json(lambda doc: doc.__setitem__("opset", "17")), "opset"),
]  # fmt: skip


@pytest.mark.parametrize("damage, mention", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_stored_form_is_refused(damage, mention) -> None:
    with pytest.raises(cpu_ops.FormatError) as exc:
        cpu_ops.decode(damage(cpu_ops.encode(_graph())))
    assert mention in str(exc.value), exc.value


def test_a_failing_node_is_named() -> None:
    graph = _graph()
    graph.constants["pads"] = np.array([0, 0, -9, 0, 0, 1], np.int64)  # crops more than there is
    with pytest.raises(cpu_ops.OpError, match="node 'pad' \\(Pad\\)"):
        graph.run({"x": np.zeros((1, 3, 2), np.float32)})


# -- whole programs -----------------------------------------------------------------------


def _onnx_of(graph: cpu_ops.CpuGraph) -> bytes:
    """The ONNX model a stored graph stands for, for onnxruntime: made from the stored form
    alone, so a node or attribute the lowering lost or changed shows up as a difference."""
    nodes = [
        helper.make_node(n.op_type, n.inputs, n.outputs, n.name, **n.attrs) for n in graph.nodes
    ]

    def info(v: cpu_ops.ValueInfo):
        return helper.make_tensor_value_info(v.name, _elem(v.dtype), v.shape)

    model = helper.make_model(
        helper.make_graph(
            nodes, "cpu", [info(v) for v in graph.inputs], [info(v) for v in graph.outputs],
            [numpy_helper.from_array(a, n) for n, a in graph.constants.items()],
        ),
        opset_imports=[helper.make_opsetid("", graph.opset)],
    )  # fmt: skip
    model.ir_version = 8
    return model.SerializeToString()


def _feeds(graph: cpu_ops.CpuGraph, images: np.ndarray, rng) -> list[dict]:
    """Inputs for a CPU subgraph: the images for a graph input, random values over the whole
    range of a quantized tensor the DPU wrote."""
    feeds = []
    for b in range(len(images)):
        feed = {}
        for v in graph.inputs:
            if v.dtype == "float32":
                feed[v.name] = images[b : b + 1]
            else:
                info = np.iinfo(v.dtype)
                feed[v.name] = rng.integers(info.min, info.max + 1, v.shape, dtype=v.dtype)
        feeds.append(feed)
    return feeds


def _check_program_cpu_parts(program: Program, images: np.ndarray, softmax_steps: int = 0):
    """Every CPU subgraph is a numpy one and gives onnxruntime's outputs; after a Softmax
    (then quantized), outputs may differ by one quantization step where the softmax lies
    within its few ulp of a rounding boundary, in at most `softmax_steps` elements."""
    cpu = [sg for sg in program.subgraphs if sg.device == "CPU"]
    assert cpu and all(sg.kind == "numpy" for sg in cpu), [(sg.name, sg.kind) for sg in cpu]
    for sg in cpu:
        graph = cpu_ops.decode(sg.payload)
        session = _session(_onnx_of(graph))
        loaded = load_cpu_subgraph(program, sg)
        off = 0
        for feed in _feeds(graph, images, np.random.default_rng(0)):
            want = session.run(sg.outputs, feed)
            got = loaded.run(feed)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype and g.shape == w.shape
                if "Softmax" in sg.ops:
                    step = float(graph.constants[graph.nodes[-1].inputs[1]])
                    assert np.abs(g.astype(np.float64) - w).max() <= step * 1.001
                    off += int((g != w).sum())
                else:
                    np.testing.assert_array_equal(g, w)
        assert off <= softmax_steps, off


def test_digits_cnn_cpu_subgraphs_match_onnxruntime(digits_qdq: Path) -> None:
    program = compile_model(digits_qdq, "pynq-z2")
    x = load_digits_split()[2][:20]
    _check_program_cpu_parts(program, x)
    assert program.subgraphs[0].ops == ["QuantizeLinear", "Pad", "Slice", "Concat"]


def test_digits_cnn_with_softmax_cpu_subgraphs(digits_float: Path, tmp_path: Path) -> None:
    model = onnx.load(digits_float)
    g = model.graph
    g.node.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
    g.output[0].name = "probs"
    x_train, _, x_test, _ = load_digits_split()
    path = quantize_model(model, tmp_path / "softmax.onnx", x_train[:200], per_channel=True)
    program = compile_model(path, "pynq-z2")
    assert "Softmax" in program.subgraphs[-1].ops
    _check_program_cpu_parts(program, x_test[:50], softmax_steps=5)


@pytest.mark.parametrize("name", ["mlp", "pools_concat"])
def test_zoo_cpu_subgraphs_match_onnxruntime(quantized_zoo, name: str) -> None:
    program = compile_model(quantized_zoo(name, True, "uint8"), "sim-small")
    model, shape = zoo.MODELS[name]()
    _check_program_cpu_parts(program, zoo.calibration_data(shape, n=5, seed=2))


def _conv_model(head=(), x: str = "input", tail=(), out: str = "yf") -> onnx.ModelProto:
    """A 1x1 conv the DPU runs between host nodes: `head` makes `x` from "input" (4 channels
    of 4x4), `tail` makes `out` from "yf", the dequantized conv output."""
    node = helper.make_node
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.float32(0.05), "s"),
        numpy_helper.from_array(np.int8(0), "zp"),
        numpy_helper.from_array(rng.integers(-60, 61, (4, 4, 1, 1)).astype(np.int8), "w"),
        numpy_helper.from_array(np.float32(0.01), "ws"),
    ]
    nodes = [
        *head,
        node("QuantizeLinear", [x, "s", "zp"], ["xq"], name="q_in"),
        node("DequantizeLinear", ["xq", "s", "zp"], ["xf"], name="dq_in"),
        node("DequantizeLinear", ["w", "ws", "zp"], ["wf"], name="dq_w"),
        node("Conv", ["xf", "wf"], ["y"], name="conv", kernel_shape=[1, 1]),
        node("QuantizeLinear", ["y", "s", "zp"], ["yq"], name="q_conv"),
        node("DequantizeLinear", ["yq", "s", "zp"], ["yf"], name="dq_conv"),
        *tail,
    ]
    graph = helper.make_graph(
        nodes, "conv_between_host_nodes",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4, 4, 4])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_constant_nodes_are_constants_of_the_part(rng) -> None:
    """A CPU node reading a Constant node's output: the part holds the value (the front end
    leaves Constant nodes out of the parts; they were once taken for inputs nothing made)."""
    node = helper.make_node
    head = [
        node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2.0))),
        node("Mul", ["input", "two"], ["doubled"]),
    ]
    tail = [
        node("Constant", [], ["half"], value_floats=[0.5]),
        node("Mul", ["yf", "half"], ["out"]),
    ]
    program = compile_model(_conv_model(head, "doubled", tail, "out"), "sim-small")
    first, last = program.subgraphs[0], program.subgraphs[-1]
    assert (first.inputs, last.inputs) == (["input"], ["yq"])
    assert cpu_ops.decode(first.payload).constants["two"] == np.float32(2.0)
    np.testing.assert_array_equal(cpu_ops.decode(last.payload).constants["half"], [0.5])
    _check_program_cpu_parts(program, rng.normal(0, 1, (3, 4, 4, 4)).astype(np.float32))


# -- an op the executor lacks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def erf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1x1 conv on the DPU, then Erf (which the executor lacks) on the host."""
    path = tmp_path_factory.mktemp("erf") / "erf.onnx"
    erf = helper.make_node("Erf", ["yf"], ["out"], name="erf")
    onnx.save(_conv_model(tail=[erf], out="out"), path)
    return path


def test_unsupported_op_keeps_the_part_as_onnx(erf_model: Path, tmp_path: Path, rng) -> None:
    program = compile_model(erf_model, "sim-small")
    host = program.subgraphs[-1]
    assert (host.kind, host.ops) == ("onnx", ["DequantizeLinear", "Erf"])
    assert len(host.unsupported) == 1 and "Erf (node 'erf')" in host.unsupported[0]
    assert program.subgraphs[0].kind == "numpy"
    path = tmp_path / "erf.dpu"
    program.save(path)
    loaded = Program.load(path)
    assert loaded == program
    assert [n.op_type for n in cpu_graph_nodes(loaded.subgraphs[-1])] == ["DequantizeLinear", "Erf"]
    # with onnxruntime at hand it runs there: Erf of the dequantized values
    yq = rng.integers(-128, 128, (1, 4, 4, 4)).astype(np.int8)
    (out,) = load_cpu_subgraph(loaded, loaded.subgraphs[-1]).run({"yq": yq})
    want = _session(loaded.subgraphs[-1].payload).run(None, {"yq": yq})[0]
    np.testing.assert_array_equal(out, want)


def test_board_compile_names_the_unsupported_op(erf_model: Path) -> None:
    with pytest.raises(CompileError) as exc:
        compile_model(erf_model, "sim-small", board=True)
    msg = str(exc.value)
    assert "subgraph_2_cpu" in msg and "Erf" in msg and "erf" in msg, msg


_BOARD_PYTHON = """
import sys
sys.modules["onnx"] = None          # what a PYNQ image lacks: importing them fails
sys.modules["onnxruntime"] = None
import numpy as np
from dpukit.compiler.program import Program
from dpukit.host.cpu import load_cpu_subgraph
from dpukit.errors import ProgramError
program = Program.load(sys.argv[1])
for sg in program.subgraphs:
    if sg.device != "CPU":
        continue
    try:
        cpu = load_cpu_subgraph(program, sg)
    except ProgramError as exc:
        print("ProgramError:", exc)
        continue
    feed = {n: np.zeros(program.value_type(n)[1], program.value_type(n)[0]) for n in sg.inputs}
    print(sg.name, [(o.dtype.name, list(o.shape)) for o in cpu.run(feed)])
"""


def _without_onnx(program_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _BOARD_PYTHON, str(program_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_onnxruntime_the_missing_op_is_named(erf_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "erf.dpu"
    compile_model(erf_model, "sim-small").save(path)
    out = _without_onnx(path)
    assert "subgraph_0_cpu [('int8', [1, 4, 4, 4])]" in out, out  # the numpy one runs
    (line,) = [ln for ln in out.splitlines() if ln.startswith("ProgramError")]
    assert "subgraph_2_cpu" in line and "onnxruntime" in line and "Erf (node 'erf')" in line


def test_numpy_subgraphs_run_without_onnx(quantized_zoo, tmp_path: Path) -> None:
    path = tmp_path / "pools_concat.dpu"
    compile_model(quantized_zoo("pools_concat", True, "int8"), "sim-small").save(path)
    out = _without_onnx(path)
    assert "ProgramError" not in out and "subgraph_0_cpu" in out and "subgraph_2_cpu" in out, out


# -- damaged numpy payloads in a program -----------------------------------------------------


@pytest.fixture(scope="module")
def mlp(quantized_zoo) -> Program:
    return compile_model(quantized_zoo("mlp", True, "int8"), "sim-small")


PROGRAM_DAMAGE = [
    (
        "garbage",
        lambda g, data: np.random.default_rng(0).bytes(len(data)),
        ("subgraph_0_cpu", "bad magic"),
    ),
    ("cut", lambda g, data: data[: len(data) // 2], ("subgraph_0_cpu", "damaged")),
    ("other-ops", lambda g, data: cpu_ops.encode(_graph()), ("subgraph_0_cpu", "LeakyRelu")),
]


@pytest.mark.parametrize(
    "damage, mentions", [c[1:] for c in PROGRAM_DAMAGE], ids=[c[0] for c in PROGRAM_DAMAGE]
)
def test_damaged_numpy_payload_is_a_program_error(mlp: Program, tmp_path, damage, mentions):
    bad = copy.deepcopy(mlp)
    sg = bad.subgraphs[0]
    sg.payload = damage(cpu_ops.decode(sg.payload), sg.payload)
    path = tmp_path / "bad.dpu"
    bad.save(path)
    with pytest.raises(ProgramError) as exc:
        Program.load(path)
    for mention in mentions:
        assert mention in str(exc.value), exc.value
    with pytest.raises(ProgramError):  # a Program made in memory is checked when loaded to run
        load_cpu_subgraph(bad, sg)


def test_numpy_subgraph_declaring_other_types_is_a_program_error(mlp: Program) -> None:
    bad = copy.deepcopy(mlp)
    sg = bad.subgraphs[0]
    graph = cpu_ops.decode(sg.payload)
    (out,) = graph.outputs
    graph.outputs = [cpu_ops.ValueInfo(out.name, "uint8", out.shape)]
    sg.payload = cpu_ops.encode(graph)
    with pytest.raises(ProgramError, match="subgraph_0_cpu.*uint8.*int8"):
        load_cpu_subgraph(bad, sg)


def test_numpy_subgraph_making_another_type_fails_when_run(mlp: Program) -> None:
    """The graph declares int8 but its zero point makes uint8: caught at the output."""
    bad = copy.deepcopy(mlp)
    sg = bad.subgraphs[0]
    graph = cpu_ops.decode(sg.payload)
    q = graph.nodes[-1]
    graph.constants[q.inputs[2]] = graph.constants[q.inputs[2]].astype(np.uint8)
    sg.payload = cpu_ops.encode(graph)
    cpu = load_cpu_subgraph(bad, sg)
    with pytest.raises(ExecutionError, match="subgraph_0_cpu.*made.*uint8.*header says int8"):
        cpu.run({"input": np.zeros((1, 64), np.float32)})
