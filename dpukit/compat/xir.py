"""Vitis AI's `xir` graph API, read-only, over a dpukit program (a `.dpu` file).

    from dpukit.compat import xir            # instead of: import xir
    graph = xir.Graph.deserialize("model.dpu")
    subgraphs = graph.get_root_subgraph().toposort_child_subgraph()
    dpu = [s for s in subgraphs if s.has_attr("device") and s.get_attr("device").upper() == "DPU"]

A view, not a copy: the root subgraph stands for the program, its children are the program's
subgraphs in execution order (each with a "device" attribute, "DPU" or "CPU"), and a
`Tensor` is a value of the program. `Graph.program` is the Program underneath.

What a DPU subgraph's tensors show is what the DPU stores, as Vitis AI shows it:
- dtype "xint8"; dims in the DPU's layout: [1, H, W, C] for an image (an ONNX model's
  [1, C, H, W]), the ONNX shape otherwise (a flattened image's elements in H, W, C order);
- attributes "scale" and "zero_point" (real = scale * (q - zero_point), q the int8 the DPU
  holds: a uint8 ONNX tensor's zero point is shifted by -128), and "fix_point" where the
  scale is an exact power of two and the zero point 0 (real = q * 2**-fix_point, Vitis AI's
  form); also "bit_width" 8, "if_signed" True, "ddr_addr" (its offset in the data window),
  and "onnx_dtype" / "onnx_shape" (what the ONNX graph calls it).
- The stacked kernel rows the compiler builds on the host from another input of the same
  subgraph (for a conv over an image of few channels, compiler/frontend.py) are not shown,
  neither as that subgraph's input nor as the CPU subgraph's output: VART users give the
  image; `vart.Runner` builds the stacked rows from it with the compiler's own nodes.
Graph inputs and outputs that only the CPU sees keep their ONNX dtype and shape.

Board-side code: Python 3.10, numpy < 2, no onnx.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from dpukit.compiler.ir import QTensor
from dpukit.compiler.program import Program
from dpukit.errors import ProgramError
from dpukit.host import cpu_ops

_ITEM_BYTES = {"xint8": 1, "int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2,
               "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8,
               "float64": 8}  # fmt: skip


def load_program(path: str | os.PathLike) -> Program:
    """A `.dpu` program, or one error saying what else the file is (a Vitis AI xmodel)."""
    try:
        return Program.load(path)
    except ProgramError as exc:
        if Path(path).suffix.lower() == ".xmodel" and "bad magic" in str(exc):
            raise ProgramError(
                f"{path} is a Vitis AI xmodel, not a dpukit program: dpukit runs its own DPU. "
                "Quantize and compile the model's ONNX (`dpukit quantize`, `dpukit compile`) "
                "and load the .dpu it writes"
            ) from None
        raise


def fix_point(scale: float, zero_point: int) -> int | None:
    """Vitis AI's fix point of an int8 quantization (real = q * 2**-fix_point), or None when
    it has none: the scale is not an exact power of two, or the zero point is not 0."""
    mantissa, exponent = math.frexp(scale)
    return 1 - exponent if mantissa == 0.5 and zero_point == 0 else None


class Tensor:
    """A value of the program (xir.Tensor's reading side)."""

    def __init__(self, name: str, dims: list[int], dtype: str, attrs: dict[str, Any]) -> None:
        self._name, self._dims, self._dtype, self._attrs = name, list(dims), dtype, attrs

    @property
    def name(self) -> str:
        return self._name

    @property
    def dims(self) -> list[int]:
        return list(self._dims)

    @property
    def ndim(self) -> int:
        return len(self._dims)

    @property
    def dtype(self) -> str:
        """xint8 for what the DPU holds; the numpy name for a value only the CPU sees."""
        return self._dtype

    def get_element_num(self) -> int:
        return math.prod(self._dims)

    def get_data_size(self) -> int:
        """Bytes of the whole tensor (batch included), as xir counts them."""
        return self.get_element_num() * _ITEM_BYTES.get(self._dtype, 0)

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def get_attr(self, name: str) -> Any:
        if name not in self._attrs:
            why = ""
            if name == "fix_point" and "scale" in self._attrs:
                why = (
                    f" (its scale {self._attrs['scale']!r} and zero point "
                    f"{self._attrs['zero_point']} are not a power-of-two quantization: "
                    "real = scale * (q - zero_point))"
                )
            raise KeyError(
                f"tensor '{self._name}' has no attr '{name}'{why}; its attrs: "
                f"{', '.join(sorted(self._attrs)) or 'none'}"
            )
        return copy.deepcopy(self._attrs[name])  # the view's own stays as it is

    def get_attrs(self) -> dict[str, Any]:
        return copy.deepcopy(self._attrs)

    def __repr__(self) -> str:
        return f"<xir.Tensor named '{self._name}'>"

    def __str__(self) -> str:
        return (
            f"{{name: '{self._name}', shape: {self._dims}, type: '{self._dtype}', "
            f"attrs: {self._attrs}}}"
        )


def dpu_dims(t: QTensor) -> list[int]:
    """A DPU tensor's dims as Vitis AI shows them: [1, H, W, C] for an image, else ONNX's
    (the bytes are the DPU's DRAM order either way, host/layout.py)."""
    h, w, c = t.hwc
    return [1, h, w, c] if len(t.shape) == 4 else list(t.shape)


def _dpu_tensor(t: QTensor, ddr_addr: int) -> Tensor:
    attrs: dict[str, Any] = {
        "scale": float(t.scale),
        "zero_point": int(t.zero_point),
        "bit_width": 8,
        "if_signed": True,
        "ddr_addr": int(ddr_addr),
        "onnx_dtype": t.onnx_dtype,
        "onnx_shape": list(t.shape),
    }
    fp = fix_point(t.scale, t.zero_point)
    if fp is not None:
        attrs["fix_point"] = fp
    return Tensor(t.name, dpu_dims(t), "xint8", attrs)


class Subgraph:
    """The root (the whole program) or one of its subgraphs (a leaf, on one device)."""

    def __init__(self, graph: Graph, index: int | None) -> None:
        self._graph, self.index = graph, index  # index: the program's subgraph; None: root
        program = graph.program
        if index is None:
            self._name = "root"
            self._attrs: dict[str, Any] = {}
            self._inputs = [s.name for s in program.inputs]
            self._outputs = [s.name for s in program.outputs]
            self._derived: cpu_ops.CpuGraph | None = None
            return
        sg = program.subgraphs[index]
        self._name = sg.name
        self._attrs = {"device": sg.device, "kind": sg.kind}
        if sg.device == "DPU":
            self._attrs["dpu_fingerprint"] = program.fingerprint
            self._attrs["hwconfig"] = program.config["name"]
            self._attrs["layers"] = [layer["name"] for layer in sg.layers]
        else:
            self._attrs["ops"] = list(sg.ops)
        self._derived = _host_derived(graph, index) if sg.device == "DPU" else None
        made = {v.name for v in self._derived.outputs} if self._derived else set()
        self._inputs = [name for name in sg.inputs if name not in made]
        self._outputs = list(sg.outputs)

    def _hide(self, derived: set[str]) -> None:
        """Leave out the values the DPU subgraphs' views derive (they belong to those views)."""
        self._outputs = [name for name in self._outputs if name not in derived]

    def get_name(self) -> str:
        return self._name

    @property
    def is_root(self) -> bool:
        return self.index is None

    @property
    def is_leaf(self) -> bool:
        return self.index is not None or not self._graph.program.subgraphs

    @property
    def depth(self) -> int:
        return 0 if self.index is None else 1

    @property
    def root(self) -> Subgraph:
        return self._graph.get_root_subgraph()

    def get_parent(self) -> Subgraph | None:
        return None if self.index is None else self.root

    def get_graph(self) -> Graph:
        return self._graph

    def get_children(self) -> list[Subgraph]:
        return self.toposort_child_subgraph()

    def get_children_num(self) -> int:
        return len(self.get_children())

    def toposort_child_subgraph(self) -> list[Subgraph]:
        """The program's subgraphs in the order they run (a program's order is topological)."""
        return [] if self.index is not None else list(self._graph._children)

    def get_input_tensors(self) -> list[Tensor]:
        return [self._graph.tensor(name) for name in self._inputs]

    def get_output_tensors(self) -> list[Tensor]:
        return [self._graph.tensor(name) for name in self._outputs]

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def get_attr(self, name: str) -> Any:
        if name not in self._attrs:
            raise KeyError(
                f"subgraph '{self._name}' has no attr '{name}'; its attrs: "
                f"{', '.join(sorted(self._attrs)) or 'none (the root)'}"
            )
        return copy.deepcopy(self._attrs[name])  # the view's own stays as it is

    def get_attrs(self) -> dict[str, Any]:
        return copy.deepcopy(self._attrs)

    @property
    def host_derived(self) -> cpu_ops.CpuGraph | None:
        """A DPU subgraph's stacked-rows inputs: the graph building them from the inputs they
        stack (ONNX layout), or None when every input is the user's."""
        return self._derived

    def __repr__(self) -> str:
        return f"<xir.Subgraph named '{self._name}'>"

    def __str__(self) -> str:
        return f"{{name: '{self._name}', attrs: {self._attrs}}}"


class Graph:
    """A program as an xir graph. `Graph.deserialize(path)` reads a `.dpu` file."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self._tensors: dict[str, Tensor] = {}
        self._cpu_graphs: dict[int, cpu_ops.CpuGraph | None] = {}  # decoded once, when read
        self._root = Subgraph(self, None)
        self._children = [Subgraph(self, k) for k in range(len(program.subgraphs))]
        derived = {v.name for s in self._children if s.host_derived for v in s.host_derived.outputs}
        for child in self._children:
            if child.get_attr("device") == "CPU":
                child._hide(derived)

    @staticmethod
    def deserialize(fname: str | os.PathLike) -> Graph:
        """The program in `fname` (a `.dpu` file; a ProgramError says what is wrong with it)."""
        return Graph(load_program(fname))

    def get_name(self) -> str:
        return Path(self.program.source).stem

    def get_root_subgraph(self) -> Subgraph:
        return self._root

    def tensor(self, name: str) -> Tensor:
        """The program's value `name`: what the DPU stores, or a value only the CPU sees."""
        if name not in self._tensors:
            p = self.program
            if name in p.tensors:
                self._tensors[name] = _dpu_tensor(p.tensors[name], p.dram_offsets[name])
            else:
                dtype, shape = p.value_type(name) or ("unknown", ())
                self._tensors[name] = Tensor(name, list(shape or ()), dtype, {})
        return self._tensors[name]

    def cpu_graph(self, index: int) -> cpu_ops.CpuGraph | None:
        """CPU subgraph `index`'s nodes for finding stacked rows (`_cpu_graph`), decoded on
        first use: every DPU subgraph after it looks."""
        if index not in self._cpu_graphs:
            self._cpu_graphs[index] = _cpu_graph(self.program.subgraphs[index])
        return self._cpu_graphs[index]

    def __repr__(self) -> str:
        return f"<xir.Graph named '{self.get_name()}'>"


def _host_derived(graph: Graph, index: int) -> cpu_ops.CpuGraph | None:
    """The compiler's stacked kernel rows among the inputs of DPU subgraph `index`, as one
    graph computing them from the inputs they stack; None if it reads none.

    compiler/frontend.py (`_stacked_conv`) builds them on the host, in the CPU subgraph that
    makes their source: a Pad of the source (another input of the same DPU subgraph), one
    Slice of it per kernel row, a Concat on channels. Only that shape counts: anything else
    a CPU subgraph computes stays an input the caller gives, as in VART."""
    program = graph.program
    sg = program.subgraphs[index]
    derived: list[str] = []
    nodes: list[cpu_ops.Node] = []
    constants: dict = {}
    opset = 0
    for k, cpu in enumerate(program.subgraphs[:index]):
        part = graph.cpu_graph(k) if cpu.device == "CPU" else None
        if part is None:
            continue
        producer = {o: node for node in part.nodes for o in node.outputs}
        for name in sg.inputs:
            found = _stacking(name, producer, part.constants, set(sg.inputs) - {name})
            if found and name not in derived:
                derived.append(name)
                nodes += found
                reads = {i for n in found for i in n.inputs}
                constants.update((c, part.constants[c]) for c in reads & part.constants.keys())
                opset = part.opset
    sources = list(dict.fromkeys(n.inputs[0] for n in nodes if n.op_type == "Pad"))
    if not derived or set(sources) & set(derived):
        return None
    return cpu_ops.CpuGraph(
        opset=opset,
        inputs=[_value_info(program.tensors[name]) for name in sources],
        outputs=[_value_info(program.tensors[name]) for name in derived],
        nodes=nodes,
        constants=constants,
    )


def _stacking(
    name: str, producer: dict, constants: dict, others: set[str]
) -> list[cpu_ops.Node] | None:
    """The Pad, Slices and Concat that make `name` the stacked rows of one of `others`, or
    None if something else makes it."""
    concat = producer.get(name)
    if concat is None or concat.op_type != "Concat" or concat.attrs.get("axis") != 1:
        return None
    slices = [producer.get(i) for i in concat.inputs]
    if not slices or any(n is None or n.op_type != "Slice" for n in slices):
        return None
    padded = {n.inputs[0] for n in slices}
    if len(padded) != 1 or any(i and i not in constants for n in slices for i in n.inputs[1:]):
        return None
    pad = producer.get(padded.pop())
    if (
        pad is None
        or pad.op_type != "Pad"
        or pad.inputs[0] not in others
        or any(i and i not in constants for i in pad.inputs[1:])
    ):
        return None
    return [pad, *slices, concat]


def _cpu_graph(sg) -> cpu_ops.CpuGraph | None:
    """A CPU subgraph's nodes and constants, for finding the stacked rows: its numpy graph,
    or its ONNX one's Pad, Slice and Concat nodes lowered to the numpy executor. That takes
    onnx, which only a laptop has (`dpukit compile --board` never leaves an ONNX subgraph);
    without it, None: such a subgraph's stacked rows are then an input like any other."""
    if sg.kind == "numpy":
        return cpu_ops.decode(sg.payload)
    try:
        import onnx
        from onnx import numpy_helper

        from dpukit.compiler.cpu_lower import lower_cpu_part
    except ImportError:
        return None
    model = onnx.load_from_string(sg.payload)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes: list[cpu_ops.Node] = []
    for node in model.graph.node:  # one at a time: a node the executor lacks is left out
        if node.op_type in ("Pad", "Slice", "Concat"):
            lowered = lower_cpu_part([node], [], [], constants, {}, opset).graph
            nodes += lowered.nodes if lowered else []
    return cpu_ops.CpuGraph(opset, [], [], nodes, constants)


def _value_info(t: QTensor) -> cpu_ops.ValueInfo:
    return cpu_ops.ValueInfo(t.name, t.onnx_dtype, tuple(t.shape))
