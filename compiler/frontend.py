"""Front end: a QDQ ONNX model (as onnxruntime.quantization.quantize_static writes it) is
read, checked, and folded into quantized DPU operators (`ir.py`); every node the DPU
cannot run stays an ONNX node for the host CPU.

A DPU operator is a float op whose activation inputs come from DequantizeLinear of a
quantized tensor and whose output goes (optionally through Relu/Clip) into QuantizeLinear.
The DQ/Q nodes it absorbs disappear; tensors between DPU and CPU stay quantized.
A conv over an image the host writes (few channels) reads a copy with its kernel rows
stacked, which ONNX nodes on the host build (`_stack_kernel_rows`).

Before any of that, a model is checked for everything that would otherwise fail later, in
onnxruntime at `run` or as silently wrong results: onnx's checker and its strict shape
inference, opsets that exist, dataflow (each tensor made once, before it is read), fixed
input sizes (a symbolic dim besides the batch is an error, never a silent 1), the types a
program carries, and windows and reshapes that fit their inputs. Each failure is one
ModelError naming the file and the node or input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from dpukit.compiler import isa
from dpukit.compiler.ir import (
    DpuOp,
    QAdd,
    QConcat,
    QConv,
    QMaxPool,
    QTensor,
    QView,
    op_inputs,
)
from dpukit.errors import CompileError, ModelError

_ONNX_INT = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8"}


def read_onnx(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read a model file, turning every way a file can be broken into a ModelError; returns
    the model and how error messages name it (its path, or "model")."""
    if isinstance(source, onnx.ModelProto):
        return source, "model"
    where = str(source)
    if not Path(source).is_file():
        raise ModelError(f"{where}: no such file")
    try:
        model = onnx.load(where, load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(
            f"{where}: not a readable ONNX file (truncated or garbled?): {exc}"
        ) from None
    folder = Path(source).parent
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in t.external_data}.get("location", "")
            if not (folder / location).is_file():
                raise ModelError(
                    f"{where}: initializer '{t.name}' is stored in the external data file "
                    f"'{location}', which is not next to the model; copy it to {folder}"
                )
    try:
        onnx.load_external_data_for_model(model, str(folder))
    except Exception as exc:  # a location outside the folder, a file shorter than declared
        raise ModelError(f"{where}: external data cannot be read: {_one_line(exc)}") from None
    return model, where


def check_onnx(model: onnx.ModelProto, where: str) -> None:
    """Everything about a model's structure that onnxruntime would refuse, as a ModelError
    naming the node or field, before anything is compiled."""
    if not model.graph.node:
        raise ModelError(f"{where}: the ONNX graph has no nodes (truncated or garbled file?)")
    _check_opsets(model, where)
    _check_dataflow(model, where)
    _check_ops_known(model, where)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{where}: invalid ONNX model: {onnx_message(exc)}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def onnx_message(exc: Exception) -> str:
    """An error of onnx's checker or shape inference, or of onnxruntime, as one line that
    starts with the node it names (onnxruntime's say "node with name '...'" themselves)."""
    text = _one_line(exc).replace("[ShapeInferenceError] Inference error(s): ", "")
    # "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : /onnxruntime_src/x.h:46 void f(int) ..."
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (/\S+:\d+ [^(]*\([^)]*\) )?", "", text)
    node = re.search(r"\(op_type:(\w+), node name: ([^)]*)\): (?:\[\w+\] )?", text)
    if node:
        return f"node '{node[2]}' ({node[1]}): {text[node.end() :]}"
    node = re.search(r"(.*?) ==> Context: Bad node spec for node\. Name: (\S*) OpType: (\S+)", text)
    if node:
        return f"node '{node[2]}' ({node[3]}): {node[1]}"
    return text


def onnxruntime_refusal(model: bytes) -> str | None:
    """Why onnxruntime would not load a model as the runner does (an op or type it has no
    kernel for, an attribute it rejects), as onnx_message words it; None if it loads."""
    import onnxruntime as ort  # only what reaches onnxruntime pays for the import

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    # the runner's CPU subgraphs run the graph as written (host/runner.py)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per status code
        return onnx_message(exc)
    return None


def _check_opsets(model: onnx.ModelProto, where: str) -> None:
    """Opset versions that exist: onnx's checker accepts any number for the default domain."""
    newest = {"": onnx.defs.onnx_opset_version(), "ai.onnx.ml": onnx.defs.onnx_ml_opset_version()}
    for o in model.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        top = newest.get(domain)
        if o.version < 1 or (top is not None and o.version > top):
            known = f"1..{top}" if top is not None else ">= 1"
            raise ModelError(
                f"{where}: opset_import {o.domain or 'ai.onnx'} version {o.version} does not "
                f"exist (onnx {onnx.__version__} knows {known}); re-export the model with a "
                "released opset"
            )


