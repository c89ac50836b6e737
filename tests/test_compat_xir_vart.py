"""dpukit.compat: Vitis AI's xir graphs, a VART runner on one DPU subgraph, DPU-PYNQ's
DpuOverlay, checked against answers the compat layer does not compute:

- the values: every DPU tensor of a whole-model run on the golden backend (batch 1, read
  back with verify.dpu_tensors in ONNX's layout), turned into VART's by hand here (NCHW ->
  NHWC, a uint8 tensor's values minus 128); a DPU subgraph run alone on one of its input
  tensors must give that run's output tensor, on the golden model and on the virtual board;
- float buffers: dequantized and quantized by hand ((q - zero point) * scale; round half to
  even and saturation on values chosen to be exact ties or out of range);
- the attributes: dims, scale, zero point and fix point from the program and from the
  scales the test models were built with;
- misuse: each a clear error, after which the runner still runs right; jobs, threads and
  boards shared between runners; DpuOverlay's warnings; type annotations.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import inspect
import math
import shutil
import subprocess
import sys
import threading
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from board_images import compile_digits, digits_pictures
from onnx import TensorProto, helper
from test_verify import _Qdq

from dpukit.compat import pynq_dpu, vart, xir
from dpukit.compat.pynq_dpu import DpuOverlay
from dpukit.compiler.compile import compile_model
from dpukit.compiler.program import Program
from dpukit.errors import BoardError, ExecutionError, ProgramError
from dpukit.host.runner import create_runner
from dpukit.verify import dpu_tensors

SHAPE = (1, 8, 4, 6)  # N, C, H, W: C, H and W all differ, so a wrong layout shows
NHWC = [1, 4, 6, 8]
SAMPLES = 4  # whole-model runs whose tensors are the reference


# --- the models --------------------------------------------------------------------------------


def _quant(m: _Qdq, x: str, scale: float, zp: int, dtype: type) -> tuple[str, str]:
    """QuantizeLinear -> DequantizeLinear with a zero point of `dtype` (int8 or uint8): the
    quantized tensor's name (a DPU tensor's) and the dequantized one's."""
    q = m.node("QuantizeLinear", [x, m.const(np.float32(scale)), m.const(dtype(zp))])
    return q, m.node("DequantizeLinear", [q, m.const(np.float32(scale)), m.const(dtype(zp))])


def _image() -> list:
    return [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(SHAPE))]


@dataclass
class Model:
    path: Path  # the .dpu
    program: Program
    names: dict[str, str]  # role -> DPU tensor name


def _two_dpu_model(root: Path) -> Model:
    """DPU conv -> Sigmoid on the host -> DPU conv (as test_verify's host-layer test), the
    Sigmoid quantized to uint8 (scale 1/256, zero point 0) and the last conv to uint8
    (zero point 128), so the second DPU subgraph reads and writes uint8 ONNX tensors."""
    m = _Qdq()
    x, a = _quant(m, "input", 0.05, 0, np.int8)
    y, b = _quant(m, m.conv1x1(a, 8, 8), 0.07, 0, np.int8)
    s, c = _quant(m, m.node("Sigmoid", [b]), 1 / 256, 0, np.uint8)
    z, out = _quant(m, m.conv1x1(c, 8, 8), 0.05, 128, np.uint8)
    onnx_path = m.save(root / "two.onnx", _image(), out, list(SHAPE))
    compile_model(onnx_path, "sim-small").save(root / "two.dpu")
    return Model(root / "two.dpu", Program.load(root / "two.dpu"),
                 {"x": x, "y": y, "s": s, "z": z, "out": out})  # fmt: skip


def _fix_point_model(root: Path) -> Model:
    """Two 1x1 convs whose activations are quantized to 1/64, 1/32 (int8, zero point 0:
    Vitis AI fix points 6 and 5) and 0.05 (no fix point)."""
    m = _Qdq(seed=3)
    a, da = _quant(m, "input", 1 / 64, 0, np.int8)
    b, db = _quant(m, m.conv1x1(da, 8, 8), 1 / 32, 0, np.int8)
    c, out = _quant(m, m.conv1x1(db, 8, 8), 0.05, 0, np.int8)
    onnx_path = m.save(root / "fix.onnx", _image(), out, list(SHAPE))
    compile_model(onnx_path, "sim-small").save(root / "fix.dpu")
    return Model(root / "fix.dpu", Program.load(root / "fix.dpu"), {"a": a, "b": b, "c": c})


def _compiled(m: _Qdq, stem: Path, inputs: list, out: str, out_shape: list, names: dict) -> Model:
    """The model `m` saved as `stem`.onnx and compiled for sim-small to `stem`.dpu."""
    onnx_path = m.save(stem.with_suffix(".onnx"), inputs, out, out_shape)
    compile_model(onnx_path, "sim-small").save(stem.with_suffix(".dpu"))
    return Model(stem.with_suffix(".dpu"), Program.load(stem.with_suffix(".dpu")), names)


