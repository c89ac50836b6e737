"""The bad-model battery (issue 8): every way a model can be wrong ends in dpukit's own error,
one line naming the file and the node or field, through `dpukit compile` and `dpukit quantize`
and through compile_model and quantize_model, within the time and memory bounds of
tests/bad_inputs.py (each case runs in a child process).

Three classes: symbolic sizes that used to compile as 1 (silently wrong results); models the
compiler used to tile until it was killed (runaways, held to a tighter time limit); and
models that compiled but failed in onnxruntime at `run` (invalid models). The models are
built here with onnx.helper, most of them one operator between the quantize/dequantize
pairs onnxruntime's quantizer writes, then broken on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from bad_inputs import SECONDS, Outcome, api, assert_user_error, cli
from onnx import TensorProto, helper, numpy_helper

from dpukit.cli import main
from dpukit.compiler.compile import compile_model
from dpukit.errors import ModelError
from dpukit.host.runner import create_runner
from dpukit.quantize import quantize_model

RUNAWAY_SECONDS = SECONDS  # a rejection takes a few seconds; a runaway ran for minutes, in GB


def qdq_model(
    shape: list,
    op: str = "Conv",
    *,
    cin: int | None = None,
    cout: int = 4,
    kernel: tuple[int, int] = (3, 3),
    opset: int = 17,
    **attrs,
) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> op -> QuantizeLinear -> DequantizeLinear -> y,
    int8, per-tensor scales; Conv and Gemm read int8 weights (cin = shape[1] input channels)
    through a DequantizeLinear. Nodes: x_q, x_dq, w_dq, my_<op>, o_q, o_dq."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="x_q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="x_dq"),
    ]
    inputs = ["xd"]
    if op in ("Conv", "Gemm"):
        cin = shape[1] if cin is None else cin
        w = np.ones((cout, cin, *kernel) if op == "Conv" else (cout, cin), np.int8)
        inits += [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
            numpy_helper.from_array(np.array(0, np.int8), "wzp"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wd"], name="w_dq"))
        inputs.append("wd")
    nodes += [
        helper.make_node(op, inputs, ["o"], name=f"my_{op.lower()}", **attrs),
        helper.make_node("QuantizeLinear", ["o", "s", "zp"], ["oq"], name="o_q"),
        helper.make_node("DequantizeLinear", ["oq", "s", "zp"], ["y"], name="o_dq"),
    ]
    rank = 2 if op == "Gemm" else len(shape)
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"y{i}" for i in range(rank)])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def float_model(shape: list, *, kernel: tuple[int, int] = (3, 3), opset: int = 17, **attrs):
    """x -> Conv (4 output channels, node my_conv) -> y in float32: what `quantize` takes."""
    w = numpy_helper.from_array(np.ones((4, 3, *kernel), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="my_conv", **attrs)],
        "bad_float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _changed(model: onnx.ModelProto, change: Callable[[onnx.ModelProto], object]):
    change(model)
    return model


def _cast_input(model: onnx.ModelProto, elem: int) -> onnx.ModelProto:
    """The graph input x becomes x_in of type `elem`, cast to float32 (node to_float)."""
    model.graph.input[0].name = "x_in"
    model.graph.input[0].type.tensor_type.elem_type = elem
    cast = helper.make_node("Cast", ["x_in"], ["x"], name="to_float", to=TensorProto.FLOAT)
    model.graph.node.insert(0, cast)
    return model


def _then(model: onnx.ModelProto, *nodes: onnx.NodeProto, elem: int = TensorProto.FLOAT):
    """`nodes` appended after the output y; the last one's output, of type `elem` and a size
    for onnx to infer, is the graph's output now."""
    model.graph.node.extend(nodes)
    out = model.graph.output[0]
    out.name = nodes[-1].output[0]
    out.type.tensor_type.elem_type = elem
    for k, d in enumerate(out.type.tensor_type.shape.dim):
        d.dim_param = f"out{k}"
    return model


def _as(elem: int, name: str, x: str = "y", y: str = "cast") -> onnx.NodeProto:
    return helper.make_node("Cast", [x], [y], name=name, to=elem)