def _check_dataflow(model: onnx.ModelProto, where: str) -> None:
    """Every tensor made once, every node input made before it is read (no cycles)."""
    g = model.graph
    made = {i.name: "the graph input" for i in g.input}
    made.update((t.name, "an initializer") for t in g.initializer)
    producers = {o: n for n in g.node for o in n.output if o}
    for node in g.node:
        label = f"node '{node.name or node.output[0]}' ({node.op_type})"
        for name in node.input:
            if name and name not in made:
                later = producers.get(name)
                why = (
                    "which no node, input or initializer makes"
                    if later is None
                    else f"which node '{later.name or name}' makes after it (a cycle, or nodes "
                    "out of topological order)"
                )
                raise ModelError(f"{where}: {label} reads '{name}', {why}")
        for name in node.output:
            if name in made:
                raise ModelError(
                    f"{where}: {label} writes '{name}', which {made[name]} already makes; "
                    "every tensor must be made once"
                )
            if name:
                made[name] = f"node '{node.name or name}'"
    for out in g.output:
        if out.name not in made:
            raise ModelError(f"{where}: graph output '{out.name}' is made by no node")


@dataclass
class Lowered:
    """A model folded into DPU ops and CPU nodes, in topological order."""

    where: str  # how messages name the model: its path, or "model"
    model: onnx.ModelProto  # shape-inferred, batch fixed to 1
    items: list[tuple[str, DpuOp | onnx.NodeProto]]  # ("dpu", op) or ("cpu", node)
    tensors: dict[str, QTensor]  # every tensor a DPU op reads or writes
    # name -> (onnx elem type, shape); None for a dim onnx cannot infer (data-dependent)
    value_types: dict[str, tuple[int, tuple[int | None, ...]]]


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.nodes = list(g.node)
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute[0].name == "value":
                self.init[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in g.output}
        self.types = value_types(model)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and name not in self.graph_outputs:
            return users[0]
        return None

    def const(self, name: str) -> np.ndarray | None:
        return self.init.get(name) if name else None


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def set_input_shapes(
    model: onnx.ModelProto, where: str, input_shapes: dict[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """A copy of the model whose named inputs have the given dims, checked against the rank
    and the fixed dims the model declares; the batch (leading) dim must be 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inputs = {i.name: i for i in graph_inputs(model)}
    for name, dims in input_shapes.items():
        dims = tuple(dims)
        inp = inputs.get(name)
        if inp is None:
            raise ModelError(
                f"{where}: the model has no input '{name}' to give a shape to "
                f"(its inputs: {', '.join(inputs) or 'none'})"
            )
        shape = inp.type.tensor_type.shape
        declared = _declared(inp)
        given = _x(dims)
        if not dims or any(d < 1 for d in dims) or dims[0] != 1:
            raise ModelError(
                f"{where}: input shape {given} for '{name}': every dim must be >= 1 and the "
                "leading (batch) dim 1 (the runner loops over a batch)"
            )
        if inp.type.tensor_type.HasField("shape") and len(declared) != len(dims):
            raise ModelError(
                f"{where}: input shape {given} for '{name}' has {len(dims)} dims; the model "
                f"declares {len(declared)}: {_fmt(declared)}"
            )
        for k, (d, want) in enumerate(zip(declared, dims, strict=False)):
            if isinstance(d, int) and k and d != want:
                raise ModelError(
                    f"{where}: input shape {given} for '{name}' has {want} in dim {k}, which "
                    f"the model fixes to {d} ({_fmt(declared)})"
                )
        shape.Clear()
        for d in dims:
            shape.dim.add().dim_value = d
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (an initializer listed as an input is a constant)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _declared(vi: onnx.ValueInfoProto) -> list[int | str]:
    """A value's dims as declared: numbers, or the symbol (or '?') of a symbolic dim."""
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
        for d in vi.type.tensor_type.shape.dim
    ]


def _fmt(dims) -> str:
    return "[" + ", ".join(map(str, dims)) + "]"


def fix_input_shapes(
    model: onnx.ModelProto, where: str, input_shapes: dict[str, tuple[int, ...]] | None
) -> onnx.ModelProto:
    """Compile for batch 1 and fixed sizes: the user's input shapes, a symbolic leading dim
    becomes 1, and any other symbolic dim is an error (never a silent 1)."""
    model = set_input_shapes(model, where, input_shapes or {})
    for inp in graph_inputs(model):  # a sequence or map has no dims: _check_types refuses it
        dims = inp.type.tensor_type.shape.dim
        declared = _declared(inp)
        symbolic = [d for d in declared[1:] if isinstance(d, str)]
        if symbolic:
            raise ModelError(
                f"{where}: input '{inp.name}' has symbolic dims besides the batch, "
                f"{_fmt(declared)}; a DPU program is compiled for fixed sizes: pass "
                f"--input-shape {inp.name}={_x([1, *declared[1:]])} with numbers for "
                f"{', '.join(symbolic)} (from Python: compile_model(..., input_shapes="
                f"{{'{inp.name}': (1, ...)}})), or export the model with fixed input dims"
            )
        if declared and isinstance(declared[0], str):
            dims[0].dim_value = 1
        elif declared and declared[0] != 1:
            raise ModelError(
                f"{where}: input '{inp.name}' has a fixed batch of {declared[0]}; export the "
                "model with batch 1 or a symbolic batch dimension (the runner loops over the "
                "batch)"
            )
    return model


def check_shapes(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """The model with onnx's strict shape and type inference applied (constant shapes
    propagated, as a Reshape's), and its types and sizes checked: what onnxruntime would
    refuse at run time is a ModelError naming the node now."""
    try:
        model = shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
    except Exception as exc:
        raise ModelError(f"{where}: invalid ONNX model: {onnx_message(exc)}") from None
    types = value_types(model)
    _check_types(model, types, where)
    _check_sizes(model, types, where)
    return model


def value_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int | None, ...]]]:
    """Each value's element type and dims (None: a dim onnx cannot infer)."""
    g = model.graph
    types = {
        vi.name: (
            vi.type.tensor_type.elem_type,
            tuple(
                d.dim_value if d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim
            ),
        )
        for vi in [*g.input, *g.value_info, *g.output]
    }
    types.update((t.name, (t.data_type, tuple(t.dims))) for t in g.initializer)
    return types


