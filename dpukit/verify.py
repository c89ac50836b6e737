"""The truth chain for a user's own model: the DPU against onnxruntime, layer by layer.

A QDQ model means what onnxruntime computes with graph optimizations off: DequantizeLinear,
the float op, QuantizeLinear, node by node, in float32. The DPU computes each layer in exact
integer arithmetic and rounds half to even. Both are right, so they can differ by one LSB
where the value before rounding is an exact tie (x.5), which float32 evaluation breaks
either way. Anything else is a bug.

`verify_model` runs a compiled program and, for every DPU layer, feeds onnxruntime the very
inputs that layer read from the DPU's memory, then sorts each output element: equal, one
LSB apart at a rounding tie, or different away from a tie (a bug).

End to end, a tie flipped in one layer changes the next layer's inputs and can grow through
the network, so end-to-end outputs need not be equal even when every layer is right. To
tell that growth from a bug, each layer's end-to-end difference is checked against a bound.
The bound is derived from the differences measured at the layer's inputs, propagated
through the layer's absolute weights (its sensitivity), plus one LSB for a tie of its own.
A difference above the bound is not explained by ties: also a bug.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from dpukit.compiler.compile import compile_model
from dpukit.compiler.frontend import check_onnx, read_onnx
from dpukit.compiler.hwconfig import DEFAULT_CONFIG, HwConfig
from dpukit.compiler.program import Program
from dpukit.errors import DpuKitError, ModelError
from dpukit.host.layout import from_dram
from dpukit.host.runner import Runner, create_runner

# A 1-LSB difference counts as a rounding tie when onnxruntime's value before rounding is
# this close to x.5 (in LSB). float32 evaluation moves a value by far less: on ResNet-18 at
# 224x224 (sums of up to 4,608 products) the ties lay within 3.2e-5 LSB of x.5 (bench/run.py
# records LayerCheck.tie_offset_max).
TIE_WINDOW = 1e-3

# Ops whose sensitivity to input differences the bound knows (see _sensitivity_model).
_SAME_ON_DIFFERENCES = {
    "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose",
    "Squeeze", "Unsqueeze", "Pad",
}  # fmt: skip
_IDENTITY_ON_DIFFERENCES = {"Relu", "Clip", "Identity", "LeakyRelu"}


class VerificationError(DpuKitError):
    """The program does not compute what the model means (a compiler or hardware bug)."""


@dataclass
class LayerCheck:
    """One DPU layer over all samples; element counts summed over the samples."""

    subgraph: str
    layer: str
    kind: str
    output: str  # the tensor the layer writes
    elements: int = 0
    equal: int = 0  # equal to onnxruntime fed the same inputs
    ties: int = 0  # one LSB apart at a rounding tie
    away: int = 0  # different away from a tie: a bug
    max_lsb: int = 0
    tie_offset_max: float = 0.0  # how far from x.5 (in LSB) the ties lay: << TIE_WINDOW
    e2e_differ: int = 0  # differ from onnxruntime run on the whole model
    e2e_max_lsb: int = 0
    e2e_bound_max: int | None = 0  # the largest difference ties can explain; None: no bound
    e2e_unexplained: int = 0  # above that bound: a bug
    rtl_vs_golden_differ: int | None = None  # rtl backend only: elements where RTL != golden


@dataclass
class OutputCheck:
    """A graph output, end to end: the program against onnxruntime on the whole model."""

    name: str
    elements: int
    equal: int
    max_diff: float  # in LSB of the output's scale if it is quantized, else absolute
    unit: str  # "LSB" or "abs"
    bound_max: int | None
    unexplained: int
    top1_agree: int | None  # samples whose argmax agree (2-D outputs)
    top1_at_risk: int | None  # samples whose top class ties could change (within the bound)


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

    @property
    def bugs(self) -> list[str]:
        """Each failed check, in the order data flows, as a sentence naming the layer."""
        found = [
            f"tensor {name}, which the host quantizes from the graph input, differs from "
            f"onnxruntime in {count} elements"
            for name, count in self.host_tensors_differ.items()
        ]
        for c in self.layers:
            if c.away:
                found.append(
                    f"layer {c.layer} ({c.kind}, output {c.output}): {c.away} of {c.elements} "
                    f"elements differ from onnxruntime away from a rounding tie "
                    f"(max {c.max_lsb} LSB)"
                )
            if c.e2e_unexplained:
                found.append(
                    f"layer {c.layer} ({c.kind}, output {c.output}): {c.e2e_unexplained} "
                    f"elements differ end to end by more than ties can explain"
                )
            if c.rtl_vs_golden_differ:
                found.append(
                    f"layer {c.layer} ({c.kind}, output {c.output}): the RTL differs from the "
                    f"golden model in {c.rtl_vs_golden_differ} elements"
                )
        for o in self.outputs:
            if o.unexplained:
                found.append(
                    f"output {o.name}: {o.unexplained} elements differ end to end by more "
                    f"than ties can explain"
                )
        return found

    @property
    def ok(self) -> bool:
        return not self.bugs

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "bugs": self.bugs}


# -- the model's graph: quantization parameters and layer regions ------------------------------


class _Graph:
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


@dataclass
class _Region:
    """The float ops from some DPU tensors to the QuantizeLinear that writes one of them:
    what one DPU layer means."""

    q: onnx.NodeProto
    nodes: list[onnx.NodeProto]  # in the model's order, the QuantizeLinear excluded
    sources: list[str]  # the quantized tensors it reads

    @property
    def output(self) -> str:
        return self.q.output[0]


def _regions(g: _Graph, in_dram: set[str]) -> list[_Region]:
    """Every QuantizeLinear writing a DPU tensor from other DPU tensors through float ops.

    One fed from the graph input (the host quantizing the image) is not a DPU layer."""
    regions = []
    for q in g.model.graph.node:
        if q.op_type != "QuantizeLinear" or q.output[0] not in in_dram:
            continue
        sources, nodes, stack, seen, from_host = set(), {}, [q.input[0]], set(), False
        while stack:
            t = stack.pop()
            if t in seen or not t or t in g.inits:
                continue
            seen.add(t)
            if t in in_dram:
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


def _value_info(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime on a graph as written: the QDQ model's reference meaning."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    # Sessions take turns with the golden model; idle worker threads must not spin on the
    # cores it is about to use.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


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


def _layer_model(g: _Graph, r: _Region, program: Program) -> onnx.ModelProto:
    """The region alone: quantized sources in; out the value before QuantizeLinear and the
    quantized value onnxruntime makes of it."""
    nodes = [n for n in r.nodes if n.op_type != "Constant"] + [r.q]
    used = {i for n in nodes for i in n.input}
    inits = {k: v for k, v in g.inits.items() if k in used}
    ins = [
        _value_info(s, helper.np_dtype_to_tensor_dtype(np.dtype(program.tensors[s].onnx_dtype)),
                    program.tensors[s].shape)
        for s in r.sources
    ]  # fmt: skip
    outs = [helper.make_empty_tensor_value_info(name) for name in (r.q.input[0], r.output)]
    return _submodel(g, nodes, ins, outs, inits)


def _abs_dequantized(g: _Graph, dq: onnx.NodeProto) -> np.ndarray:
    """|DequantizeLinear(constant)| in float32, per-axis scales broadcast as ONNX does."""
    x = g.inits[dq.input[0]].astype(np.float64)
    scale, zp = g.qparams(dq)
    if scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return np.abs((x - zp) * scale).astype(np.float32)


def _sensitivity_model(g: _Graph, r: _Region, program: Program) -> onnx.ModelProto | None:
    """The region rewritten to map |input differences| (in their LSB) to an upper bound of
    |output difference| before rounding (in output LSB), element by element.

    Every op of a DPU layer is monotone with a known gain on differences: a convolution or
    matrix product with |W| and no bias, pooling and reshaping as they are (max and mean of
    differences bound the differences of max and mean), Relu/Clip as identity (1-Lipschitz),
    Add of the two differences. None when the region holds an op the bound does not know."""
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
                inits[out] = _abs_dequantized(g, n)
            else:
                scale, _ = g.qparams(n)
                if scale.size != 1:
                    return None
                inits[f"{out}:scale"] = np.float32(scale.reshape(()))
                nodes.append(helper.make_node("Mul", [d(n.input[0]), f"{out}:scale"], [out]))
                variable.add(out)
        elif n.op_type in ("Conv", "Gemm", "MatMul"):
            if var != [n.input[0]]:
                return None
            weight = d(n.input[1])
            if weight not in inits:  # a float weight without DequantizeLinear
                if n.input[1] not in g.inits:
                    return None
                weight = f"d:abs:{n.input[1]}"
                inits[weight] = np.abs(g.inits[n.input[1]]).astype(np.float32)
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            attrs.pop("beta", None)  # no bias: it moves both sides alike
            if "alpha" in attrs:
                attrs["alpha"] = abs(attrs["alpha"])
            nodes.append(helper.make_node(n.op_type, [d(n.input[0]), weight], [out], **attrs))
            variable.add(out)
        elif n.op_type == "Add":
            if not var:
                return None
            if len(var) == 1:  # a constant addend (a bias) moves both sides alike
                nodes.append(helper.make_node("Identity", [d(var[0])], [out]))
            else:
                nodes.append(helper.make_node("Add", [d(i) for i in ins], [out]))
            variable.add(out)
        elif n.op_type in _IDENTITY_ON_DIFFERENCES:
            nodes.append(helper.make_node("Identity", [d(n.input[0])], [out]))
            variable.add(out)
        elif n.op_type == "Concat":
            parts = []
            for i in ins:  # a constant part is the same on both sides: no difference
                if d(i) not in variable:
                    if i not in g.inits:
                        return None
                    inits[f"d:zero:{i}"] = np.zeros(g.inits[i].shape, np.float32)
                parts.append(d(i) if d(i) in variable else f"d:zero:{i}")
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            nodes.append(helper.make_node("Concat", parts, [out], **attrs))
            variable.add(out)
        elif n.op_type in _SAME_ON_DIFFERENCES:
            if var != [n.input[0]]:
                return None
            # the other inputs are shapes, axes or pads: the same constants; a Pad's fill
            # value is on both sides, so it is left out (the differences pad with 0)
            params = list(n.input[1:3] if n.op_type == "Pad" else n.input[1:])
            for i in params:
                if i and i not in g.inits:
                    return None
                if i:
                    inits[f"d:{i}"] = g.inits[i]
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            attrs.pop("value", None)  # Pad before opset 11 held its fill value here
            inputs = [d(n.input[0])] + [f"d:{i}" if i else "" for i in params]
            nodes.append(helper.make_node(n.op_type, inputs, [out], **attrs))
            variable.add(out)
        else:
            return None
        rename[n.output[0]] = out
    scale, _ = g.qparams(r.q)
    final = f"d:{r.q.input[0]}"
    inits["d:out_scale"] = np.float32(scale.reshape(()))
    nodes.append(helper.make_node("Div", [final, "d:out_scale"], ["bound"]))
    ins = [
        _value_info(f"d:{s}", onnx.TensorProto.FLOAT, program.tensors[s].shape) for s in r.sources
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


def _in_lsb(pre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return pre.astype(np.float64) / scale.reshape(())


def _tie_offset(v: np.ndarray) -> np.ndarray:
    """How far each value lies from the nearest x.5, in LSB."""
    return np.abs(v - np.floor(v) - 0.5)


def dpu_tensors(runner: Runner, program: Program) -> dict[str, np.ndarray]:
    """Every DPU tensor of the last run, read back from the data window (each tensor has
    DRAM bytes of its own; a view reads its source's bytes in its own shape)."""
    out = {}
    for name, t in program.tensors.items():
        off = program.dram_offsets[name]
        out[name] = from_dram(t, runner.dram[off : off + t.nbytes])
    return out


def verify_model(
    model: str | Path | onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    config: str | HwConfig | None = None,
    *,
    backend: str = "golden",
    program: Program | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Compile ``model`` for ``config`` (default pynq-z2), or take its compiled ``program``,
    run every sample of ``inputs`` (stacked along axis 0) on ``backend`` and check it against
    onnxruntime layer by layer and end to end. ``report.ok`` is False when a check found a
    bug; a model or program that cannot run raises the usual DpuKitError."""
    start = time.perf_counter()
    if program is None:
        program = compile_model(model, config or DEFAULT_CONFIG)  # checks the model
    qdq, where = read_onnx(model)
    check_onnx(qdq, where)
    runner = create_runner(program, backend=backend, config=config)  # None: the program's
    cfg = runner.cfg
    golden = create_runner(program, backend="golden", config=cfg) if backend != "golden" else None
    g = _Graph(qdq)
    checks = _layer_checks(g, program, where)
    outputs = {o.name: _OutputCheck(g, o.name) for o in qdq.graph.output}
    # the tensors the compiler made up (e.g. an image with its kernel rows stacked) have
    # no counterpart in the model
    in_model = {t for t in program.tensors if t in g.producer}
    extra = in_model | {c.region.q.input[0] for c in checks}
    whole = _session(_whole_model(g, sorted(extra)))
    whole_names = [o.name for o in whole.get_outputs()]
    host_made = {t for t in in_model if _quantized_by_host(g, t, set(program.tensors))}
    host_differ: dict[str, int] = {}

    n = len(next(iter(inputs.values())))
    for b in range(n):
        feed = {k: np.asarray(v)[b : b + 1] for k, v in inputs.items()}
        result = runner.run(feed)
        dpu = dpu_tensors(runner, program)
        ref_feed = {i.name: feed[i.name] for i in whole.get_inputs()}
        ref = dict(zip(whole_names, whole.run(whole_names, ref_feed), strict=True))
        gold = None
        if golden is not None:
            golden.run(feed)
            gold = dpu_tensors(golden, program)
        # end-to-end differences of every DPU tensor, in its LSB
        delta = {t: np.abs(dpu[t].astype(np.int64) - ref[t].astype(np.int64)) for t in in_model}
        for t in host_made:  # the host quantizes the image as onnxruntime does: no excuse
            if delta[t].any():
                host_differ[t] = host_differ.get(t, 0) + int((delta[t] > 0).sum())
        bounds = {c.region.output: c.add_sample(dpu, ref, delta, gold) for c in checks}
        for o in outputs.values():
            o.add_sample(result.outputs[o.name], ref, delta, bounds)
        if progress:
            progress(b + 1, n)

    return VerifyReport(
        model=where,
        config=cfg.name,
        backend=backend,
        samples=n,
        layers=[c.result(with_rtl=golden is not None) for c in checks],
        outputs=[o.result() for o in outputs.values()],
        host_tensors_differ=host_differ,
        seconds=time.perf_counter() - start,
    )


class _LayerChecker:
    """The checks of one DPU layer, accumulated over the samples."""

    def __init__(self, g: _Graph, region: _Region, program: Program, where: tuple):
        self.g, self.region = g, region
        self.subgraph, self.layer, self.kind = where
        self.scale, _ = g.qparams(region.q)
        self.session = _session(_layer_model(g, region, program))
        sensitivity = _sensitivity_model(g, region, program)
        self.sensitivity = None if sensitivity is None else _session(sensitivity)
        self.c = LayerCheck(
            self.subgraph,
            self.layer,
            self.kind,
            region.output,
            e2e_bound_max=0 if self.sensitivity is not None else None,
        )

    def add_sample(self, dpu, ref, delta, gold) -> np.ndarray | None:
        """Check one sample; returns the end-to-end bound of each output element."""
        r, c = self.region, self.c
        got = dpu[r.output].astype(np.int64)
        # 1. the layer on the very inputs it read
        pre, expected = self.session.run(None, {s: dpu[s] for s in r.sources})
        v = _in_lsb(pre, self.scale)
        diff = np.abs(got - expected.astype(np.int64))
        offset = _tie_offset(v)
        tie = (diff == 1) & (offset < TIE_WINDOW)
        c.elements += diff.size
        c.equal += int((diff == 0).sum())
        c.ties += int(tie.sum())
        c.away += int(((diff > 0) & ~tie).sum())
        c.max_lsb = max(c.max_lsb, int(diff.max(initial=0)))
        c.tie_offset_max = max(c.tie_offset_max, float(offset[tie].max(initial=0.0)))
        # 2. end to end, against what the differences upstream and a tie can explain
        e2e = delta[r.output]
        c.e2e_differ += int((e2e > 0).sum())
        c.e2e_max_lsb = max(c.e2e_max_lsb, int(e2e.max(initial=0)))
        bound = None
        if self.sensitivity is not None:
            bound = self._tie_bound(delta, _in_lsb(ref[r.q.input[0]], self.scale))
            c.e2e_bound_max = max(c.e2e_bound_max or 0, int(bound.max(initial=0)))
            c.e2e_unexplained += int((e2e > bound).sum())
        if gold is not None:
            differ = int((dpu[r.output] != gold[r.output]).sum())
            c.rtl_vs_golden_differ = (c.rtl_vs_golden_differ or 0) + differ
        return bound

    def _tie_bound(self, delta: dict[str, np.ndarray], v_ref: np.ndarray) -> np.ndarray:
        """With P the input differences propagated through the layer's sensitivity, the
        exact values before rounding differ by at most P, and |round(a) - round(b)| <=
        floor(|a - b|) + 1. Where P is 0 both sides round the same value: they can differ
        only where it is a tie."""
        feed = {f"d:{s}": delta[s].astype(np.float32) for s in self.region.sources}
        p = np.broadcast_to(self.sensitivity.run(None, feed)[0].astype(np.float64), v_ref.shape)
        own_tie = _tie_offset(v_ref) < TIE_WINDOW
        return np.where(p > 0, np.floor(p + TIE_WINDOW) + 1, own_tie).astype(np.int64)

    def result(self, with_rtl: bool) -> LayerCheck:
        if with_rtl and self.c.rtl_vs_golden_differ is None:
            self.c.rtl_vs_golden_differ = 0
        return self.c


def _layer_checks(g: _Graph, program: Program, where: str) -> list[_LayerChecker]:
    """A checker for every layer region the DPU computes (the host computes the others)."""
    layer_of = {
        layer["name"]: (sg.name, layer["name"], layer["kind"])
        for sg in program.subgraphs
        if sg.device == "DPU"
        for layer in sg.layers
    }
    checks = []
    for r in _regions(g, set(program.tensors)):
        names = [n.name or n.output[0] for n in r.nodes]
        match = next((layer_of[n] for n in names if n in layer_of), None)
        if match is not None:
            checks.append(_LayerChecker(g, r, program, match))
    if not checks:
        raise ModelError(f"{where}: no DPU layer to verify (the whole model runs on the host)")
    return checks


class _OutputCheck:
    """A graph output end to end, in LSB when a DequantizeLinear of a DPU tensor makes it."""

    def __init__(self, g: _Graph, name: str):
        dq = g.producer.get(name)
        self.name = name
        self.quantized = (
            dq.input[0] if dq is not None and dq.op_type == "DequantizeLinear" else None
        )
        self.c = OutputCheck(name, 0, 0, 0.0, "abs", None, 0, None, None)

    def add_sample(self, got, ref, delta, bounds) -> None:
        c = self.c
        a, b = got.astype(np.float64), ref[self.name].astype(np.float64)
        c.elements += a.size
        c.equal += int((a == b).sum())
        bound = None
        if self.quantized in delta:
            c.unit = "LSB"
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
                c.top1_at_risk = (c.top1_at_risk or 0) + _top1_at_risk(
                    ref[self.quantized].astype(np.int64), bound
                )

    def result(self) -> OutputCheck:
        return self.c


def _top1_at_risk(ref: np.ndarray, bound: np.ndarray) -> int:
    """Samples (rows) whose top class could change within the bound: another class is
    closer to the top one than their two bounds together. Elsewhere, a program within the
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
    dq = g.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        raise ModelError(f"{where}: output '{name}' is not made by a DequantizeLinear")
    scale, _ = g.qparams(dq)
    return float(scale.reshape(()))


def _quantized_by_host(g: _Graph, tensor: str, in_dram: set[str]) -> bool:
    """True when the host makes ``tensor`` from the graph inputs without reading another DPU
    tensor: the same onnxruntime ops on the same values as the reference, so it must equal."""
    node = g.producer[tensor]
    stack, seen = list(node.input), set()
    while stack:
        t = stack.pop()
        if t in seen or not t or t in g.inits or t in g.graph_inputs:
            continue
        if t in in_dram:
            return False
        seen.add(t)
        stack.extend(g.producer[t].input)
    return True