def _float16_scale() -> onnx.ModelProto:
    """x -> Cast float16 -> QuantizeLinear/DequantizeLinear with a float16 scale (opset 19
    allows it; the DPU's requantization is defined on float32 scales) -> Cast -> y."""
    q = helper.make_node("QuantizeLinear", ["x16", "s16", "zp"], ["xq"], name="x_q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s16", "zp"], ["xd"], name="x_dq")
    graph = helper.make_graph(
        [
            _as(TensorProto.FLOAT16, "to_half", "x", "x16"),
            q,
            dq,
            _as(TensorProto.FLOAT, "back", "xd", "y"),
        ],
        "half_scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            numpy_helper.from_array(np.array(0.05, np.float16), "s16"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _int4_activations() -> onnx.ModelProto:
    """The input quantized to int4 (opset 21): the DPU computes with int8."""
    model = qdq_model([1, 3, 8, 8], opset=21)
    model.ir_version = 10
    zp4 = helper.make_tensor("zp4", TensorProto.INT4, [], [0])
    model.graph.initializer.append(zp4)
    for node in model.graph.node[:2]:  # x_q, x_dq
        node.input[2] = "zp4"
    return model


def _write_without_external_data(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (path.parent / "weights.bin").unlink()


# --- how a case runs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable[[], onnx.ModelProto]
    via: str  # "compile" or "quantize" (the CLI), "compile_model" or "quantize_model"
    mentions: tuple[str, ...]  # what the error line names besides the model file
    options: tuple[str, ...] = ()  # command-line options
    kwargs: str = ""  # keyword arguments, as Python source
    seconds: float = SECONDS
    write: Callable[[onnx.ModelProto, Path], None] = onnx.save


def _run(case: Case, path: Path) -> Outcome:
    out = path.with_suffix(".out")
    if case.via in ("compile", "quantize"):
        calibrate = ("--calib-random", "2") if case.via == "quantize" else ()
        return cli(case.via, path, "-o", out, *calibrate, *case.options, timeout=case.seconds)
    if case.via == "compile_model":
        code = f"""
            from dpukit.compiler.compile import compile_model
            compile_model({str(path)!r}{case.kwargs})
            """
    else:
        code = f"""
            import numpy as np
            from dpukit.quantize import quantize_model
            samples = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
            quantize_model({str(path)!r}, {str(out)!r}, samples{case.kwargs})
            """
    return api(code, timeout=case.seconds)


SYM = ["N", 3, "H", "W"]
SYMBOLIC = [
    Case("hw", lambda: qdq_model(SYM), "compile", ("'x'", "--input-shape x=1x3xHxW")),
    Case(
        "channels",
        lambda: qdq_model(["N", "C", 8, 8], cin=3),
        "compile_model",
        ("'x'", "input_shapes"),
    ),
    Case(
        "shape-against-a-fixed-dim",
        lambda: qdq_model(SYM),
        "compile",
        ("'x'", "1x4x8x8", "dim 1"),
        options=("--input-shape", "x=1x4x8x8"),
    ),
    Case(
        "shape-of-an-unknown-input",
        lambda: qdq_model(SYM),
        "compile_model",
        ("'image'", "inputs: x"),
        kwargs=", input_shapes={'image': (1, 3, 8, 8)}",
    ),
    Case(
        "shape-of-wrong-rank",
        lambda: qdq_model(SYM),
        "compile",
        ("'x'", "3 dims"),
        options=("--input-shape", "1x3x8"),
    ),
    Case(
        "zero-size-shape",
        lambda: qdq_model(SYM),
        "compile_model",
        ("'x'", ">= 1"),
        kwargs=", input_shapes={'x': (1, 3, 0, 8)}",
    ),
    Case(
        "quantize-random-calibration",
        lambda: float_model(SYM),
        "quantize",
        ("'x'", "--input-shape"),
    ),
    Case(
        "quantize-shape-of-an-unknown-input",
        lambda: float_model(SYM),
        "quantize",
        ("'image'", "inputs: x"),
        options=("--input-shape", "image=1x3x8x8"),
    ),
    Case(
        "quantize-shape-against-a-fixed-dim",
        lambda: float_model(SYM),
        "quantize_model",
        ("'x'", "dim 1"),
        kwargs=", input_shapes={'x': (1, 5, 8, 8)}",
    ),
    Case(
        "shape-given-twice",
        lambda: qdq_model(SYM),
        "compile",
        ("'x'", "twice"),
        options=("--input-shape", "1x3x8x8", "--input-shape", "x=1x3x8x8"),
    ),
]

RUNAWAYS = [
    Case(
        "input-100000x100000",
        lambda: qdq_model([1, 3, 100000, 100000]),
        "compile",
        ("my_conv", "100000x100000x3", "bytes"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(
        "input-shape-100000x100000",
        lambda: qdq_model([1, 16, "H", "W"]),
        "compile",
        ("my_conv", "100000x100000x16", "bytes"),
        options=("--input-shape", "x=1x16x100000x100000"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(  # 3 channels: the conv's padding would move to the host (kernel rows stacked)
        "pads-5000-on-an-image",
        lambda: qdq_model([1, 3, 8, 8], pads=[5000] * 4),
        "compile_model",
        ("my_conv", "pads 5000"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(
        "pads-5000",
        lambda: qdq_model([1, 16, 8, 8], pads=[5000, 0, 5000, 0]),
        "compile",
        ("my_conv", "pads 5000"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(
        "maxpool-pads-100",
        lambda: qdq_model([1, 16, 8, 8], "MaxPool", kernel_shape=[101, 101], pads=[100] * 4),
        "compile_model",
        ("my_maxpool", "pads 100"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(
        "20-million-channels",
        lambda: qdq_model([1, 20_000_000, 1, 1], "MaxPool", kernel_shape=[1, 1]),
        "compile",
        ("my_maxpool", "20000000 channels", "x_stride"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(  # within the data window, but 1.5 million steps of one channel each
        "maxpool-20000x20000",
        lambda: qdq_model([1, 1, 20000, 20000], "MaxPool", kernel_shape=[1, 1]),
        "compile_model",
        ("my_maxpool", "instructions"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(  # random calibration alone would take 21.6 GB
        "quantize-calibration-30000x30000",
        lambda: float_model(SYM),
        "quantize",
        ("30000", "bytes", "--calib-random"),
        options=("--input-shape", "x=1x3x30000x30000"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(  # activations past any data window, refused before calibrating on them
        "quantize_model-activations-60000x60000",
        lambda: float_model([1, 3, 60000, 60000]),
        "quantize_model",
        ("bytes at int8", "no config"),
        seconds=RUNAWAY_SECONDS,
    ),
    Case(  # sim-small's 4x4 array: 15,625 tiles of 64 pixels, 38 instructions each at least
        "conv-1000x1000-on-sim-small",
        lambda: qdq_model([1, 16, 1000, 1000], pads=[1] * 4),
        "compile",
        ("my_conv", "instructions"),
        options=("--config", "sim-small"),
        seconds=RUNAWAY_SECONDS,
    ),
]

RESHAPE_TO_192 = (  # the conv's output has 4x6x6 = 144 elements
    helper.make_node("Constant", [], ["to"], value=numpy_helper.from_array(np.array([1, 3, 8, 8]))),
    helper.make_node("Reshape", ["y", "to"], ["r"], name="my_reshape"),
)
RELU_BF16 = (
    _as(TensorProto.BFLOAT16, "to_bf16"),
    helper.make_node("Relu", ["cast"], ["r"], name="my_relu"),
    _as(TensorProto.FLOAT, "back", "r", "z"),
)
INVALID = [
    Case(
        "negative-pads",
        lambda: qdq_model([1, 3, 8, 8], pads=[-1] * 4),
        "compile",
        ("my_conv", "pads"),
    ),
    Case(
        "negative-maxpool-pads",
        lambda: qdq_model([1, 3, 8, 8], "MaxPool", kernel_shape=[3, 3], pads=[-2, 0, 0, 0]),
        "compile_model",
        ("my_maxpool", "pads"),
    ),
    Case(
        "kernel-larger-than-input",
        lambda: qdq_model([1, 3, 8, 8], kernel=(9, 9)),
        "compile",
        ("my_conv", "9x9 window"),
    ),
    Case(
        "pool-larger-than-padded-input",
        lambda: qdq_model([1, 3, 2, 2], "MaxPool", kernel_shape=[5, 5], pads=[1] * 4),
        "compile_model",
        ("my_maxpool", "padded to 4x4"),
    ),
    Case(
        "dilated-kernel-larger-than-input",
        lambda: qdq_model([1, 3, 8, 8], dilations=[4, 4]),
        "compile_model",
        ("my_conv", "9x9 window", "dilation 4x4"),
    ),
    Case("zero-size-input", lambda: qdq_model([1, 3, 0, 8]), "compile", ("'x'", "zero-size")),
    Case(
        "zero-strides",
        lambda: qdq_model([1, 3, 8, 8], strides=[0, 0]),
        "compile_model",
        ("my_conv", "strides"),
    ),
    Case(
        "gemm-of-mismatched-weights",
        lambda: qdq_model([1, 64], "Gemm", cin=32, transB=1),
        "compile",
        ("my_gemm",),
    ),
    Case(
        "reshape-to-another-size",
        lambda: _then(qdq_model([1, 3, 8, 8]), *RESHAPE_TO_192),
        "compile",
        ("my_reshape", "144 elements"),
    ),
    Case("opset-99", lambda: qdq_model([1, 3, 8, 8], opset=99), "compile", ("opset", "99")),
    Case(
        "opset-minus-1", lambda: qdq_model([1, 3, 8, 8], opset=-1), "compile_model", ("opset", "-1")
    ),
    Case(
        "ir-version-99",
        lambda: _changed(qdq_model([1, 3, 8, 8]), lambda m: setattr(m, "ir_version", 99)),
        "compile",
        ("ir_version 99",),
    ),
    Case(
        "empty-graph",
        lambda: _changed(qdq_model([1, 3, 8, 8]), lambda m: m.graph.ClearField("node")),
        "compile",
        ("no nodes",),
    ),
    Case(
        "tensor-made-twice",
        lambda: _changed(
            qdq_model([1, 3, 8, 8]), lambda m: m.graph.node[1].output.__setitem__(0, "xq")
        ),
        "compile_model",
        ("x_dq", "'xq'", "x_q"),
    ),
    Case(
        "input-made-by-no-node",
        lambda: _changed(
            qdq_model([1, 3, 8, 8]), lambda m: m.graph.node[1].input.__setitem__(0, "nowhere")
        ),
        "compile",
        ("x_dq", "'nowhere'"),
    ),
    Case(
        "cycle",
        lambda: _changed(
            qdq_model([1, 3, 8, 8]), lambda m: m.graph.node[1].input.__setitem__(0, "oq")
        ),
        "compile_model",
        ("x_dq", "'oq'", "o_q", "cycle"),
    ),
    Case(
        "float16-input",
        lambda: _cast_input(qdq_model([1, 3, 8, 8]), TensorProto.FLOAT16),
        "compile",
        ("'x_in'", "float16"),
    ),
    Case(
        "double-output",
        lambda: _then(
            qdq_model([1, 3, 8, 8]), _as(TensorProto.DOUBLE, "to_double"), elem=TensorProto.DOUBLE
        ),
        "compile_model",
        ("'cast'", "double"),
    ),
    Case("int4-activations", _int4_activations, "compile", ("x_q", "int4")),
    Case("float16-scale", _float16_scale, "compile_model", ("x_q", "float16 scale")),
    Case(
        "external-data-missing",
        lambda: qdq_model([1, 3, 8, 8]),
        "compile",
        ("weights.bin", "initializer"),
        write=_write_without_external_data,
    ),
    Case(  # onnx accepts it; onnxruntime has no bfloat16 Relu for the host's subgraph
        "op-onnxruntime-cannot-run",
        lambda: _then(qdq_model([1, 3, 8, 8]), *RELU_BF16),
        "compile",
        ("my_relu", "subgraph_2_cpu"),
    ),
    Case(
        "quantize-negative-pads",
        lambda: float_model([1, 3, 8, 8], pads=[-1] * 4),
        "quantize",
        ("my_conv", "pads"),
    ),
    Case(
        "quantize-reshape-to-another-size",
        lambda: _then(float_model([1, 3, 8, 8]), *RESHAPE_TO_192),
        "quantize_model",
        ("my_reshape", "144 elements"),
    ),
    Case(
        "quantize-opset-99",
        lambda: float_model([1, 3, 8, 8], opset=99),
        "quantize_model",
        ("opset", "99"),
    ),
    Case(
        "quantize-kernel-larger-than-input",
        lambda: float_model([1, 3, 8, 8], kernel=(9, 9)),
        "quantize",
        ("my_conv", "9x9 window"),
    ),
    Case(
        "quantize-op-onnxruntime-cannot-run",
        lambda: _then(float_model([1, 3, 8, 8]), *RELU_BF16),
        "quantize_model",
        ("my_relu",),
    ),
]

CASES = (
    [("symbolic", c) for c in SYMBOLIC]
    + [("runaway", c) for c in RUNAWAYS]
    + [("invalid", c) for c in INVALID]
)


@pytest.mark.parametrize(("kind", "case"), CASES, ids=[f"{k}-{c.name}" for k, c in CASES])
def test_bad_model(kind: str, case: Case, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}-{case.name}.onnx"
    case.write(case.model(), path)
    assert_user_error(_run(case, path), path, *case.mentions)


def test_every_class_has_cases_through_the_cli_and_the_api() -> None:
    """The acceptance criterion: more than one case per class, both ways in."""
    for cases in (SYMBOLIC, RUNAWAYS, INVALID):
        ways = {c.via for c in cases}
        assert len(cases) > 1 and {"compile", "compile_model"} <= ways, ways


# --- what the errors point to works -----------------------------------------------------------


def test_input_shape_gives_symbolic_dims_their_sizes(tmp_path: Path) -> None:
    """The fix the symbolic-dims error asks for: the program takes inputs of that shape and
    its outputs have the size the model gives them."""
    path = tmp_path / "symbolic.onnx"
    onnx.save(qdq_model(SYM), path)
    program = compile_model(path, "sim-small", input_shapes={"x": (1, 3, 10, 12)})
    assert program.inputs[0].shape == [1, 3, 10, 12]
    assert program.outputs[0].shape == [1, 4, 8, 10]
    x = np.random.default_rng(0).random((2, 3, 10, 12), dtype=np.float32)
    (y,) = create_runner(program).run({"x": x}).outputs.values()
    assert y.shape == (2, 4, 8, 10)
    out = tmp_path / "cli.dpu"
    assert main(["compile", str(path), "-o", str(out), "--input-shape", "1,3,10,12"]) == 0


def test_quantize_with_input_shape_writes_a_model_compile_takes(tmp_path: Path) -> None:
    path, qdq = tmp_path / "float.onnx", tmp_path / "fixed.qdq.onnx"
    onnx.save(float_model(SYM), path)
    args = [
        "quantize",
        str(path),
        "-o",
        str(qdq),
        "--calib-random",
        "2",
        "--input-shape",
        "x=1x3x9x9",
    ]
    assert main(args) == 0
    assert compile_model(qdq, "sim-small").inputs[0].shape == [1, 3, 9, 9]


def test_quantizer_failing_at_calibration_names_the_node(tmp_path: Path) -> None:
    """A model onnx and onnxruntime load but cannot run (an index out of range, which no
    inference checks): quantization runs it on the calibration data and must say where."""
    model = _then(
        float_model([1, 3, 8, 8]),
        helper.make_node("Constant", [], ["i"], value=numpy_helper.from_array(np.array([9]))),
        helper.make_node("Gather", ["y", "i"], ["g"], name="my_gather", axis=1),
    )
    samples = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with pytest.raises(ModelError, match="my_gather"):
        quantize_model(model, tmp_path / "out.qdq.onnx", samples)