# Element types a program's inputs and outputs may have (TensorSpec.dtype).
IO_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
}


def _type_name(elem: int) -> str:
    return onnx.TensorProto.DataType.Name(elem).lower() if elem else "of no type"


def _check_types(model: onnx.ModelProto, types: dict, where: str) -> None:
    """Inputs and outputs of types a program carries; quantization to int8/uint8 (the DPU's
    types, int32 for a bias) with float32 scales, as onnxruntime's quantizer writes it."""
    inputs = [i.name for i in graph_inputs(model)]
    for kind, names in (("input", inputs), ("output", [o.name for o in model.graph.output])):
        for name in names:
            elem = types[name][0]
            if elem not in IO_TYPES:
                raise ModelError(
                    f"{where}: graph {kind} '{name}' is {_type_name(elem)}; a program's inputs "
                    f"and outputs are {', '.join(IO_TYPES.values())}: export the model with "
                    "float32 inputs and outputs"
                )
    int8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.domain not in ("", "ai.onnx", "com.microsoft"):
            continue
        label = f"node '{node.name or node.output[0]}' ({node.op_type})"
        q = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
        allowed = int8 if node.op_type == "QuantizeLinear" else int8 | {onnx.TensorProto.INT32}
        elem = types.get(q, (0,))[0]
        if elem not in allowed:
            raise ModelError(
                f"{where}: {label} quantizes '{q}' to {_type_name(elem)}; the DPU computes "
                "with int8/uint8: quantize with QuantType.QInt8 or QUInt8 (as `dpukit "
                "quantize` does)"
            )
        elem = types.get(node.input[1], (0,))[0]
        if elem != onnx.TensorProto.FLOAT:
            raise ModelError(
                f"{where}: {label} has a {_type_name(elem)} scale '{node.input[1]}'; quantize "
                "the float32 model, so that scales are float32"
            )


def _check_sizes(model: onnx.ModelProto, types: dict, where: str) -> None:
    """Inputs of fixed dims >= 1, windows within their padded inputs, and no empty or
    negative-size tensor where onnxruntime would fail at run time: every quantized tensor
    and graph output."""
    g = model.graph
    for inp in graph_inputs(model):
        dims = types[inp.name][1]
        if any(d is not None and d < 1 for d in dims):
            raise ModelError(
                f"{where}: input '{inp.name}' has a zero-size dim "
                f"({_fmt(['?' if d is None else d for d in dims])}); export the model with the "
                "input's real size"
            )
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            _check_window(node, types, where)
        if node.op_type == "Reshape":  # onnx's inference takes the target shape as given
            x, y = (types.get(name, (0, (None,)))[1] for name in (node.input[0], node.output[0]))
            if None not in x + y and math.prod(x) != math.prod(y):
                raise ModelError(
                    f"{where}: node '{node.name or node.output[0]}' (Reshape) reshapes "
                    f"{_fmt(x)} ({math.prod(x)} elements) to {_fmt(y)} ({math.prod(y)}); give "
                    "it a target shape of as many elements"
                )
    quantized = {o.name for o in g.output}
    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            quantized.update((node.input[0], node.output[0]))
    for node in g.node:
        for out in node.output:
            dims = types.get(out, (0, ()))[1]
            if any(d is not None and (d < 0 or d == 0 and out in quantized) for d in dims):
                raise ModelError(
                    f"{where}: node '{node.name or out}' ({node.op_type}) makes '{out}' of "
                    f"shape {_fmt(['?' if d is None else d for d in dims])}, an empty tensor "
                    "onnxruntime cannot run on; check the node's attributes and input shapes"
                )


def _check_window(node: onnx.NodeProto, types: dict, where: str) -> None:
    """A conv or pooling window no larger than its input with the padding around it."""
    a = _attrs(node)
    auto_pad = a.get("auto_pad", b"NOTSET")
    x = types.get(node.input[0], (0, ()))[1][2:]
    kernel = a.get("kernel_shape") or types.get(node.input[1], (0, ()))[1][2:]
    if auto_pad not in (b"NOTSET", b"VALID") or None in x or None in kernel:
        return  # SAME padding never empties the output
    n = len(kernel)
    pads = a.get("pads", [0] * 2 * n) if auto_pad == b"NOTSET" else [0] * 2 * n
    dilation = a.get("dilations", [1] * n)
    if not len(x) == len(dilation) == len(pads) // 2 == n:
        return  # onnx's inference has refused these already
    window = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    padded = [s + pads[i] + pads[i + n] for i, s in enumerate(x)]
    if any(w > p for w, p in zip(window, padded, strict=True)):
        how = f" (kernel {_x(kernel)}, dilation {_x(dilation)})" if max(dilation) > 1 else ""
        raise ModelError(
            f"{where}: node '{node.name or node.output[0]}' ({node.op_type}): its "
            f"{_x(window)} window{how} is larger than its {_x(x)} input padded to "
            f"{_x(padded)} (pads {list(pads)}): the output would be empty; use a smaller "
            "kernel or a larger input"
        )


