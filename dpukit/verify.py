"""The truth chain for a user's own model: the DPU against onnxruntime, layer by layer.

A QDQ model means what onnxruntime computes with graph optimizations off: DequantizeLinear,
the float op, QuantizeLinear, node by node, in float32. The DPU computes each layer in exact
integer arithmetic and requantizes with a 22-bit multiplier, rounding half to even.

`verify_model` runs a compiled program and, for every layer (the DPU's, and the host's
between and after them), feeds onnxruntime the very inputs that layer read, then sorts each
output element:

- equal;
- a rounding tie: 1 LSB apart where the exact value before rounding is x.5 (within the
  DPU's requantization precision), which float32 evaluation breaks either way;
- onnxruntime's float32 error: the program rounds the exact value right and onnxruntime's
  float32 sum landed across a rounding boundary (large sums that cancel);
- away from both: a bug.
The exact values come from onnx's reference evaluator on the layer in float64, evaluated
only for layers where the program and onnxruntime differ.

End to end, a tie flipped in one layer changes the next layer's inputs and can grow through
the network, so end-to-end outputs need not be equal even when every layer is right. Each
layer's end-to-end difference is checked against a bound: the differences measured at its
inputs, propagated through the layer's absolute weights (its sensitivity), plus one LSB for
a rounding of its own. A difference above the bound is not explained by ties: also a bug.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from dpukit.compiler.compile import compile_model
from dpukit.compiler.frontend import check_onnx, read_onnx
from dpukit.compiler.hwconfig import DEFAULT_CONFIG, HwConfig
from dpukit.compiler.program import Program
from dpukit.errors import DpuKitError, ModelError
from dpukit.host.cpu import cpu_graph_nodes
from dpukit.host.layout import from_dram
from dpukit.host.runner import Runner, create_runner

# Without the exact value (a layer the reference evaluator is not given), a 1-LSB
# difference counts as a tie when onnxruntime's value is this close to x.5 (in LSB). On
# ResNet-18 at 224x224 the ties lay within 3.2e-5 LSB of x.5 (bench/run.py records
# LayerCheck.tie_offset_max).
TIE_WINDOW = 1e-3
# The DPU requantizes with 22-bit multipliers (codegen.requant_params, codegen's Add), so
# its value before rounding is within this fraction of the magnitudes summed into it.
DPU_PRECISION = 2.0**-21

# The float ops a DPU layer's region holds (compiler/frontend.py), by how they act on
# differences of their inputs: monotone pooling and reshaping act on them as they are (the
# max and the mean of differences bound the differences of max and mean); Relu and Clip
# are 1-Lipschitz; Conv, Gemm, MatMul act through |W|; Add adds them; Concat joins them.
_SAME_ON_DIFFERENCES = {"MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape"}
_IDENTITY_ON_DIFFERENCES = {"Relu", "Clip"}
_LINEAR = {"Conv", "Gemm", "MatMul"}
_REGION_OPS = _SAME_ON_DIFFERENCES | _IDENTITY_ON_DIFFERENCES | _LINEAR | {"Add", "Concat"}


class VerificationError(DpuKitError):
    """The program does not compute what the model means (a compiler or hardware bug)."""


@dataclass
class LayerCheck:
    """One layer over all samples; element counts summed over the samples."""

    subgraph: str
    layer: str
    kind: str
    device: str  # "DPU", or "CPU" for a layer the host computes between DPU subgraphs
    output: str  # the quantized tensor the layer writes
    elements: int = 0
    equal: int = 0  # equal to onnxruntime fed the same inputs
    ties: int = 0  # 1 LSB apart at a rounding tie
    float32_off: int = 0  # the program rounds the exact value; onnxruntime's float32 does not
    away: int = 0  # different from the exact value's rounding: a bug
    max_lsb: int = 0
    exact: bool = True  # differences judged against exact values (else TIE_WINDOW)
    tie_offset_max: float = 0.0  # how far from x.5 (in LSB) the ties lay
    e2e_differ: int = 0  # differ from onnxruntime run on the whole model
    e2e_max_lsb: int = 0
    e2e_bound_max: int | None = 0  # the largest difference ties can explain; None: no bound
    e2e_unexplained: int = 0  # above that bound: a bug
    rtl_vs_golden_differ: int | None = None  # rtl backend only: elements where RTL != golden


@dataclass
class OutputCheck:
    """A graph output, end to end: the program against onnxruntime on the whole model."""

    name: str
    elements: int = 0
    equal: int = 0
    max_diff: float = 0.0  # in LSB of the output's scale if it is quantized, else absolute
    unit: str = "abs"  # "LSB" (checked against the bound), or "abs" (a float output: not)
    bound_max: int | None = None
    unexplained: int = 0
    top1_agree: int | None = None  # samples whose argmax agree (2-D outputs)
    top1_at_risk: int | None = None  # samples whose top class ties could change


@dataclass
class VerifyReport:
    model: str
    config: str
    backend: str
    samples: int
    layers: list[LayerCheck]
    outputs: list[OutputCheck]
    host_tensors_differ: dict[str, int]  # tensors the host quantizes from the graph inputs
    seconds: float
    unchecked: list[str] = field(default_factory=list)  # what no check covers, and why

    @property
    def bugs(self) -> list[str]:
        """Each failed check, in the order data flows, as a sentence naming the layer."""
        found = [
            f"tensor {name}, which the host quantizes from the graph input, differs from "
            f"onnxruntime in {count} elements"
            for name, count in self.host_tensors_differ.items()
        ]
        for c in self.layers:
            where = f"layer {c.layer} ({c.device} {c.kind}, output {c.output})"
            if c.away:
                found.append(
                    f"{where}: {c.away} of {c.elements} elements differ from onnxruntime "
                    f"away from a rounding tie (max {c.max_lsb} LSB)"
                )
            elif c.e2e_unexplained:  # (after a wrong layer its own excess says nothing new)
                found.append(
                    f"{where}: {c.e2e_unexplained} elements differ end to end by more than "
                    "ties can explain"
                )
            if c.rtl_vs_golden_differ:
                found.append(
                    f"{where}: the RTL differs from the golden model in "
                    f"{c.rtl_vs_golden_differ} elements"
                )
        return found

    @property
    def ok(self) -> bool:
        return not self.bugs

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "bugs": self.bugs}


# -- the model's graph: quantization parameters and layer regions ------------------------------


class _Graph:
    """The model as verify reads it. (Read here rather than through the compiler's front
    end, so a misreading there is not repeated in the check.)"""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in g.node for o in n.output}
        self.graph_inputs = {i.name for i in g.input} - set(self.inits)
        self.order = {id(n): k for k, n in enumerate(g.node)}

    def qparams(self, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero point) of a QuantizeLinear or DequantizeLinear node."""
        scale = self.inits[node.input[1]].astype(np.float64)
        zp = self.inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        return scale, (np.zeros((), np.int64) if zp is None else zp.astype(np.int64))

    def quantized_dtype(self, q: onnx.NodeProto) -> str:
        """The type a QuantizeLinear makes: its zero point's (uint8 without one, per ONNX)."""
        zp = q.input[2] if len(q.input) > 2 else ""
        return self.inits[zp].dtype.name if zp else "uint8"

    def quantized_by(self, name: str) -> onnx.NodeProto | None:
        """The QuantizeLinear that makes ``name``, if one does."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == "QuantizeLinear" else None

    def dequantized_output(self, name: str) -> str | None:
        """The quantized tensor behind a graph output a DequantizeLinear makes, if any."""
        node = self.producer.get(name)
        return node.input[0] if node is not None and node.op_type == "DequantizeLinear" else None


@dataclass
class _Region:
    """The float ops from some quantized tensors to the QuantizeLinear that writes one of
    them: what one layer means."""

    q: onnx.NodeProto
    nodes: list[onnx.NodeProto]  # in the model's order, the QuantizeLinear excluded
    sources: list[str]  # the quantized tensors it reads

    @property
    def output(self) -> str:
        return self.q.output[0]


def _regions(g: _Graph, known: set[str]) -> list[_Region]:
    """Every QuantizeLinear writing a known quantized tensor from other known ones through
    float ops (one fed from the graph input, the host quantizing the image, is no layer)."""
    regions = []
    for q in g.model.graph.node:
        if q.op_type != "QuantizeLinear" or q.output[0] not in known:
            continue
        sources, nodes, stack, seen, from_host = set(), {}, [q.input[0]], set(), False
        while stack:
            t = stack.pop()
            if t in seen or not t or t in g.inits:
                continue
            seen.add(t)
            if t in known:
                sources.add(t)
            elif t in g.graph_inputs:
                from_host = True
            else:
                node = g.producer[t]
                nodes[id(node)] = node
                stack.extend(node.input)
        if not from_host:
            ordered = sorted(nodes.values(), key=lambda n: g.order[id(n)])
            regions.append(_Region(q, ordered, sorted(sources)))
    return regions


def reference_session(
    model: str | Path | onnx.ModelProto, optimize: bool = False
) -> ort.InferenceSession:
    """onnxruntime on a QDQ graph as written (the model's reference meaning), or with its
    default graph optimizations (``optimize``: fused integer kernels)."""
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    # Sessions take turns with the golden model; idle worker threads must not spin on the
    # cores it is about to use.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _submodel(g: _Graph, nodes, inputs, outputs, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "verify",
        inputs,
        outputs,
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=list(g.model.opset_import))
    model.ir_version = g.model.ir_version
    return model


def _layer_model(g: _Graph, r: _Region, types: dict[str, tuple[str, tuple]]) -> onnx.ModelProto:
    """The region alone: quantized sources in; out the value before QuantizeLinear and the
    quantized value onnxruntime makes of it."""
    nodes = [n for n in r.nodes if n.op_type != "Constant"] + [r.q]
    used = {i for n in nodes for i in n.input}
    inits = {k: v for k, v in g.inits.items() if k in used}
    ins = [
        helper.make_tensor_value_info(
            s, helper.np_dtype_to_tensor_dtype(np.dtype(types[s][0])), list(types[s][1])
        )
        for s in r.sources
    ]
    outs = [helper.make_empty_tensor_value_info(name) for name in (r.q.input[0], r.output)]
    return _submodel(g, nodes, ins, outs, inits)


def _dequantized_constant(g: _Graph, dq: onnx.NodeProto) -> np.ndarray:
    """DequantizeLinear of a constant in float64 (exact: int8 times a float32 scale), per-axis
    scales broadcast as ONNX does."""
    x = g.inits[dq.input[0]].astype(np.float64)
    scale, zp = g.qparams(dq)
    if scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (x - zp) * scale


def _inner_rounding(g: _Graph, r: _Region, n: onnx.NodeProto) -> bool:
    """A QuantizeLinear inside the region whose DequantizeLinear consumer has its scale and
    zero point, and so do the region's own: Q -> DQ -> Relu/Clip -> Q, the last rounding a
    no-op on values already on the grid. The region rounds once, at this node."""
    users = [m for m in r.nodes if n.output[0] in m.input]
    if len(users) != 1 or users[0].op_type != "DequantizeLinear":
        return False
    params = [g.qparams(x) for x in (n, users[0], r.q)]
    return all(
        np.array_equal(s, params[0][0]) and np.array_equal(z, params[0][1]) for s, z in params
    )


def _exact_model(g: _Graph, r: _Region) -> ReferenceEvaluator | None:
    """The region in float64 on dequantized sources (`x:<source>`), up to the value before
    its QuantizeLinear, for onnx's reference evaluator: the exact value the DPU rounds
    (float64 sums of exact products: ~1e-9 LSB off). None for an op it is not given."""
    nodes, inits = [], {}
    rename = {s: f"x:{s}" for s in r.sources}
    ins = [
        helper.make_tensor_value_info(f"x:{s}", onnx.TensorProto.DOUBLE, None) for s in r.sources
    ]

    def x(name: str) -> str:
        return rename.get(name, name)

    for n in r.nodes:
        if n.op_type == "Constant":
            continue
        if n.op_type == "DequantizeLinear":
            if n.input[0] in g.inits:
                inits[f"x:{n.output[0]}"] = _dequantized_constant(g, n)
                rename[n.output[0]] = f"x:{n.output[0]}"
            else:  # a source (dequantized by the caller) or the inner grid of Q -> DQ
                rename[n.output[0]] = x(n.input[0])
            continue
        if n.op_type == "QuantizeLinear":
            if not _inner_rounding(g, r, n):
                return None
            rename[n.output[0]] = x(n.input[0])  # the region rounds at its end instead
            continue
        if n.op_type not in _REGION_OPS:
            return None
        for i in n.input:
            if i in g.inits and x(i) == i:
                value = g.inits[i]
                inits[i] = value.astype(np.float64) if value.dtype.kind == "f" else value
        nodes.append(
            helper.make_node(n.op_type, [x(i) for i in n.input], [f"x:{n.output[0]}"],
                             **{a.name: helper.get_attribute_value(a) for a in n.attribute})
        )  # fmt: skip
        rename[n.output[0]] = f"x:{n.output[0]}"
    out = helper.make_tensor_value_info(x(r.q.input[0]), onnx.TensorProto.DOUBLE, None)
    return ReferenceEvaluator(_submodel(g, nodes, ins, [out], inits))


def _sensitivity_model(g: _Graph, r: _Region, types) -> onnx.ModelProto | None:
    """The region rewritten to map |input differences| (in their LSB) to an upper bound of
    |output difference| before rounding (in output LSB), element by element. Fed the
    inputs' magnitudes |q - zero point| instead, it gives the magnitude of what the layer
    sums (the bias aside). None when the region holds an op it does not know."""
    nodes, inits = [], {}
    variable = {f"d:{s}" for s in r.sources}
    rename = {s: f"d:{s}" for s in r.sources}

    def d(name: str) -> str:
        return rename.get(name, name)

    for n in r.nodes:
        out = f"d:{n.output[0]}"
        if n.op_type == "Constant":
            continue
        ins = [i for i in n.input if i]
        var = [i for i in ins if d(i) in variable]
        if n.op_type == "DequantizeLinear":
            if n.input[0] in g.inits:
                inits[out] = np.abs(_dequantized_constant(g, n)).astype(np.float32)
            else:
                scale, _ = g.qparams(n)
                if scale.size != 1:
                    return None
                inits[f"{out}:scale"] = np.float32(scale.reshape(()))
                nodes.append(helper.make_node("Mul", [d(n.input[0]), f"{out}:scale"], [out]))
                variable.add(out)
        elif n.op_type == "QuantizeLinear":
            if not _inner_rounding(g, r, n):
                return None
            scale, _ = g.qparams(n)  # back to LSB: the DequantizeLinear after it scales again
            inits[f"{out}:scale"] = np.float32(scale.reshape(()))
            nodes.append(helper.make_node("Div", [d(n.input[0]), f"{out}:scale"], [out]))
            variable.add(out)
        elif n.op_type in _LINEAR:
            weight = d(n.input[1])
            if var != [n.input[0]] or weight not in inits:  # weights: a DequantizeLinear
                return None
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            attrs.pop("beta", None)  # no bias: it moves both sides alike
            nodes.append(helper.make_node(n.op_type, [d(n.input[0]), weight], [out], **attrs))
            variable.add(out)
        elif n.op_type in ("Add", "Concat"):
            if var != ins:  # a constant operand: not in a DPU layer
                return None
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            nodes.append(helper.make_node(n.op_type, [d(i) for i in ins], [out], **attrs))
            variable.add(out)
        elif n.op_type in _IDENTITY_ON_DIFFERENCES:
            nodes.append(helper.make_node("Identity", [d(n.input[0])], [out]))
            variable.add(out)
        elif n.op_type in _SAME_ON_DIFFERENCES:
            if var != [n.input[0]]:
                return None
            for i in ins[1:]:  # a Reshape's shape: the same constant
                if i not in g.inits:
                    return None
                inits[f"d:{i}"] = g.inits[i]
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            inputs = [d(n.input[0])] + [f"d:{i}" for i in ins[1:]]
            nodes.append(helper.make_node(n.op_type, inputs, [out], **attrs))
            variable.add(out)
        else:
            return None
        rename[n.output[0]] = out
    scale, _ = g.qparams(r.q)
    inits["d:out_scale"] = np.float32(scale.reshape(()))
    nodes.append(helper.make_node("Div", [d(r.q.input[0]), "d:out_scale"], ["bound"]))
    ins = [
        helper.make_tensor_value_info(f"d:{s}", onnx.TensorProto.FLOAT, list(types[s][1]))
        for s in r.sources
    ]
    out = helper.make_tensor_value_info("bound", onnx.TensorProto.FLOAT, None)
    return _submodel(g, nodes, ins, [out], inits)


def _whole_model(g: _Graph, extra: list[str]) -> onnx.ModelProto:
    """The model with these intermediate tensors added as outputs (nothing else changes)."""
    model = onnx.ModelProto()
    model.CopyFrom(g.model)
    have = {o.name for o in model.graph.output}
    for name in extra:
        if name not in have:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
            have.add(name)
    return model


# -- comparing ---------------------------------------------------------------------------------


def _bias_lsb(g: _Graph, r: _Region, out_scale: np.ndarray) -> np.ndarray | float:
    """|bias| of the region's Conv or Gemm in output LSB, shaped to broadcast over its
    output (channels on axis 1); 0 without one."""
    for n in r.nodes:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2]:
            dq = g.producer.get(n.input[2])
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in g.inits:
                return 0.0
            bias = np.abs(_dequantized_constant(g, dq)).reshape(-1) / out_scale.reshape(())
            return bias.reshape(1, -1, 1, 1) if n.op_type == "Conv" else bias.reshape(1, -1)
    return 0.0


def _tie_offset(v: np.ndarray) -> np.ndarray:
    """How far each value lies from the nearest x.5, in LSB."""
    return np.abs(v - np.floor(v) - 0.5)


def _rounded(v: np.ndarray, zp: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """What QuantizeLinear makes of ``v`` (in LSB) computed exactly: half to even, clipped."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(v) + int(zp.reshape(())), info.min, info.max).astype(np.int64)


def dpu_tensors(runner: Runner, program: Program) -> dict[str, np.ndarray]:
    """Every DPU tensor of the last run, read back from the data window (each tensor has
    DRAM bytes of its own; a view reads its source's bytes in its own shape)."""
    out = {}
    for name, t in program.tensors.items():
        off = program.dram_offsets[name]
        out[name] = from_dram(t, runner.dram[off : off + t.nbytes])
    return out


class _Values:
    """What the program computed for every quantized tensor verify knows: the DPU's tensors
    in its memory, quantized graph inputs, and the quantized values behind the graph outputs
    a DequantizeLinear makes (recovered from the outputs: dequantizing is exact)."""

    def __init__(self, g: _Graph, program: Program):
        self.g, self.program = g, program
        in_dram = {
            t for t in program.tensors if g.quantized_by(t) is not None or (t in g.graph_inputs)
        }  # (a tensor the compiler made up, or a float view, has no quantized counterpart)
        self.outputs = {}  # quantized tensor -> (graph output, scale, zp, dtype)
        for o in g.model.graph.output:
            q = g.dequantized_output(o.name)
            if q is not None and g.quantized_by(q) is not None and q not in in_dram:
                scale, zp = g.qparams(g.producer[o.name])
                self.outputs[q] = (o.name, scale, zp, g.quantized_dtype(g.quantized_by(q)))
        self.in_dram = in_dram
        self.known = in_dram | set(self.outputs)

    def types(self) -> dict[str, tuple[str, tuple]]:
        """(dtype, shape) of every known tensor, batch 1."""
        types = {t: (self.program.tensors[t].onnx_dtype, self.program.tensors[t].shape)
                 for t in self.in_dram}  # fmt: skip
        for q, (name, *_rest, dtype) in self.outputs.items():
            spec = next(s for s in self.program.outputs if s.name == name)
            types[q] = (dtype, tuple(spec.shape))
        return types

    def of_run(self, runner: Runner, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = {t: v for t, v in dpu_tensors(runner, self.program).items() if t in self.in_dram}
        for q, (name, scale, zp, dtype) in self.outputs.items():
            values[q] = _rounded(outputs[name].astype(np.float64) / scale.reshape(()), zp, dtype)
        return values


def verify_model(
    model: str | Path | onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    config: str | HwConfig | None = None,
    *,
    backend: str = "golden",
    program: Program | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Compile ``model`` for ``config`` (default pynq-z2; ``input_shapes`` as compile_model
    takes them), or take its compiled ``program``, run every sample of ``inputs`` (stacked
    along axis 0) on ``backend`` and check it against onnxruntime layer by layer and end to
    end. ``report.ok`` is False when a check found a bug; a model or program that cannot
    run, or a program compiled from another model, raises a DpuKitError."""
    start = time.perf_counter()
    if program is None:
        program = compile_model(model, config or DEFAULT_CONFIG, input_shapes)
    qdq, where = read_onnx(model)
    check_onnx(qdq, where)
    g = _Graph(qdq)
    _check_compiled_from(g, program, where)
    runner = create_runner(program, backend=backend, config=config)  # None: the program's
    cfg = runner.cfg
    golden = create_runner(program, backend="golden", config=cfg) if backend != "golden" else None
    values = _Values(g, program)
    checks, unchecked = _layer_checks(g, program, values, where)
    outputs = {o.name: _OutputCheck(g, o.name, values) for o in qdq.graph.output}
    in_model = values.known - g.graph_inputs
    whole = reference_session(
        _whole_model(g, sorted(in_model | {c.region.q.input[0] for c in checks}))
    )
    whole_names = [o.name for o in whole.get_outputs()]
    host_made = {t for t in in_model if _quantized_by_host(g, t, values.known)}
    host_differ: dict[str, int] = {}
    unchecked += [f"output {o.name}: a float output, compared but not bounded"
                  for o in outputs.values() if o.quantized is None]  # fmt: skip

    n = len(next(iter(inputs.values())))
    for b in range(n):
        feed = {k: np.asarray(v)[b : b + 1] for k, v in inputs.items()}
        result = runner.run(feed)
        got = values.of_run(runner, result.outputs)
        ref = dict(zip(whole_names, whole.run(whole_names, _feed(whole, feed)), strict=True))
        ref.update({t: feed[t] for t in values.known & g.graph_inputs})  # fed alike
        gold = None
        if golden is not None:
            golden.run(feed)
            gold = dpu_tensors(golden, program)
        # end-to-end differences of every quantized tensor, in its LSB
        delta = {t: np.abs(got[t].astype(np.int64) - ref[t].astype(np.int64)) for t in got}
        for t in host_made:  # the host quantizes the image as onnxruntime does: no excuse
            if delta[t].any():
                host_differ[t] = host_differ.get(t, 0) + int((delta[t] > 0).sum())
        bounds = {c.region.output: c.add_sample(got, ref, delta, gold) for c in checks}
        for o in outputs.values():
            o.add_sample(result.outputs[o.name], ref, delta, bounds)
        if progress:
            progress(b + 1, n)

    return VerifyReport(
        model=where,
        config=cfg.name,
        backend=backend,
        samples=n,
        layers=[c.c for c in checks],
        outputs=[o.c for o in outputs.values()],
        host_tensors_differ=host_differ,
        seconds=time.perf_counter() - start,
        unchecked=unchecked,
    )


def _feed(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: feed[i.name] for i in session.get_inputs()}


def _check_compiled_from(g: _Graph, program: Program, where: str) -> None:
    """The program's inputs, outputs and quantized tensors are the model's, else checking
    one against the other would report a program for another model as broken."""

    def differ(what: str) -> ModelError:
        return ModelError(
            f"{program.label} was not compiled from {where}: {what}; compile this model "
            f"(`dpukit compile {where}`) or verify the model it was compiled from"
        )

    ins = [i.name for i in g.model.graph.input if i.name not in g.inits]
    outs = [o.name for o in g.model.graph.output]
    if [s.name for s in program.inputs] != ins or [s.name for s in program.outputs] != outs:
        raise differ(
            f"the program takes {[s.name for s in program.inputs]} and gives "
            f"{[s.name for s in program.outputs]}, the model {ins} and {outs}"
        )
    for name, t in program.tensors.items():
        q = g.quantized_by(name)
        if q is None:
            continue
        scale, zp = g.qparams(q)
        dtype = g.quantized_dtype(q)
        zp_dpu = int(zp.reshape(())) - (128 if dtype == "uint8" else 0)  # the DPU's int8 domain
        if (float(scale.reshape(())), zp_dpu, dtype) != (t.scale, t.zero_point, t.onnx_dtype):
            raise differ(f"tensor {name} has another scale or zero point")


def _layer_checks(g: _Graph, program: Program, values: _Values, where: str):
    """A checker for every layer: the DPU's (matched by the tensor each writes) and the
    host's between them; and the DPU layers no check covers (views move no data)."""
    dpu_layers = {
        layer["output"]: (sg.name, layer)
        for sg in program.subgraphs
        if sg.device == "DPU"
        for layer in sg.layers
    }
    host_subgraph = {}
    for sg in program.subgraphs:
        if sg.device == "CPU":
            for node in cpu_graph_nodes(sg):
                host_subgraph.update(dict.fromkeys(node.outputs, sg.name))
    types = values.types()
    checks, covered = [], set()
    for r in _regions(g, values.known):
        if r.output in dpu_layers:
            sg, layer = dpu_layers[r.output]
            checks.append(_LayerChecker(g, r, types, sg, layer["name"], layer["kind"], "DPU"))
            covered.add(r.output)
        else:
            core = next((n for n in r.nodes if n.op_type != "DequantizeLinear"), r.q)
            name = core.name or core.output[0]
            sg = host_subgraph.get(r.output, "host")
            checks.append(_LayerChecker(g, r, types, sg, name, core.op_type, "CPU"))
    unchecked = []
    for out, (_, layer) in dpu_layers.items():
        if out in covered or layer["tile"] == "view":
            continue
        if g.quantized_by(out) is None:
            raise ModelError(
                f"{program.label} was not compiled from {where}: layer {layer['name']} writes "
                f"{out}, which no QuantizeLinear of the model makes"
            )
        unchecked.append(f"layer {layer['name']}: its inputs are not all known to verify")
    if not any(c.c.device == "DPU" for c in checks):
        raise ModelError(f"{where}: no DPU layer to verify (the whole model runs on the host)")
    return checks, unchecked


class _LayerChecker:
    """The checks of one layer, accumulated over the samples."""

    def __init__(self, g: _Graph, region: _Region, types, subgraph, layer, kind, device):
        self.g, self.region = g, region
        self.scale, self.zp = g.qparams(region.q)
        self.dtype = np.dtype(types[region.output][0])
        # each source's (scale, zero point), as the region's DequantizeLinear reads it
        self.sources = {
            n.input[0]: g.qparams(n)
            for n in region.nodes
            if n.op_type == "DequantizeLinear" and n.input[0] in region.sources
        }
        self.session = reference_session(_layer_model(g, region, types))
        self.exact = _exact_model(g, region)
        self.adds = any(n.op_type == "Add" for n in region.nodes)
        self.bias = _bias_lsb(g, region, self.scale)
        sensitivity = _sensitivity_model(g, region, types)
        self.sensitivity = None if sensitivity is None else reference_session(sensitivity)
        self.c = LayerCheck(
            subgraph,
            layer,
            kind,
            device,
            region.output,
            exact=self.exact is not None,
            e2e_bound_max=0 if self.sensitivity is not None else None,
        )

    def _exact_lsb(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The exact value before rounding (in LSB) on these quantized inputs."""
        feed = {
            f"x:{s}": (values[s].astype(np.float64) - zp) * scale
            for s, (scale, zp) in self.sources.items()
        }
        return self.exact.run(None, feed)[0] / self.scale.reshape(())

    def _precision(self, values: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
        """How far the DPU's value before rounding may lie from the exact value ``v``.

        A sum of products is exact in integers and then requantized: the error scales with
        the value without its bias (at most |v| + |bias|). An Add requantizes each operand
        before it sums them: the error scales with what it sums, which the sensitivity
        model gives from the operands' magnitudes."""
        if self.adds and self.sensitivity is not None:
            scale = self._magnitude(values)
        else:
            scale = np.abs(v) + self.bias
        return DPU_PRECISION * (scale + 1)

    def _magnitude(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """What the layer sums, in magnitude (output LSB), the bias aside."""
        feed = {
            f"d:{s}": np.abs(values[s].astype(np.int64) - zp).astype(np.float32)
            for s, (_, zp) in self.sources.items()
        }
        return self.sensitivity.run(None, feed)[0].astype(np.float64)

    def add_sample(self, got, ref, delta, gold) -> np.ndarray | None:
        """Check one sample; returns the end-to-end bound of each output element."""
        r, c = self.region, self.c
        mine = got[r.output].astype(np.int64)
        # 1. the layer on the very inputs it read
        pre, expected = self.session.run(None, {s: got[s] for s in r.sources})
        diff = np.abs(mine - expected.astype(np.int64))
        differ = diff > 0
        tie = fine = np.zeros(diff.shape, bool)
        if differ.any():
            tie, fine = self._judge(mine, pre, got, diff)
        c.elements += diff.size
        c.equal += int((~differ).sum())
        c.ties += int(tie.sum())
        c.float32_off += int((fine & ~tie).sum())
        c.away += int((differ & ~fine).sum())
        c.max_lsb = max(c.max_lsb, int(diff.max(initial=0)))
        # 2. end to end, against what the differences upstream and a rounding can explain
        e2e = delta[r.output]
        c.e2e_differ += int((e2e > 0).sum())
        c.e2e_max_lsb = max(c.e2e_max_lsb, int(e2e.max(initial=0)))
        bound = None
        if self.sensitivity is not None:
            bound = self._bound(delta, fine, ref)
            beyond = e2e > bound
            c.e2e_bound_max = max(c.e2e_bound_max or 0, int(bound.max(initial=0)))
            c.e2e_unexplained += int(beyond.sum())
        if gold is not None and r.output in gold:
            differ_rtl = int((got[r.output] != gold[r.output]).sum())
            c.rtl_vs_golden_differ = (c.rtl_vs_golden_differ or 0) + differ_rtl
        return bound

    def _judge(self, mine, pre, got, diff) -> tuple[np.ndarray, np.ndarray]:
        """Of the elements that differ from onnxruntime: (ties, all the program got right).

        Right is the exact value rounded half to even, or either neighbour where the exact
        value lies within the DPU's precision of x.5. Without the exact value: one LSB
        where onnxruntime's value is within TIE_WINDOW of x.5."""
        c, differ = self.c, diff > 0
        if self.exact is None:
            offset = _tie_offset(pre.astype(np.float64) / self.scale.reshape(()))
            tie = (diff == 1) & (offset < TIE_WINDOW)
            c.tie_offset_max = max(c.tie_offset_max, float(offset[tie].max(initial=0.0)))
            return tie, tie
        v = self._exact_lsb(got)
        window = self._precision(got, v)
        offset = _tie_offset(v)
        near = offset <= window
        off_by = np.abs(mine - _rounded(v, self.zp, self.dtype))
        fine = differ & ((off_by == 0) | ((off_by == 1) & near))
        tie = fine & near
        c.tie_offset_max = max(c.tie_offset_max, float(offset[tie].max(initial=0.0)))
        return tie, fine

    def _bound(self, delta, fine, ref) -> np.ndarray:
        """With P the input differences propagated through the layer's sensitivity, the
        exact values before rounding differ by at most P, and |round(a) - round(b)| <=
        floor(|a - b|) + 1. Where P is 0 both sides round the same value: they differ only
        where the layer check found a tie (or onnxruntime's float32 off)."""
        feed = {f"d:{s}": delta[s].astype(np.float32) for s in self.region.sources}
        p = np.broadcast_to(self.sensitivity.run(None, feed)[0].astype(np.float64), fine.shape)
        bound = np.where(p > 0, np.floor(p + TIE_WINDOW) + 1, fine).astype(np.int64)
        over = delta[self.region.output] > bound
        if over.any() and self.exact is not None:
            # onnxruntime's own float32 error on its inputs, and the DPU's precision, may add
            # to P: measured here exactly, where the plain bound is exceeded
            v_ref = self._exact_lsb(ref)
            own = np.abs(
                ref[self.region.q.input[0]].astype(np.float64) / self.scale.reshape(()) - v_ref
            )
            window = self._precision(ref, v_ref)
            bound = np.where(p > 0, np.floor(p + own + window + TIE_WINDOW) + 1, bound)
        return bound


class _OutputCheck:
    """A graph output end to end, in LSB when a DequantizeLinear of a known quantized tensor
    makes it."""

    def __init__(self, g: _Graph, name: str, values: _Values):
        self.name = name
        q = g.dequantized_output(name)
        self.quantized = q if q in values.known else None
        self.c = OutputCheck(name, unit="LSB" if self.quantized else "abs")

    def add_sample(self, got, ref, delta, bounds) -> None:
        c = self.c
        a, b = got.astype(np.float64), ref[self.name].astype(np.float64)
        c.elements += a.size
        c.equal += int((a == b).sum())
        bound = None
        if self.quantized is not None:
            diff = delta[self.quantized]
            bound = bounds.get(self.quantized)
            if bound is not None:
                c.bound_max = max(c.bound_max or 0, int(bound.max(initial=0)))
                c.unexplained += int((diff > bound).sum())
            c.max_diff = max(c.max_diff, float(diff.max(initial=0)))
        else:
            c.max_diff = max(c.max_diff, float(np.abs(a - b).max(initial=0)))
        if a.ndim == 2 and a.shape[1] > 1:
            c.top1_agree = (c.top1_agree or 0) + int((a.argmax(1) == b.argmax(1)).sum())
            if bound is not None:
                c.top1_at_risk = (c.top1_at_risk or 0) + top1_at_risk(
                    ref[self.quantized].astype(np.int64), bound
                )


def top1_at_risk(ref: np.ndarray, bound: np.ndarray) -> int:
    """Rows (samples) whose top class could change within the bound: another class is as
    close to the top one as their two bounds together. Elsewhere, a program within the
    bound element by element has the reference's top class."""
    rows = np.arange(len(ref))
    top = ref.argmax(axis=1)
    reach = ref[rows, top][:, None] - ref <= bound[rows, top][:, None] + bound
    reach[rows, top] = False
    return int(reach.any(axis=1).sum())


def output_lsb(model: str | Path | onnx.ModelProto, output: int = 0) -> float:
    """One LSB of a QDQ model's output in float: the scale of the DequantizeLinear that
    makes it (ModelError if another op makes it)."""
    qdq, where = read_onnx(model)
    g = _Graph(qdq)
    name = qdq.graph.output[output].name
    if g.dequantized_output(name) is None:
        raise ModelError(f"{where}: output '{name}' is not made by a DequantizeLinear")
    scale, _ = g.qparams(g.producer[name])
    return float(scale.reshape(()))


def _quantized_by_host(g: _Graph, tensor: str, known: set[str]) -> bool:
    """True when the host makes ``tensor`` from the graph inputs without reading another
    quantized tensor: the same onnxruntime ops on the same values as the reference."""
    node = g.producer[tensor]
    stack, seen = list(node.input), set()
    while stack:
        t = stack.pop()
        if t in known:  # (a quantized graph input is read as it is, by a layer)
            return False
        if t in seen or not t or t in g.inits or t in g.graph_inputs:
            continue
        seen.add(t)
        stack.extend(g.producer[t].input)
    return True
