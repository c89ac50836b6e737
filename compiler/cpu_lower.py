"""A CPU part's ONNX nodes -> the numpy executor's graph (host/cpu_ops.py), which a board
without onnx runs; or the reasons it cannot, op by op, so the program keeps the part as ONNX
for onnxruntime and says what a board would lack."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from dpukit.host import cpu_ops


@dataclass
class CpuLowering:
    ops: list[str]  # the ONNX op types of the part, each once, in node order
    unsupported: list[str]  # why the executor cannot run it, one line per node; [] if it can
    graph: cpu_ops.CpuGraph | None  # None when `unsupported` is not empty


def _dtype(elem: int) -> str | None:
    """The numpy name of an ONNX element type, if the executor has it."""
    return cpu_ops.ONNX_DTYPES.get(elem)


def _attrs(node: onnx.NodeProto) -> tuple[dict[str, object], list[str]]:
    """A node's attributes as JSON values, and the ones that have no JSON form here (tensors,
    graphs, lists of strings)."""
    attrs: dict[str, object] = {}
    odd: list[str] = []
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and all(isinstance(v, int | float) for v in value):
            value = list(value)
        elif not isinstance(value, int | float):
            odd.append(a.name)
            continue
        attrs[a.name] = value
    return attrs, odd


def lower_cpu_part(
    nodes: list[onnx.NodeProto],
    inputs: list[str],
    outputs: list[str],
    constants: dict[str, np.ndarray],
    value_types: dict[str, tuple[int, tuple[int | None, ...] | None]],
    opset: int,
) -> CpuLowering:
    """The executor's graph of `nodes` (reading `inputs` and the `constants` they use,
    making `outputs`), each value typed by `value_types` (name -> ONNX element type, shape)."""
    ops = list(dict.fromkeys(n.op_type for n in nodes))
    unsupported: list[str] = []
    graph_nodes: list[cpu_ops.Node] = []
    for node in nodes:
        label = f"{node.op_type} (node '{node.name or node.output[0]}')"
        attrs, odd = _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            why = f"domain '{node.domain}', which the numpy executor lacks"
        elif odd:
            why = f"attribute '{odd[0]}' of a kind the numpy executor does not read"
        else:
            why = cpu_ops.unsupported(node.op_type, attrs, opset) or _dtype_problem(
                node, value_types
            )
        if why:
            unsupported.append(f"{label}: {why}")
            continue
        name = node.name or node.output[0]
        graph_nodes.append(
            cpu_ops.Node(node.op_type, name, list(node.input), list(node.output), attrs)
        )
    if unsupported:
        return CpuLowering(ops, unsupported, None)
    used = {i for n in nodes for i in n.input}

    def value(name: str) -> cpu_ops.ValueInfo:
        elem, shape = value_types.get(name, (onnx.TensorProto.FLOAT, None))
        return cpu_ops.ValueInfo(name, _dtype(elem) or "float32", tuple(shape) if shape else None)

    graph = cpu_ops.CpuGraph(
        opset,
        [value(n) for n in inputs],
        [value(n) for n in outputs],
        graph_nodes,
        {name: np.asarray(constants[name]) for name in sorted(used & constants.keys())},
    )
    return CpuLowering(ops, [], graph)


def _dtype_problem(node: onnx.NodeProto, value_types: dict) -> str | None:
    """A value the node reads or writes of a dtype the executor, or this op, does not take."""
    allowed = cpu_ops.OPS[node.op_type].dtypes
    for k, name in enumerate([*node.input, *node.output]):
        if not name or name not in value_types:
            continue
        dtype = _dtype(value_types[name][0])
        if dtype is None:
            elem = onnx.helper.tensor_dtype_to_string(value_types[name][0])
            return f"'{name}' is {elem.removeprefix('TensorProto.')}, a type it lacks"
        takes = allowed[k] if k < min(len(allowed), len(node.input)) else None
        if takes is not None and dtype not in takes:
            return f"input '{name}' is {dtype}; the numpy executor takes {', '.join(sorted(takes))}"
    return None