def _x(dims) -> str:
    return "x".join(map(str, dims))


class _Matcher:
    """Finds DPU operators; records which nodes each one absorbs."""

    def __init__(self, g: _Graph):
        self.g = g
        self.tensors: dict[str, QTensor] = {}
        self.core: set[int] = set()  # ids of nodes that are part of a DPU op
        self.helper: set[int] = set()  # DQ/Flatten nodes a DPU op reads through
        # views a DPU op reads through (DQ -> Flatten -> op, no QuantizeLinear after the
        # Flatten): name -> (source, the Flatten/Reshape node)
        self.views: dict[str, tuple[str, onnx.NodeProto]] = {}

    # -- quantized tensors -------------------------------------------------------------
    def _qparams(self, dq: onnx.NodeProto) -> tuple[float, int, str] | None:
        scale = self.g.const(dq.input[1])
        zp = self.g.const(dq.input[2]) if len(dq.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zp is None or scale.size != 1 or zp.size != 1:
            return None
        dtype = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}.get(zp.dtype)
        if dtype is None:
            return None
        z = int(zp.reshape(())) - (128 if dtype == "uint8" else 0)
        return float(scale.reshape(())), z, dtype

    def _register(self, name: str, scale: float, zp: int, dtype: str) -> str | None:
        shape = self.g.types.get(name, (None, None))[1]
        if shape is None or any(d is None or d <= 0 for d in shape):
            return None
        if len(shape) == 4 and shape[0] == 1:
            hwc = (shape[2], shape[3], shape[1])
        elif len(shape) == 2:
            hwc = (1, shape[0], shape[1])
        else:
            return None
        known = self.tensors.get(name)
        if known:  # seen before (e.g. a view reached again through its DQ): keep it
            return name if (known.scale, known.zero_point) == (scale, zp) else None
        self.tensors[name] = QTensor(name, tuple(shape), scale, zp, dtype, hwc)
        return name

    def act_source(self, name: str, via: list[onnx.NodeProto]) -> str | None:
        """The quantized tensor behind a float activation input (through DQ and views)."""
        p = self.g.producer.get(name)
        if p is None:
            return None
        if p.op_type == "DequantizeLinear" and self.g.const(p.input[0]) is None:
            q = self._qparams(p)
            if q is None or self.g.types.get(p.input[0], (0,))[0] not in _ONNX_INT:
                return None
            via.append(p)
            return self._register(p.input[0], *q)
        if p.op_type in ("Flatten", "Reshape"):
            src = self.act_source(p.input[0], via)
            if src is None:
                return None
            via.append(p)
            view = self._view(src, p.output[0], p)
            if view is not None:
                self.views[view] = (src, p)
            return view
        return None

    def _view(self, src: str, name: str, node: onnx.NodeProto) -> str | None:
        """A Flatten/Reshape of [1,C,H,W] (or [1,K]) into [1, C*H*W]: bytes do not move."""
        t = self.tensors[src]
        shape = self.g.types.get(name, (None, None))[1]
        if shape is None or tuple(shape) != (1, int(np.prod(t.shape))):
            return None
        h, w, c = t.hwc
        flat = (c, h, w) if h * w > 1 else None
        known = self.tensors.get(name)
        if known and (known.scale, known.zero_point) != (t.scale, t.zero_point):
            return None
        self.tensors[name] = QTensor(
            name, tuple(shape), t.scale, t.zero_point, t.onnx_dtype, (1, 1, h * w * c), flat
        )
        return name

    def out_target(self, name: str, fused: list[onnx.NodeProto]):
        """Follow a float output through optional Relu/Clip into QuantizeLinear.

        Returns (quantized tensor name, clamp) or None.
        """
        act = None
        node = self.g.only_consumer(name)
        if node is not None and node.op_type in ("Relu", "Clip"):
            act = node
            fused.append(node)
            node = self.g.only_consumer(node.output[0])
        if node is None or node.op_type != "QuantizeLinear":
            return None
        q = self._qparams(node)
        if q is None:
            return None
        fused.append(node)
        qname = node.output[0]
        # Q -> DQ -> Relu/Clip -> Q with the same scale and zero point twice: the activation
        # joins the op (it clamps values already on the grid: the same result). With
        # another scale the model rounds twice, to each grid in turn, which one
        # requantization does not reproduce: the Relu stays a layer of its own.
        if act is None:
            dq = self.g.only_consumer(qname)
            nxt = self.g.only_consumer(dq.output[0]) if dq is not None else None
            if (
                dq is not None
                and dq.op_type == "DequantizeLinear"
                and nxt is not None
                and nxt.op_type in ("Relu", "Clip")
            ):
                q2 = self.g.only_consumer(nxt.output[0])
                if (
                    q2 is not None
                    and q2.op_type == "QuantizeLinear"
                    and self._qparams(q2) == q
                    and self._qparams(dq) == q
                ):
                    fused += [dq, nxt, q2]
                    act, node, q, qname = nxt, q2, self._qparams(q2), q2.output[0]
        if self._register(qname, *q) is None:
            return None
        scale, zp, _ = q
        clamp = (-128, 127) if act is None else self._clamp(act, scale, zp)
        return (qname, clamp) if clamp else None

    def _clamp(self, act: onnx.NodeProto, scale: float, zp: int) -> tuple[int, int] | None:
        """A Relu/Clip as bounds on the quantized output (None: bounds are not constants)."""
        bounds = self._act_bounds(act)
        if bounds is None:
            return None
        rlo, rhi = bounds
        lo = max(-128, zp + int(np.round(rlo / scale))) if rlo is not None else -128
        hi = min(127, zp + int(np.round(rhi / scale))) if rhi is not None else 127
        return lo, hi

    def _act_bounds(self, node: onnx.NodeProto):
        if node.op_type == "Relu":
            return 0.0, None
        a = _attrs(node)
        lo, hi = a.get("min"), a.get("max")
        if len(node.input) > 1 and node.input[1]:
            v = self.g.const(node.input[1])
            if v is None:
                return None
            lo = float(v)
        if len(node.input) > 2 and node.input[2]:
            v = self.g.const(node.input[2])
            if v is None:
                return None
            hi = float(v)
        return lo, hi

    def weight(self, name: str):
        """int8 weights behind a DequantizeLinear: (int array, per-channel scale, axis)."""
        p = self.g.producer.get(name)
        if p is None or p.op_type != "DequantizeLinear":
            return None
        w = self.g.const(p.input[0])
        scale = self.g.const(p.input[1])
        zp = self.g.const(p.input[2]) if len(p.input) > 2 else None
        if w is None or scale is None or w.dtype != np.int8:
            return None
        if zp is not None and np.any(zp != 0):
            raise ModelError(
                f"node '{p.name}': weights with a non-zero zero point are not supported; "
                "quantize weights symmetrically (extra_options WeightSymmetric=True)"
            )
        self.helper.add(id(p))
        return w, scale.astype(np.float64), _attrs(p).get("axis", 1)

    def bias(self, name: str) -> np.ndarray | None:
        """Real-valued bias (float64) from a DQ of int32, or a float initializer."""
        if not name:
            return None
        if name in self.g.init:
            return self.g.init[name].astype(np.float64)
        p = self.g.producer.get(name)
        if p is None or p.op_type != "DequantizeLinear":
            raise _NoMatch
        b, s = self.g.const(p.input[0]), self.g.const(p.input[1])
        zp = self.g.const(p.input[2]) if len(p.input) > 2 else 0
        if b is None or s is None:
            raise _NoMatch
        self.helper.add(id(p))
        return (b.astype(np.float64) - zp) * s.astype(np.float64)

    # -- operators ---------------------------------------------------------------------
    def match(self, node: onnx.NodeProto) -> DpuOp | None:
        fn = getattr(self, f"_m_{node.op_type}", None)
        if fn is None:
            return None
        via: list[onnx.NodeProto] = []
        fused: list[onnx.NodeProto] = [node]
        try:
            op = fn(node, via, fused)
        except _NoMatch:
            return None
        if op is not None:
            self.core.update(id(n) for n in fused)
            self.helper.update(id(n) for n in via)
        return op

    def _conv_like(self, node, x, w, scale, axis, bias_real, fused, **geom) -> QConv | None:
        out = self.out_target(node.output[0], fused)
        if out is None:
            return None
        y, clamp = out
        tx, ty = self.tensors[x], self.tensors[y]
        co = w.shape[0]
        sw = np.broadcast_to(scale.reshape(-1), (co,)) if scale.size in (1, co) else None
        if sw is None or (scale.size > 1 and axis != 0):
            return None
        acc_scale = tx.scale * sw
        b = np.zeros(co) if bias_real is None else bias_real / acc_scale
        b = np.round(b).astype(np.int64) - tx.zero_point * w.reshape(co, -1).astype(np.int64).sum(1)
        if np.abs(b).max(initial=0) >= 2**31:
            return None
        return QConv(
            name=node.name or node.output[0],
            x=x,
            y=y,
            weight=w,
            bias=b.astype(np.int32),
            multiplier=acc_scale / ty.scale,
            clamp=clamp,
            kind=node.op_type,
            **geom,
        )

    def _m_Conv(self, node, via, fused):
        x = self.act_source(node.input[0], via)
        wq = self.weight(node.input[1])
        if x is None or wq is None or len(self.tensors[x].shape) != 4:
            return None
        w, scale, axis = wq
        a = _attrs(node)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        kh, kw = w.shape[2:]
        pads = a.get("pads", [0, 0, 0, 0])
        return self._conv_like(
            node,
            x,
            w,
            scale,
            axis,
            self.bias(node.input[2] if len(node.input) > 2 else ""),
            fused,
            stride=tuple(a.get("strides", [1, 1])),
            dilation=tuple(a.get("dilations", [1, 1])),
            pads=(pads[0], pads[1], pads[2], pads[3]),
            groups=a.get("group", 1),
        )

    def _fc(self, node, x, w_kn, scale, axis_n, bias_real, fused):
        """Gemm/MatMul as a 1x1 conv; w_kn is [K, N]."""
        tx = self.tensors[x]
        w = np.ascontiguousarray(w_kn.T)  # [N, K]
        if tx.flatten_of is not None:  # weights follow the DPU's HWC byte order
            c, h, wd = tx.flatten_of
            w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        return self._conv_like(
            node,
            x,
            w[:, :, None, None],
            scale,
            0 if scale.size > 1 and axis_n else axis_n,
            bias_real,
            fused,
        )

    def _m_Gemm(self, node, via, fused):
        a = _attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return None
        x = self.act_source(node.input[0], via)
        wq = self.weight(node.input[1])
        if x is None or wq is None:
            return None
        w, scale, axis = wq
        trans_b = a.get("transB", 0)
        w_kn = w.T if trans_b else w
        axis_n = (axis == 0) if trans_b else (axis == 1)
        bias = self.bias(node.input[2] if len(node.input) > 2 else "")
        return self._fc(node, x, w_kn, scale, axis_n, bias, fused)

    def _m_MatMul(self, node, via, fused):
        x = self.act_source(node.input[0], via)
        wq = self.weight(node.input[1])
        if x is None or wq is None or wq[0].ndim != 2:
            return None
        w, scale, axis = wq
        return self._fc(node, x, w, scale, axis in (1, -1), None, fused)

    def _pool_geom(self, node):
        a = _attrs(node)
        if a.get("ceil_mode", 0) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            return None
        k = tuple(a["kernel_shape"])
        p = a.get("pads", [0, 0, 0, 0])
        return a, k, tuple(a.get("strides", [1, 1])), (p[0], p[1], p[2], p[3])

    def _m_MaxPool(self, node, via, fused):
        geom = self._pool_geom(node)
        x = self.act_source(node.input[0], via)
        if geom is None or x is None or len(node.output) > 1 and node.output[1]:
            return None
        _, k, s, p = geom
        return self._maxpool(node, x, k, s, p, fused)

    def _maxpool(self, node, x, k, s, p, fused):
        out = self.out_target(node.output[0], fused)
        if out is None:
            return None
        y, clamp = out
        ratio = self.tensors[x].scale / self.tensors[y].scale
        return QMaxPool(node.name or y, x, y, k, s, p, ratio, clamp)

    def _m_Relu(self, node, via, fused):
        """A Relu/Clip the producer could not absorb: a requantizing 1x1 copy with a clamp."""
        x = self.act_source(node.input[0], via)
        q = self.g.only_consumer(node.output[0])
        if x is None or q is None or q.op_type != "QuantizeLinear" or self._qparams(q) is None:
            return None
        if len(self.tensors[x].shape) not in (2, 4):
            return None
        scale, zp, _ = self._qparams(q)
        clamp = self._clamp(node, scale, zp)
        y = self._register(q.output[0], *self._qparams(q))
        if clamp is None or y is None:
            return None
        fused.append(q)
        ratio = self.tensors[x].scale / scale
        return QMaxPool(
            node.name or y, x, y, (1, 1), (1, 1), (0, 0, 0, 0), ratio, clamp, node.op_type
        )

    _m_Clip = _m_Relu

    def _avgpool(self, node, x, k, s, p, fused):
        """Average pooling = depthwise conv with weights 1, dividing in the requantizer."""
        c = self.tensors[x].hwc[2]
        w = np.ones((c, 1, *k), np.int8)
        op = self._conv_like(
            node, x, w, np.full(1, 1.0 / (k[0] * k[1])), 0, None, fused, stride=s, pads=p, groups=c
        )
        return op

    def _m_AveragePool(self, node, via, fused):
        geom = self._pool_geom(node)
        x = self.act_source(node.input[0], via)
        if geom is None or x is None:
            return None
        a, k, s, p = geom
        if any(p) and not a.get("count_include_pad", 0):
            return None  # the divisor would change at the borders: left to the CPU
        return self._avgpool(node, x, k, s, p, fused)

    def _m_GlobalAveragePool(self, node, via, fused):
        x = self.act_source(node.input[0], via)
        if x is None or len(self.tensors[x].shape) != 4:
            return None
        h, w, _ = self.tensors[x].hwc
        return self._avgpool(node, x, (h, w), (1, 1), (0, 0, 0, 0), fused)

    def _m_Add(self, node, via, fused):
        a = self.act_source(node.input[0], via)
        b = self.act_source(node.input[1], via)
        if a is None or b is None or self.tensors[a].hwc != self.tensors[b].hwc:
            return None
        out = self.out_target(node.output[0], fused)
        if out is None or self.tensors[out[0]].hwc != self.tensors[a].hwc:
            return None
        return QAdd(node.name or out[0], a, b, out[0], out[1])

    def _m_Concat(self, node, via, fused):
        xs = [self.act_source(i, via) for i in node.input]
        if any(x is None for x in xs):
            return None
        rank = len(self.tensors[xs[0]].shape)
        axis = _attrs(node)["axis"] % rank
        if axis != 1 or len({self.tensors[x].hwc[:2] for x in xs}) != 1:
            return None
        out = self.out_target(node.output[0], fused)
        if out is None or out[1] != (-128, 127):
            return None
        return QConcat(node.name or out[0], tuple(xs), out[0])

    def _m_Flatten(self, node, via, fused):
        """DQ -> Flatten -> Q with one scale: a view."""
        x = self.act_source(node.input[0], via)
        q = self.g.only_consumer(node.output[0])
        if x is None or q is None or q.op_type != "QuantizeLinear":
            return None
        params = self._qparams(q)
        t = self.tensors[x]
        if params is None or params[:2] != (t.scale, t.zero_point):
            return None
        fused.append(q)
        y = self._view(x, q.output[0], node)
        return QView(node.name or q.output[0], x, y, node.op_type) if y else None

    _m_Reshape = _m_Flatten