def _conv3x3(m: _Qdq, x: str, cin: int, cout: int) -> str:
    w = m.rng.integers(-60, 61, (cout, cin, 3, 3))
    return m.node("Conv", [x, m.weights(w, 0.01)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def _beside_model(root: Path) -> Model:
    """A host Sigmoid of the quantized image, read by the same DPU subgraph as the image
    (1x1 convs of both, added): the DPU subgraph reads two tensors the caller gives."""
    m = _Qdq(seed=1)
    x, dx = _quant(m, "input", 0.05, 0, np.int8)
    s, ds = _quant(m, m.node("Sigmoid", [dx]), 1 / 256, 0, np.uint8)
    _, c1 = _quant(m, m.conv1x1(dx, 8, 8), 0.07, 0, np.int8)
    _, c2 = _quant(m, m.conv1x1(ds, 8, 8), 0.07, 0, np.int8)
    z, out = _quant(m, m.node("Add", [c1, c2]), 0.1, 0, np.int8)
    return _compiled(m, root / "beside", _image(), out, list(SHAPE), {"x": x, "s": s, "z": z})


GRAY = (1, 1, 8, 8)  # a 1-channel image: the compiler stacks the kernel rows of a 3x3 conv


def _gray_image() -> list:
    return [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(GRAY))]


def _onnx_cpu_model(root: Path) -> Model:
    """Exp (an op the numpy executor lacks: the first CPU subgraph is an ONNX one) of a
    1-channel image, quantized, then a 3x3 conv: the stacked rows are made in that ONNX
    subgraph."""
    m = _Qdq(seed=1)
    x, dx = _quant(m, m.node("Exp", ["input"]), 0.05, 0, np.int8)
    y, out = _quant(m, _conv3x3(m, dx, 1, 8), 0.07, 0, np.int8)
    return _compiled(m, root / "exp", _gray_image(), out, [1, 8, 8, 8], {"x": x, "y": y})


def _two_stackings_model(root: Path) -> Model:
    """3x3 convs of a 1-channel image x, and of a 2-channel host Sigmoid s of another conv:
    the last DPU subgraph reads the stacked rows of x (made in the first CPU subgraph) and
    of s (made in a later one)."""
    m = _Qdq(seed=2)
    x, dx = _quant(m, "input", 0.05, 0, np.int8)
    y, dy = _quant(m, _conv3x3(m, dx, 1, 2), 0.07, 0, np.int8)
    s, ds = _quant(m, m.node("Sigmoid", [dy]), 1 / 256, 0, np.uint8)
    _, da = _quant(m, _conv3x3(m, ds, 2, 4), 0.07, 0, np.int8)
    _, db = _quant(m, _conv3x3(m, dx, 1, 4), 0.07, 0, np.int8)
    z, out = _quant(m, m.node("Add", [da, db]), 0.1, 0, np.int8)
    names = {"x": x, "y": y, "s": s, "z": z}
    return _compiled(m, root / "stackings", _gray_image(), out, [1, 4, 8, 8], names)


def _flatten_model(root: Path) -> Model:
    """A 1x1 conv whose dequantized image the host flattens (C, H, W order)."""
    m = _Qdq(seed=4)
    x, dx = _quant(m, "input", 0.05, 0, np.int8)
    y, dy = _quant(m, m.conv1x1(dx, 8, 8), 0.07, 0, np.int8)
    out = m.node("Flatten", [dy], axis=1)
    return _compiled(m, root / "flat", _image(), out, [1, math.prod(SHAPE)], {"x": x, "y": y})


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return _two_dpu_model(tmp_path_factory.mktemp("compat_two"))


@pytest.fixture(scope="module")
def fix(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return _fix_point_model(tmp_path_factory.mktemp("compat_fix"))


# --- the reference: whole-model golden runs, converted by hand --------------------------------


def _vart_values(value: np.ndarray) -> np.ndarray:
    """An ONNX value (NCHW, int8 or uint8) as VART's int8 tensor: NHWC for an image, a
    uint8 value minus 128 (written out here, independent of host/layout.py)."""
    v = value.astype(np.int16)
    if value.dtype == np.uint8:
        v = v - 128
    else:
        assert value.dtype == np.int8, value.dtype
    if v.ndim == 4:
        v = v.transpose(0, 2, 3, 1)
    assert v.min() >= -128 and v.max() <= 127
    return v.astype(np.int8)


def _golden_runs(model: Model, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per image: the whole model on the golden backend, batch 1; its DPU tensors as VART
    shows them, and its float outputs (NHWC when 4-D) under "output:<name>"."""
    runs = []
    with create_runner(model.program, "golden") as whole:
        for image in images:
            result = whole.run({"input": image})
            values = {k: _vart_values(v) for k, v in dpu_tensors(whole, model.program).items()}
            for name, out in result.outputs.items():
                values[f"output:{name}"] = out.transpose(0, 2, 3, 1) if out.ndim == 4 else out
            runs.append(values)
    return runs


@pytest.fixture(scope="module")
def two_ref(two: Model) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    return _golden_runs(two, [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(SAMPLES)])


def _dpu_subgraphs(graph: xir.Graph) -> list[xir.Subgraph]:
    """Vitis AI's get_child_subgraph_dpu, word for word."""
    children = graph.get_root_subgraph().toposort_child_subgraph()
    return [s for s in children if s.has_attr("device") and s.get_attr("device").upper() == "DPU"]


def _run_int8(runner: vart.Runner, x: np.ndarray) -> np.ndarray:
    (out_t,) = runner.get_output_tensors()
    out = np.full(out_t.dims, 99, np.int8)
    job = runner.execute_async([x], [out])
    assert runner.wait(job) == 0
    return out


# --- 1. a DPU subgraph alone against the whole model ------------------------------------------


def test_graph_has_two_dpu_subgraphs_in_execution_order(two: Model) -> None:
    graph = xir.Graph.deserialize(two.path)
    children = graph.get_root_subgraph().toposort_child_subgraph()
    assert [s.get_attr("device") for s in children] == ["CPU", "DPU", "CPU", "DPU", "CPU"]
    first, second = _dpu_subgraphs(graph)
    n = two.names
    assert [t.name for t in first.get_input_tensors()] == [n["x"]]
    assert [t.name for t in first.get_output_tensors()] == [n["y"]]
    assert [t.name for t in second.get_input_tensors()] == [n["s"]]
    assert [t.name for t in second.get_output_tensors()] == [n["z"]]
    assert "Sigmoid" in children[2].get_attr("ops")


@pytest.mark.parametrize("backend", ["golden", "rtl"])
def test_second_dpu_subgraph_alone_equals_the_whole_run(
    two: Model, two_ref: list, backend: str
) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    (in_t,) = second.get_input_tensors()
    (out_t,) = second.get_output_tensors()
    assert in_t.dims == out_t.dims == NHWC
    n = two.names
    with vart.Runner.create_runner(second, "run", backend=backend) as runner:
        for ref in two_ref:
            x = ref[n["s"]]
            assert x.shape == (1, 4, 6, 8) and x.dtype == np.int8
            np.testing.assert_array_equal(_run_int8(runner, x), ref[n["z"]])
            # float32 out: (q - zero point) * scale, by hand, from the int8 result
            out = np.zeros(out_t.dims, np.float32)
            runner.wait(runner.execute_async([x], [out]))
            scale, zp = out_t.get_attr("scale"), out_t.get_attr("zero_point")
            by_hand = (ref[n["z"]].astype(np.float32) - np.float32(zp)) * np.float32(scale)
            np.testing.assert_array_equal(out, by_hand)
            # ... which is also what the whole model's DequantizeLinear output is
            np.testing.assert_array_equal(out, ref[f"output:{n['out']}"])
            # NHWC views of NCHW arrays (not contiguous), in and out
            x_view = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
            out_view = np.zeros(SHAPE, np.int8).transpose(0, 2, 3, 1)
            assert not x_view.flags.c_contiguous and not out_view.flags.c_contiguous
            runner.wait(runner.execute_async([x_view], [out_view]))
            np.testing.assert_array_equal(out_view, ref[n["z"]])
        # the first DPU subgraph of the same graph too, on the same board
        first = _dpu_subgraphs(graph)[0]
        with vart.Runner.create_runner(first, "run", backend=backend) as runner1:
            assert runner1._model is runner._model
            for ref in two_ref:
                np.testing.assert_array_equal(_run_int8(runner1, ref[n["x"]]), ref[n["y"]])


# The second DPU subgraph's input: uint8 in ONNX, scale 1/256, zero point 0, so the DPU's
# int8 is q = clip(round_half_even(x * 256), 0, 255) - 128, exact in float32. Each value
# with the int8 worked out by hand.
TIES = [
    (0.5 / 256, -128),  # 0.5 -> 0 (half to even)
    (1.5 / 256, -126),  # 1.5 -> 2
    (2.5 / 256, -126),  # 2.5 -> 2
    (3.5 / 256, -124),  # 3.5 -> 4
    (-0.5 / 256, -128),  # -0.5 -> -0 -> 0
    (127.5 / 256, 0),  # 127.5 -> 128
    (128.5 / 256, 0),  # 128.5 -> 128
    (129.5 / 256, 2),  # 129.5 -> 130
    (254.5 / 256, 126),  # 254.5 -> 254
    (255.5 / 256, 127),  # 255.5 -> 256 -> saturates at 255
    (0.25, -64),  # 64
    (1.0, 127),  # 256: saturates
    (2.0, 127),  # out of range
    (-1.0, -128),  # out of range
    (2.0**100, 127),  # far out of range: saturates, never wraps
    (-(2.0**100), -128),
]


@pytest.mark.parametrize("backend", ["golden", "rtl"])
def test_float32_inputs_round_half_to_even_and_saturate(two: Model, backend: str) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    (in_t,) = second.get_input_tensors()
    assert (in_t.get_attr("scale"), in_t.get_attr("zero_point")) == (1 / 256, -128)
    values = np.array([v for v, _ in TIES], np.float32)
    expected = np.array([q for _, q in TIES], np.int8)
    assert np.array_equal(values.astype(np.float64), [v for v, _ in TIES])  # exact in float32
    reps = math.prod(NHWC) // len(TIES)
    order = np.random.default_rng(5).permutation(math.prod(NHWC)) % len(TIES)
    assert reps * len(TIES) == math.prod(NHWC)
    x_float = values[order].reshape(NHWC)
    x_int8 = expected[order].reshape(NHWC)
    # rounding ties away from zero instead: another input (the check below can fail)
    away = np.clip(np.floor(np.abs(values) * 256 + 0.5) * np.sign(values), 0, 255) - 128
    assert not np.array_equal(away.astype(np.int8), expected)
    with vart.Runner.create_runner(second, "run", backend=backend) as runner:
        by_hand = _run_int8(runner, x_int8)
        np.testing.assert_array_equal(_run_int8(runner, x_float.copy()), by_hand)
        wrong = _run_int8(runner, away.astype(np.int8)[order].reshape(NHWC))
        assert not np.array_equal(wrong, by_hand)


# --- 2. attributes -----------------------------------------------------------------------------


def test_tensor_attributes_against_the_program(two: Model) -> None:
    graph = xir.Graph.deserialize(two.path)
    assert graph.program.fingerprint == two.program.fingerprint
    n = two.names
    onnx_zero_points = {n["x"]: 0, n["y"]: 0, n["s"]: 0, n["z"]: 128}
    uint8 = {n["s"], n["z"]}
    for sg in _dpu_subgraphs(graph):
        for t in sg.get_input_tensors() + sg.get_output_tensors():
            p = two.program.tensors[t.name]
            assert t.dims == NHWC and t.ndim == 4 and t.dtype == "xint8"
            assert t.get_element_num() == 8 * 4 * 6
            assert t.get_data_size() == 8 * 4 * 6  # one byte each
            assert t.get_attr("scale") == p.scale
            assert t.get_attr("zero_point") == p.zero_point
            assert t.get_attr("zero_point") == onnx_zero_points[t.name] - 128 * (t.name in uint8)
            assert t.get_attr("onnx_dtype") == ("uint8" if t.name in uint8 else "int8")
            assert t.get_attr("onnx_shape") == list(SHAPE)
            assert t.get_attr("ddr_addr") == two.program.dram_offsets[t.name]
            assert t.get_attr("bit_width") == 8 and t.get_attr("if_signed") is True
    scales = {n["x"]: 0.05, n["y"]: 0.07, n["s"]: 1 / 256, n["z"]: 0.05}
    for name, scale in scales.items():
        assert graph.tensor(name).get_attr("scale") == float(np.float32(scale))
    # a power-of-two scale with zero point -128 (the uint8 tensor's) has no fix point
    s = graph.tensor(n["s"])
    assert not s.has_attr("fix_point")
    with pytest.raises(KeyError) as err:
        s.get_attr("fix_point")
    assert "zero point -128" in err.value.args[0] and "scale" in err.value.args[0]
    # what only the CPU sees keeps its ONNX type
    (graph_in,) = graph.get_root_subgraph().get_input_tensors()
    assert (graph_in.name, graph_in.dims, graph_in.dtype) == ("input", list(SHAPE), "float32")
    assert graph_in.get_data_size() == 4 * math.prod(SHAPE)


def test_fix_point_of_power_of_two_scales(fix: Model) -> None:
    graph = xir.Graph.deserialize(fix.path)
    (dpu,) = _dpu_subgraphs(graph)
    n = fix.names
    assert [t.name for t in dpu.get_input_tensors()] == [n["a"]]
    assert [t.name for t in dpu.get_output_tensors()] == [n["c"]]
    for name, scale, fp in [(n["a"], 1 / 64, 6), (n["b"], 1 / 32, 5)]:
        t = graph.tensor(name)
        assert t.get_attr("scale") == scale and t.get_attr("zero_point") == 0
        assert t.has_attr("fix_point")
        assert t.get_attr("fix_point") == fp == -math.log2(scale)
        assert 2.0 ** -t.get_attr("fix_point") == t.get_attr("scale")
    c = graph.tensor(n["c"])
    assert c.get_attr("scale") == float(np.float32(0.05)) and c.get_attr("zero_point") == 0
    assert not c.has_attr("fix_point") and "fix_point" not in c.get_attrs()
    with pytest.raises(KeyError) as err:
        c.get_attr("fix_point")
    message = err.value.args[0]
    assert "fix_point" in message and "scale" in message and n["c"] in message
    with pytest.raises(KeyError, match="no attr 'colour'"):
        c.get_attr("colour")


def test_subgraph_tree(two: Model) -> None:
    graph = xir.Graph.deserialize(two.path)
    root = graph.get_root_subgraph()
    assert root.is_root and not root.is_leaf and root.depth == 0
    assert root.get_parent() is None and root.get_graph() is graph
    assert not root.has_attr("device")
    with pytest.raises(KeyError, match="root"):
        root.get_attr("device")
    children = root.toposort_child_subgraph()
    assert root.get_children_num() == len(children) == 5
    assert [c.get_name() for c in children] == [sg.name for sg in two.program.subgraphs]
    for child in children:
        assert child.is_leaf and not child.is_root and child.depth == 1
        assert child.get_parent() is root and child.root is root
        assert child.toposort_child_subgraph() == [] and child.get_children_num() == 0
    assert [t.name for t in root.get_input_tensors()] == ["input"]
    assert [t.name for t in root.get_output_tensors()] == [two.names["out"]]


# --- 3. the digits program: the stacked-rows input is the runner's --------------------------


def test_digits_first_dpu_subgraph_takes_the_image_only(digits_qdq: Path, tmp_path: Path) -> None:
    path = compile_digits(digits_qdq, tmp_path / "digits.dpu")
    program = Program.load(path)
    graph = xir.Graph.deserialize(path)
    dpu = _dpu_subgraphs(graph)[0]
    sg = program.subgraphs[dpu.index]
    (image_t,) = dpu.get_input_tensors()  # the quantized image only
    assert len(sg.inputs) == 2 and image_t.name in sg.inputs  # ... of the DPU's two
    (derived,) = [name for name in sg.inputs if name != image_t.name]
    assert dpu.host_derived is not None
    assert [v.name for v in dpu.host_derived.outputs] == [derived]
    assert image_t.dims == [1, 8, 8, 1]
    (logits_t,) = dpu.get_output_tensors()
    assert logits_t.dims == [1, 10]
    pixels, _ = digits_pictures(per_class=1)
    images = (pixels[:, None] / np.float32(255)).astype(np.float32)  # [10, 1, 8, 8]
    whole = []
    with create_runner(program, "golden") as runner:
        for image in images:
            result = runner.run({"input": image[None]})
            values = dpu_tensors(runner, program)
            whole.append((values[image_t.name], values[logits_t.name], result.outputs["logits"]))
    with vart.Runner.create_runner(dpu, "run", backend="golden") as runner:
        for image, (q_image, q_logits, logits) in zip(images, whole, strict=True):
            ref = _vart_values(q_logits)
            np.testing.assert_array_equal(_run_int8(runner, _vart_values(q_image)), ref)
            # the same picture as floats, quantized by the runner
            np.testing.assert_array_equal(_run_int8(runner, image.reshape(1, 8, 8, 1)), ref)
            out = np.empty([1, 10], np.float32)
            runner.wait(runner.execute_async([image.reshape(1, 8, 8, 1)], [out]))
            np.testing.assert_array_equal(out, logits)


def _hidden(model: Model, dpu: xir.Subgraph) -> list[str]:
    """The program's inputs of DPU subgraph `dpu` that its view does not show."""
    shown = {t.name for t in dpu.get_input_tensors()}
    return [name for name in model.program.subgraphs[dpu.index].inputs if name not in shown]


def _run_given(runner: vart.Runner, ref: dict[str, np.ndarray]) -> np.ndarray:
    """The runner's one output (int8) for its input tensors' values in `ref`."""
    (out_t,) = runner.get_output_tensors()
    out = np.full(out_t.dims, 99, np.int8)
    job = runner.execute_async([ref[t.name] for t in runner.get_input_tensors()], [out])
    assert runner.wait(job) == 0
    return out


def test_a_host_op_beside_the_image_is_an_input_the_caller_gives(tmp_path: Path) -> None:
    """A Sigmoid of the image, computed on the host and read by the same DPU subgraph as the
    image, is no stacked rows: both are the DPU subgraph's inputs, as in VART."""
    model = _beside_model(tmp_path)
    n = model.names
    graph = xir.Graph.deserialize(model.path)
    children = graph.get_root_subgraph().toposort_child_subgraph()
    (dpu,) = _dpu_subgraphs(graph)
    assert "Sigmoid" in children[0].get_attr("ops")
    assert dpu.host_derived is None and _hidden(model, dpu) == []
    assert sorted(t.name for t in dpu.get_input_tensors()) == sorted([n["x"], n["s"]])
    assert {n["x"], n["s"]} <= {t.name for t in children[0].get_output_tensors()}
    rng = np.random.default_rng(21)
    refs = _golden_runs(model, [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(3)])
    with vart.Runner.create_runner(dpu, "run", backend="golden") as runner:
        for ref in refs:
            assert ref[n["s"]].shape == tuple(NHWC)  # uint8 in ONNX, minus 128 by hand
            np.testing.assert_array_equal(_run_given(runner, ref), ref[n["z"]])
        # the runner reads the Sigmoid as given (not recomputed from the image)
        other = dict(refs[0], **{n["s"]: refs[1][n["s"]]})
        assert not np.array_equal(_run_given(runner, other), refs[0][n["z"]])


def test_stacked_rows_made_in_an_onnx_cpu_subgraph_are_the_runners(tmp_path: Path) -> None:
    model = _onnx_cpu_model(tmp_path)
    n = model.names
    graph = xir.Graph.deserialize(model.path)
    cpu = graph.get_root_subgraph().toposort_child_subgraph()[0]
    assert cpu.get_attr("kind") == "onnx" and "Exp" in cpu.get_attr("ops")
    (dpu,) = _dpu_subgraphs(graph)
    (stacked,) = _hidden(model, dpu)
    assert [t.name for t in dpu.get_input_tensors()] == [n["x"]]
    assert dpu.get_input_tensors()[0].dims == [1, 8, 8, 1]
    assert dpu.host_derived is not None
    assert [v.name for v in dpu.host_derived.outputs] == [stacked]
    assert [t.name for t in cpu.get_output_tensors()] == [n["x"]]  # the stacked rows hidden
    rng = np.random.default_rng(22)
    refs = _golden_runs(model, [rng.uniform(-3, 1.5, GRAY).astype(np.float32) for _ in range(3)])
    with vart.Runner.create_runner(dpu, "run", backend="golden") as runner:
        for ref in refs:
            np.testing.assert_array_equal(_run_int8(runner, ref[n["x"]]), ref[n["y"]])


def test_stacked_rows_made_in_two_cpu_subgraphs_are_the_runners(tmp_path: Path) -> None:
    model = _two_stackings_model(tmp_path)
    n = model.names
    graph = xir.Graph.deserialize(model.path)
    children = graph.get_root_subgraph().toposort_child_subgraph()
    assert [c.get_attr("device") for c in children] == ["CPU", "DPU", "CPU", "DPU", "CPU"]
    first, second = _dpu_subgraphs(graph)
    assert [t.name for t in first.get_input_tensors()] == [n["x"]]
    assert sorted(t.name for t in second.get_input_tensors()) == sorted([n["x"], n["s"]])
    hidden = _hidden(model, second)
    assert len(hidden) == 2
    assert second.host_derived is not None
    assert sorted(v.name for v in second.host_derived.outputs) == sorted(hidden)
    assert sorted(v.name for v in second.host_derived.inputs) == sorted([n["x"], n["s"]])
    made = {v: sg.name for sg in model.program.subgraphs for v in sg.outputs}
    assert {made[h] for h in hidden} == {children[0].get_name(), children[2].get_name()}
    assert [t.name for t in children[0].get_output_tensors()] == [n["x"]]
    assert [t.name for t in children[2].get_output_tensors()] == [n["s"]]
    rng = np.random.default_rng(23)
    refs = _golden_runs(model, [rng.uniform(-2, 2, GRAY).astype(np.float32) for _ in range(3)])
    with (
        vart.Runner.create_runner(first, "run", backend="golden") as r1,
        vart.Runner.create_runner(second, "run", backend="golden") as r2,
    ):
        for ref in refs:
            np.testing.assert_array_equal(_run_given(r1, ref), ref[n["y"]])
            np.testing.assert_array_equal(_run_given(r2, ref), ref[n["z"]])


# --- 4. misuse ---------------------------------------------------------------------------------


@contextmanager
def _raises(kind: type, *words: str) -> Iterator[pytest.ExceptionInfo]:
    """pytest.raises(kind), and the message holds each of `words`."""
    with pytest.raises(kind) as info:
        yield info
    message = str(info.value.args[0]) if info.value.args else ""
    missing = [w for w in words if w not in message]
    assert not missing, f"{missing} not in the message: {message}"


def test_misused_buffers_are_refused_and_the_runner_goes_on(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s, z = two.names["s"], two.names["z"]
    x = two_ref[0][s]
    out = np.empty(NHWC, np.int8)
    with vart.Runner.create_runner(second, "run", backend="golden") as r:
        with _raises(ExecutionError, "2 input buffer(s) for 1 input tensor(s)", s):
            r.execute_async([x, x], [out])
        with _raises(ExecutionError, "0 input buffer(s)"):
            r.execute_async([], [out])
        with _raises(ExecutionError, "2 output buffer(s) for 1 output tensor(s)", z):
            r.execute_async([x], [out, out.copy()])
        with _raises(ExecutionError, "0 output buffer(s)"):
            r.execute_async([x], [])
        with _raises(ExecutionError, "inputs must be a list of numpy arrays", "ndarray"):
            r.execute_async(x, [out])
        with _raises(ExecutionError, "outputs must be a list of numpy arrays", "ndarray"):
            r.execute_async([x], out)
        with _raises(ExecutionError, "input buffer 0 is a list, not a numpy array"):
            r.execute_async([x.tolist()], [out])
        nchw = np.zeros(SHAPE, np.int8)
        with _raises(ExecutionError, "shape [1, 8, 4, 6]", "dims [1, 4, 6, 8]", "N, H, W, C"):
            r.execute_async([nchw], [out])
        with _raises(ExecutionError, "input buffer 0 has shape [2, 4, 6, 8]"):
            r.execute_async([np.zeros([2, 4, 6, 8], np.int8)], [out])
        with _raises(ExecutionError, "output buffer 0 has shape [2, 4, 6, 8]"):
            r.execute_async([x], [np.zeros([2, 4, 6, 8], np.int8)])
        for dtype in (np.float64, np.uint8, np.int16):
            name = np.dtype(dtype).name
            with _raises(ExecutionError, f"input buffer 0 (tensor '{s}') is {name}", "int8"):
                r.execute_async([x.astype(dtype)], [out])
            with _raises(ExecutionError, f"output buffer 0 (tensor '{z}') is {name}"):
                r.execute_async([x], [out.astype(dtype)])
        read_only = np.empty(NHWC, np.int8)
        read_only.flags.writeable = False
        with _raises(ExecutionError, "output buffer 0", "read-only"):
            r.execute_async([x], [read_only])
        nan = np.zeros(NHWC, np.float32)
        nan[0, 1, 2, 3] = np.nan
        with _raises(ExecutionError, f"input tensor '{s}'", "nan at index [0, 1, 2, 3]", "NaN"):
            r.execute_async([nan], [out])
        with _raises(ExecutionError, "no job 12345"):
            r.wait(12345)
        with _raises(ExecutionError, "no job"):
            r.wait((12345, 0))
        job = r.execute_async([x], [out])
        assert r.wait(job) == 0
        np.testing.assert_array_equal(out, two_ref[0][z])
        with _raises(ExecutionError, "no job", "already waited"):
            r.wait(job)
        with _raises(ExecutionError, "no job", "already waited"):
            r.wait(job[0])
        # after all that, good jobs still give the right values
        for ref in two_ref:
            np.testing.assert_array_equal(_run_int8(r, ref[s]), ref[z])


def test_job_of_another_runner_is_refused(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    first, second = _dpu_subgraphs(graph)
    n = two.names
    with (
        vart.Runner.create_runner(first, backend="golden") as r1,
        vart.Runner.create_runner(second, backend="golden") as r2,
    ):
        out = np.empty(NHWC, np.int8)
        job = r1.execute_async([two_ref[0][n["x"]]], [out])
        with _raises(ExecutionError, "no job", "not started by this runner"):
            r2.wait(job)
        with _raises(ExecutionError, "no job"):
            r2.wait(job[0])
        assert r1.wait(job) == 0  # still r1's to wait
        np.testing.assert_array_equal(out, two_ref[0][n["y"]])
        np.testing.assert_array_equal(_run_int8(r2, two_ref[1][n["s"]]), two_ref[1][n["z"]])


def test_runners_only_on_dpu_subgraphs_in_run_mode(
    two: Model, two_ref: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = xir.Graph.deserialize(two.path)
    root = graph.get_root_subgraph()
    cpu = root.toposort_child_subgraph()[2]
    with _raises(ExecutionError, f"subgraph '{cpu.get_name()}' runs on CPU, not the DPU"):
        vart.Runner.create_runner(cpu, "run", backend="golden")
    with _raises(ExecutionError, "runs on the whole graph, not the DPU", "one DPU subgraph"):
        vart.Runner.create_runner(root, "run", backend="golden")
    with _raises(ExecutionError, "takes an xir.Subgraph", "Graph"):
        vart.Runner.create_runner(graph, "run", backend="golden")
    second = _dpu_subgraphs(graph)[1]
    with _raises(ExecutionError, "runner mode 'ref'", "'run' only"):
        vart.Runner.create_runner(second, "ref", backend="golden")
    with _raises(ExecutionError, "unknown backend 'bogus'", "golden, rtl, pynq"):
        vart.Runner.create_runner(second, "run", backend="bogus")
    monkeypatch.delenv("DPUKIT_OVERLAY", raising=False)
    monkeypatch.setattr(vart, "_current_overlay", None)  # no DpuOverlay loaded one
    with _raises(ExecutionError, "the pynq backend needs the overlay", "DpuOverlay"):
        vart.Runner.create_runner(second, "run", backend="pynq")
    monkeypatch.setenv("DPUKIT_BACKEND", "bogus")
    with _raises(ExecutionError, "DPUKIT_BACKEND='bogus' is no backend", "golden, rtl, pynq"):
        vart.Runner.create_runner(second, "run")
    monkeypatch.setenv("DPUKIT_BACKEND", "golden")
    with vart.Runner.create_runner(second, "") as r:  # VART's mode "" too
        assert "golden backend" in repr(r)
        n = two.names
        np.testing.assert_array_equal(_run_int8(r, two_ref[0][n["s"]]), two_ref[0][n["z"]])


def test_deserialize_refuses_what_is_not_a_program(tmp_path: Path) -> None:
    xmodel = tmp_path / "model.xmodel"
    xmodel.write_bytes(b"\x0a\x05root\x12\x07xir-graph" + bytes(200))  # a protobuf, say
    with _raises(ProgramError, "Vitis AI xmodel", "not a dpukit program", "dpukit compile"):
        xir.Graph.deserialize(xmodel)
    with _raises(ProgramError, "no such program file"):
        xir.Graph.deserialize(tmp_path / "missing.dpu")
    with _raises(ProgramError, "no such program file"):
        xir.Graph.deserialize(str(tmp_path / "missing.xmodel"))
    other = tmp_path / "model.bin"
    other.write_bytes(bytes(100))
    with _raises(ProgramError, "not a dpukit program"):
        xir.Graph.deserialize(other)


def test_attributes_given_are_copies(two: Model) -> None:
    graph = xir.Graph.deserialize(two.path)
    first = _dpu_subgraphs(graph)[0]
    cpu = graph.get_root_subgraph().toposort_child_subgraph()[2]
    t = first.get_input_tensors()[0]
    scale = t.get_attr("scale")
    shape = t.get_attr("onnx_shape")
    shape.append(99)
    attrs = t.get_attrs()
    attrs["onnx_shape"].clear()
    attrs["scale"] = 1.0
    del attrs["zero_point"]
    assert t.get_attr("onnx_shape") == list(SHAPE) and t.get_attrs()["onnx_shape"] == list(SHAPE)
    assert t.get_attr("scale") == scale and t.has_attr("zero_point")
    layers = first.get_attr("layers")
    assert layers and all(isinstance(name, str) for name in layers)
    kept = list(layers)
    layers.clear()
    first.get_attrs()["layers"].append("bogus")
    assert first.get_attr("layers") == kept == first.get_attrs()["layers"]
    ops = cpu.get_attr("ops")
    ops[:] = ["Bogus"]
    cpu.get_attrs()["ops"].append("Bogus")
    assert "Bogus" not in cpu.get_attr("ops") and "Sigmoid" in cpu.get_attr("ops")
    assert graph.tensor(t.name).get_attr("onnx_shape") == list(SHAPE)


def test_an_empty_backend_name_is_an_error(two: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPUKIT_BACKEND", "golden")  # "" must not pass for "the default"
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    with _raises(ExecutionError, "unknown backend ''", "golden, rtl, pynq"):
        vart.Runner.create_runner(second, "run", backend="")
    assert not [entry for entry in vart._shared.values() if entry[1] is graph]
    with _raises(ExecutionError, "unknown backend ''", "golden, rtl, pynq"):
        DpuOverlay("dpu.bit", backend="")


def test_wait_takes_one_integer_job_id(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s, z = two.names["s"], two.names["z"]
    with vart.Runner.create_runner(second, "run", backend="golden") as r:
        out = np.empty(NHWC, np.int8)
        job, _ = r.execute_async([two_ref[0][s]], [out])
        for bad in (np.array([1, 2]), np.array([job, job]), np.array(1.5), np.float64(job)):
            with _raises(ExecutionError, "no job"):
                r.wait(bad)
        assert r.wait(np.int64(job)) == 0  # the job is still there to wait for
        np.testing.assert_array_equal(out, two_ref[0][z])
        job, _ = r.execute_async([two_ref[1][s]], [out])
        assert r.wait((np.int32(job), 0)) == 0
        np.testing.assert_array_equal(out, two_ref[1][z])


def test_masked_arrays_are_refused(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s, z = two.names["s"], two.names["z"]
    x = two_ref[0][s]
    with vart.Runner.create_runner(second, "run", backend="golden") as r:
        masked = np.ma.array(x, mask=x < 0)  # a runner would read the masked values
        with _raises(ExecutionError, "input buffer 0 is a MaskedArray, not a numpy array"):
            r.execute_async([masked], [np.empty(NHWC, np.int8)])
        with _raises(ExecutionError, "output buffer 0 is a MaskedArray, not a numpy array"):
            r.execute_async([x], [np.ma.array(np.empty(NHWC, np.int8))])
        np.testing.assert_array_equal(_run_int8(r, x), two_ref[0][z])


# --- 5. jobs, threads, shared boards -----------------------------------------------------------


def test_jobs_run_async_and_fill_their_own_buffers(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s, z = two.names["s"], two.names["z"]
    with vart.Runner.create_runner(second, backend="rtl") as r:
        x = np.empty(NHWC, np.int8)  # one input buffer, refilled for each job
        outs, jobs = [], []
        for ref in two_ref:
            x[...] = ref[s]
            out = np.full(NHWC, 77, np.int8)
            job = r.execute_async([x], [out])
            assert isinstance(job, tuple) and len(job) == 2 and job[1] == 0
            assert isinstance(job[0], int) and not isinstance(job[0], bool)
            x[...] = -x - 1  # overwritten at once: the job copied it
            jobs.append(job)
            outs.append(out)
        assert len({j[0] for j in jobs}) == len(jobs)
        for k in reversed(range(len(jobs))):
            ret = r.wait(jobs[k][0] if k % 2 else jobs[k])  # the id alone, or the pair
            assert ret == 0
            np.testing.assert_array_equal(outs[k], two_ref[k][z])


def test_runners_on_one_graph_share_one_board(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    first, second = _dpu_subgraphs(graph)
    n = two.names
    r1 = vart.Runner.create_runner(first, backend="rtl")
    r2 = vart.Runner.create_runner(second, backend="rtl")
    model = r1._model
    assert r2._model is model
    other = vart.Runner.create_runner(second, backend="golden")  # another backend, another board
    assert other._model is not model
    other.close()
    board = model.dpu.board
    r1.close()
    r1.close()  # twice is harmless
    with _raises(ExecutionError, "closed"):
        r1.execute_async([two_ref[0][n["x"]]], [np.empty(NHWC, np.int8)])
    assert board._handle  # still open for r2
    for ref in two_ref:
        np.testing.assert_array_equal(_run_int8(r2, ref[n["s"]]), ref[n["z"]])
    r2.close()
    assert not board._handle  # the last runner closed it
    with vart.Runner.create_runner(first, backend="rtl") as r3:
        assert r3._model is not model  # a fresh board
        np.testing.assert_array_equal(_run_int8(r3, two_ref[0][n["x"]]), two_ref[0][n["y"]])


def test_runners_in_two_threads_at_once(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    first, second = _dpu_subgraphs(graph)
    n = two.names
    start = threading.Barrier(2)

    def work(runner: vart.Runner, x: str, y: str) -> int:
        start.wait()
        done = 0
        for _ in range(5):
            outs = [np.empty(NHWC, np.int8) for _ in two_ref]
            jobs = [
                runner.execute_async([ref[x]], [o]) for ref, o in zip(two_ref, outs, strict=True)
            ]
            for job, out, ref in zip(jobs, outs, two_ref, strict=True):
                runner.wait(job)
                np.testing.assert_array_equal(out, ref[y])
                done += 1
        return done

    with (
        vart.Runner.create_runner(first, backend="rtl") as r1,
        vart.Runner.create_runner(second, backend="rtl") as r2,
        ThreadPoolExecutor(2) as pool,
    ):
        a = pool.submit(work, r1, n["x"], n["y"])
        b = pool.submit(work, r2, n["s"], n["z"])
        assert a.result(timeout=60) == b.result(timeout=60) == 5 * SAMPLES


# --- 6. DpuOverlay -----------------------------------------------------------------------------


def test_overlay_on_golden_says_nothing(fix: Model, tmp_path: Path, monkeypatch) -> None:
    """A model beside the .bit, loaded by its name from elsewhere; no warnings."""
    folder = tmp_path / "overlay"
    folder.mkdir()
    (folder / "dpu.bit").write_bytes(b"")
    (folder / "model.dpu").write_bytes(fix.path.read_bytes())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    refs = _golden_runs(fix, [np.random.default_rng(2).uniform(-2, 2, SHAPE).astype(np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with DpuOverlay(folder / "dpu.bit", backend="golden") as overlay:
            assert overlay.overlay_dirname == str(folder.resolve())
            overlay.load_model("model.dpu")
            assert overlay.graph is not None and overlay.runner is not None
            a, c = fix.names["a"], fix.names["c"]
            np.testing.assert_array_equal(_run_int8(overlay.runner, refs[0][a]), refs[0][c])
            first = overlay.runner
            overlay.load_model(folder / "model.dpu")  # again: the first runner is closed
            assert overlay.runner is not first
            with _raises(ExecutionError, "closed"):
                first.execute_async([refs[0][a]], [np.empty(NHWC, np.int8)])
            np.testing.assert_array_equal(_run_int8(overlay.runner, refs[0][a]), refs[0][c])
        assert overlay.runner is None
    with _raises(ProgramError, "no such program file"):
        DpuOverlay(folder / "dpu.bit", backend="golden").load_model("nothing.dpu")


def test_overlay_off_a_board_warns_and_runs_on_the_virtual_board(
    two: Model, two_ref: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DPUKIT_BACKEND", raising=False)
    find_spec = importlib.util.find_spec  # no pynq here; nor on a laptop that has it
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pynq" else find_spec(name, *a),
    )
    with pytest.warns(UserWarning, match="virtual board"):
        overlay = DpuOverlay("dpu.bit")
    with overlay:
        assert overlay.backend == "rtl"
        with pytest.warns(UserWarning, match="2 DPU subgraphs") as caught:
            overlay.load_model(two.path)
        (message,) = [str(w.message) for w in caught]
        assert "subgraph_1_dpu" in message and "Sigmoid" in message
        assert "rtl backend" in repr(overlay.runner)
        n = two.names
        for ref in two_ref:  # the first DPU subgraph, as DPU-PYNQ's runner
            np.testing.assert_array_equal(_run_int8(overlay.runner, ref[n["x"]]), ref[n["y"]])


def test_overlay_with_a_bogus_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with _raises(ExecutionError, "unknown backend 'bogus'"):
        DpuOverlay("dpu.bit", backend="bogus")
    with _raises(BoardError, f"no overlay {tmp_path / 'missing.bit'}"):  # checked at once
        DpuOverlay(tmp_path / "missing.bit", backend="pynq")
    monkeypatch.setenv("DPUKIT_BACKEND", "bogus")
    with _raises(ExecutionError, "DPUKIT_BACKEND='bogus' is no backend"):
        DpuOverlay("dpu.bit")
    monkeypatch.setenv("DPUKIT_BACKEND", "golden")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DpuOverlay("dpu.bit").backend == "golden"  # chosen: no warning


@pytest.fixture(scope="module")
def digits_dpu(digits_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_digits(digits_qdq, tmp_path_factory.mktemp("compat_digits") / "digits.dpu")


def test_overlay_warns_of_an_image_the_host_reshapes(tmp_path: Path) -> None:
    """conv -> Q -> DQ -> Flatten: the model flattens C, H, W; the runner's buffer is
    H, W, C, so a DPU-PYNQ script that reshapes it has the values in another order."""
    model = _flatten_model(tmp_path)
    y = model.names["y"]
    with DpuOverlay("dpu.bit", backend="golden") as overlay:
        with pytest.warns(UserWarning, match="reshaping") as caught:
            overlay.load_model(model.path)
        (message,) = [str(w.message) for w in caught]
        for words in ("runs Flatten", f"reshaping {y}", "C, H, W", "H, W, C", "create_runner"):
            assert words in message, message
        # what the warning says: the script's reshape of the buffer is the model's output
        # in H, W, C order
        x = np.random.default_rng(24).uniform(-2, 2, SHAPE).astype(np.float32)
        (ref,) = [r["output:" + model.program.outputs[0].name] for r in _golden_runs(model, [x])]
        runner = overlay.runner
        (out_t,) = runner.get_output_tensors()
        assert out_t.name == y and out_t.dims == NHWC
        out = np.empty(NHWC, np.float32)
        runner.wait(runner.execute_async([x.transpose(0, 2, 3, 1).copy()], [out]))
        hwc = ref.reshape(SHAPE).transpose(0, 2, 3, 1).reshape(1, -1)
        np.testing.assert_array_equal(out.reshape(1, -1), hwc)
        assert not np.array_equal(out.reshape(1, -1), ref)


def test_overlay_says_nothing_of_the_digits_host_work(digits_dpu: Path) -> None:
    """The digits program's CPU subgraphs quantize, dequantize and stack the image's rows
    (the runner's): nothing for the script to do."""
    ops = {op for sg in Program.load(digits_dpu).subgraphs if sg.device == "CPU" for op in sg.ops}
    assert {"Pad", "Slice", "Concat"} <= ops  # the stacking is there, and hidden
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with DpuOverlay("dpu.bit", backend="golden") as overlay:
            overlay.load_model(digits_dpu)
            assert [t.dims for t in overlay.runner.get_input_tensors()] == [[1, 8, 8, 1]]


# --- 7. types ----------------------------------------------------------------------------------


def _public_callables(module) -> list[tuple[str, object, bool]]:
    """(qualified name, function, is a method taking self/cls) of a module's public API."""
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            found.append((name, obj, False))
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(member, staticmethod):
                    found.append((f"{name}.{attr}", member.__func__, False))
                elif isinstance(member, classmethod):
                    found.append((f"{name}.{attr}", member.__func__, True))
                elif isinstance(member, property):
                    found.append((f"{name}.{attr}", member.fget, True))
                elif inspect.isfunction(member):
                    found.append((f"{name}.{attr}", member, True))
    return found


def test_public_api_is_annotated() -> None:
    missing, seen = [], set()
    for module in (xir, vart, pynq_dpu):
        for name, func, bound in _public_callables(module):
            seen.add(f"{module.__name__.rsplit('.', 1)[1]}.{name}")
            params = list(inspect.signature(func).parameters.values())[1 if bound else 0 :]
            missing += [f"{name}({p.name})" for p in params if p.annotation is p.empty]
            returns = inspect.signature(func).return_annotation
            if returns is inspect.Signature.empty and not name.endswith(".__init__"):
                missing.append(f"{name} -> ?")
    assert not missing, f"public API without annotations: {missing}"
    assert {"xir.Graph.deserialize", "xir.Tensor.dims", "xir.Subgraph.get_attr",
            "vart.Runner.create_runner", "vart.Runner.execute_async", "vart.Runner.wait",
            "vart.choose_backend", "pynq_dpu.DpuOverlay.load_model"} <= seen  # fmt: skip


def test_package_says_it_is_typed(tmp_path: Path) -> None:
    """py.typed marks the package typed (PEP 561), here and in the wheel a user installs,
    which carries the compat modules too."""
    assert (importlib.resources.files("dpukit") / "py.typed").is_file()
    # built from a copy of the sources, so that setuptools' build/ stays out of the checkout
    repo, source = Path(__file__).resolve().parents[1], tmp_path / "source"
    for folder in ("dpukit", "compiler", "host", "sim", "hw", "board_scripts"):
        shutil.copytree(
            repo / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(repo / file, source / file)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*build, "-w", str(tmp_path), str(source)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("dpukit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"dpukit/py.typed", "dpukit/compat/xir.py", "dpukit/compat/vart.py",
            "dpukit/compat/pynq_dpu.py"} <= names  # fmt: skip