class _NoMatch(Exception):
    pass


def lower(
    source: str | Path | onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> Lowered:
    """Fold a QDQ model into DPU ops and CPU nodes; `input_shapes` fixes symbolic input dims."""
    model, where = read_onnx(source)
    check_onnx(model, where)
    ops = {n.op_type for n in model.graph.node}
    if not ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        raise ModelError(
            f"{where}: the model is not quantized (no QuantizeLinear/DequantizeLinear nodes). "
            "Quantize it first: `dpukit quantize model.onnx -o model.qdq.onnx` or "
            "onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)"
        )
    model = check_shapes(fix_input_shapes(model, where, input_shapes), where)
    g = _Graph(model)
    for name in g.graph_outputs:
        if None in g.types[name][1]:
            raise ModelError(
                f"{where}: graph output '{name}' has a size onnx cannot infer from the input "
                "shapes (it depends on the data); a program's outputs have fixed sizes"
            )
    m = _Matcher(g)
    matched: dict[int, DpuOp] = {}
    for node in g.nodes:
        if id(node) in m.core:
            continue
        op = m.match(node)
        if op is not None:
            matched[id(node)] = op
    _check_pads(where, matched.values())
    absorbed = set(m.core)
    for node in reversed(g.nodes):  # a helper DQ/view goes only if nothing else needs it
        if id(node) in m.helper and all(
            o not in g.graph_outputs and all(id(c) in absorbed for c in g.consumers.get(o, []))
            for o in node.output
        ):
            absorbed.add(id(node))
    items: list[tuple[str, DpuOp | onnx.NodeProto]] = []
    made: set[str] = set()
    for node in g.nodes:
        if id(node) in matched:
            op = matched[id(node)]
            # A view an op reads through is a DPU op of its own (it moves no data), so the
            # view aliases its source's bytes and the subgraph makes it.
            for view in _views_read(op, m.views, made):
                src, flatten = m.views[view]
                items.append(("dpu", QView(flatten.name or view, src, view, flatten.op_type)))
            items.append(("dpu", op))
            made.add(op.y)
        elif id(node) not in absorbed and node.op_type != "Constant":
            items.append(("cpu", node))
    items = _stack_kernel_rows(model, items, m.tensors, g.types)
    used = {t for _, op in items if not isinstance(op, onnx.NodeProto) for t in _op_tensors(op)}
    tensors = {k: v for k, v in m.tensors.items() if k in used}
    return Lowered(where, model, items, tensors, g.types)


def _views_read(op: DpuOp, views: dict[str, tuple[str, onnx.NodeProto]], made: set[str]):
    """The views `op` reads that nothing has made yet, sources first; marks them made."""
    order: list[str] = []
    for name in op_inputs(op):
        chain = []
        while name in views and name not in made:
            chain.append(name)
            made.add(name)
            name = views[name][0]
        order += reversed(chain)
    return order


# Padding a LOAD adds around the data it reads, at most (the ISA's pad fields).
MAX_PAD = next(f.hi for f in isa.LAYOUT[isa.Opcode.LOAD] if f.name == "pad_top")


def _check_pads(where: str, ops) -> None:
    """Convolutions and pools pad at most MAX_PAD rows or columns on the DPU; checked before
    any layer is tiled (and before a conv's padding moves to the host, _stack_kernel_rows)."""
    for op in ops:
        if isinstance(op, QConv | QMaxPool) and max(op.pads) > MAX_PAD:
            raise CompileError(
                f"{where}: layer '{op.name}' ({op.kind}) pads {max(op.pads)} rows or columns; "
                f"the DPU's LOAD adds at most {MAX_PAD}: reduce the padding (pads "
                f"{list(op.pads)}, top/left/bottom/right)"
            )


# Inputs with at most this many channels (gray, RGB, RGBA images: no more than any shipped
# array has rows) that the host writes reach their convolutions with the kernel rows stacked.
STACK_MAX_CHANNELS = 4
_ONNX_TYPE = {"int8": onnx.TensorProto.INT8, "uint8": onnx.TensorProto.UINT8}


def _stack_kernel_rows(
    model: onnx.ModelProto,
    items: list[tuple[str, DpuOp | onnx.NodeProto]],
    tensors: dict[str, QTensor],
    types: dict[str, tuple[int, tuple[int, ...]]],
) -> list[tuple[str, DpuOp | onnx.NodeProto]]:
    """Give each conv over a host-written input of few channels (a network's image) a copy
    of it with its kernel rows stacked, built on the host by ONNX nodes (Pad, Slice, Concat)
    next to the ones producing the input.

    Stacked pixel (oy, x) holds the kh input pixels (oy*sh + ky*dh - pad_top, x - pad_left)
    for ky < kh, zero point where that is padding: channel ky*ci + c. The conv becomes a
    1 x kw conv with no padding over kh*ci channels, whose kernel-row window is kw*kh*ci
    consecutive bytes, so the code generator fills the array's rows with it (a 7x7 conv of
    3 channels runs 10 weight folds of 16 rows per output instead of 49 of 3). The host
    writes kh/sh times the input's bytes; the arithmetic is unchanged, bit for bit.
    """
    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if opset < 11:  # Pad takes its pads as an input from opset 11
        return items
    dpu_made = {op.y for dev, op in items if dev == "dpu"}
    out = []
    host_nodes: dict[str, list[onnx.NodeProto]] = {}  # by the tensor they read
    for dev, op in items:
        x = tensors.get(op.x) if dev == "dpu" and isinstance(op, QConv) else None
        if (
            x is None
            or op.x in dpu_made
            or len(x.shape) != 4
            or x.hwc[2] > STACK_MAX_CHANNELS
            or op.groups != 1
            or op.kernel[0] == 1
            or op.dilation[1] != 1
        ):
            out.append((dev, op))
            continue
        nodes, conv = _stacked_conv(model, op, x, tensors, types)
        host_nodes.setdefault(op.x, []).extend(nodes)
        out.append(("dpu", conv))
    # the host's nodes right after the node making their input (or first: a graph input),
    # so they join its CPU subgraph
    made_at = {o: k for k, (dev, n) in enumerate(out) if dev == "cpu" for o in n.output}
    for src in sorted(host_nodes, key=lambda t: -made_at.get(t, -1)):
        at = made_at.get(src, -1) + 1
        out[at:at] = [("cpu", n) for n in host_nodes[src]]
    return out


def _stacked_conv(
    model: onnx.ModelProto,
    op: QConv,
    x: QTensor,
    tensors: dict[str, QTensor],
    types: dict[str, tuple[int, tuple[int, ...]]],
) -> tuple[list[onnx.NodeProto], QConv]:
    """The host's nodes building op's stacked input, and op reading it."""
    h, w, ci = x.hwc
    ho, wo, _ = tensors[op.y].hwc
    kh, kw = op.kernel
    sh, sw = op.stride
    dh, dw = op.dilation
    pt, pl, _, _ = op.pads
    rows = (ho - 1) * sh + (kh - 1) * dh + 1  # padded input rows and columns the conv reads
    cols = (wo - 1) * sw + (kw - 1) * dw + 1
    prefix = f"{op.name}/stacked_rows"
    dtype = np.uint8 if x.onnx_dtype == "uint8" else np.int8
    zp = x.zero_point + (128 if x.onnx_dtype == "uint8" else 0)

    def const(name: str, value) -> str:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    pads = [0, 0, pt, pl, 0, 0, max(0, rows - pt - h), max(0, cols - pl - w)]
    padded = f"{prefix}/padded"
    nodes = [
        onnx.helper.make_node(
            "Pad",
            [
                op.x,
                const(f"{prefix}/pads", np.array(pads, np.int64)),
                const(f"{prefix}/zero_point", np.array(zp, dtype)),
            ],
            [padded],
            name=f"{prefix}/pad",
        )
    ]
    parts = []
    for ky in range(kh):
        part = f"{prefix}/ky{ky}"
        start = ky * dh
        nodes.append(
            onnx.helper.make_node(
                "Slice",
                [
                    padded,
                    const(f"{part}/starts", np.array([start, 0], np.int64)),
                    const(f"{part}/ends", np.array([start + (ho - 1) * sh + 1, cols], np.int64)),
                    const(f"{part}/axes", np.array([2, 3], np.int64)),
                    const(f"{part}/steps", np.array([sh, 1], np.int64)),
                ],
                [part],
                name=f"{part}/slice",
            )
        )
        parts.append(part)
    name = f"{prefix}/stacked"
    nodes.append(onnx.helper.make_node("Concat", parts, [name], name=f"{prefix}/concat", axis=1))
    shape = (1, kh * ci, ho, cols)
    tensors[name] = QTensor(name, shape, x.scale, x.zero_point, x.onnx_dtype, (ho, cols, kh * ci))
    types[name] = (_ONNX_TYPE[x.onnx_dtype], shape)
    # weight [co, ci, ky, kx] -> [co, ky*ci + c, 1, kx]
    weight = op.weight.transpose(0, 2, 1, 3).reshape(op.weight.shape[0], kh * ci, 1, kw)
    conv = replace(
        op, x=name, weight=weight, stride=(1, sw), dilation=(1, dw), pads=(0, 0, 0, 0), source=op.x
    )
    return nodes, conv


def _op_tensors(op: DpuOp) -> tuple[str, ...]:
    return (*op_inputs(op), op.y)


def _check_ops_known(model: onnx.ModelProto, where: str) -> None:
    """An op that neither the DPU nor onnxruntime on the host can run is an error now."""
    opset = {o.domain: o.version for o in model.opset_import}
    for node in model.graph.node:
        domain = node.domain if node.domain not in ("ai.onnx",) else ""
        if domain in ("", "com.microsoft"):
            try:
                onnx.defs.get_schema(node.op_type, opset.get(domain, 1), domain)
                continue
            except Exception:
                if domain == "com.microsoft":
                    continue  # onnxruntime's contrib ops are not in onnx's registry
        raise ModelError(
            f"{where}: node '{node.name or node.output[0]}' "
            f"({node.domain + '.' if node.domain else ''}"
            f"{node.op_type}) can run neither on the DPU nor on the host (onnxruntime); "
            "replace it or implement it as a standard ONNX op"
        )
