"""The compiler driver: QDQ ONNX -> partition into DPU/CPU subgraphs -> code -> checked Program."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from dpukit.compiler import check, codegen, isa
from dpukit.compiler.cpu_lower import lower_cpu_part
from dpukit.compiler.frontend import IO_TYPES, Lowered, lower, onnxruntime_refusal
from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.ir import QView, op_inputs
from dpukit.compiler.program import Program, Subgraph, TensorSpec, preprocess_problem
from dpukit.errors import CompileError, ExecutionError, ProgramError
from dpukit.host import cpu_ops


def partition(low: Lowered) -> list[tuple[str, list]]:
    """Consecutive items on one device form a subgraph (XIR-style), in topological order."""
    parts: list[tuple[str, list]] = []
    for device, item in low.items:
        if not parts or parts[-1][0] != device:
            parts.append((device, []))
        parts[-1][1].append(item)
    return parts


def _names(item) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a DPU op or an ONNX node."""
    if isinstance(item, onnx.NodeProto):
        return [i for i in item.input if i], list(item.output)
    return list(op_inputs(item)), [item.y]


def _subgraph_io(
    parts: list[tuple[str, list]], graph_outputs: list[str], constants: set[str]
) -> list[tuple[list[str], list[str]]]:
    """Each part's inputs (made elsewhere) and outputs (needed by a later part or the user)."""
    needed_later = set(graph_outputs)
    io = []
    for _, items in reversed(parts):
        made = {o for it in items for o in _names(it)[1]}
        ins = list(dict.fromkeys(i for it in items for i in _names(it)[0]))
        ins = [i for i in ins if i not in made and i not in constants]
        outs = [o for it in items for o in _names(it)[1] if o in needed_later]
        io.append((ins, outs))
        needed_later.update(ins)
    return io[::-1]


def compile_model(
    source: str | Path | onnx.ModelProto,
    config: str | HwConfig = "pynq-z2",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    preprocess: dict | None = None,
    board: bool = False,
) -> Program:
    """Compile a QDQ model for a hardware config into a checked, self-describing Program.

    `input_shapes` gives inputs with symbolic dims their sizes, e.g. {"input": (1, 3, 224, 224)}.
    `preprocess` describes the image preprocessing a board script applies (its keys:
    board_scripts/preprocess.py), checked and stored with the program.
    The CPU subgraphs run on the numpy executor (host/cpu_ops.py) where it has their ops, and
    on onnxruntime otherwise; with `board`, a CPU subgraph the executor cannot run is an
    error naming the op, since a board has no onnxruntime.
    """
    preprocess = _as_json(preprocess)
    problem = preprocess_problem(preprocess)
    if problem:
        raise CompileError(f"preprocess {problem}")
    if preprocess is not None:  # the keys the board scripts read, checked now, not on the board
        from dpukit.board_scripts.preprocess import check_preprocess

        try:
            check_preprocess(preprocess, "compile")
        except ProgramError as exc:
            raise CompileError(str(exc)) from None
    cfg = load_config(config) if not isinstance(config, HwConfig) else config
    low = lower(source, input_shapes)
    views = {op.y: op.x for dev, op in low.items if dev == "dpu" and isinstance(op, QView)}
    dpu_ops = [op for dev, op in low.items if dev == "dpu"]
    codegen.check_limits(cfg, dpu_ops, low.tensors, views, low.where)
    g = low.model.graph
    constants = _constants(g)
    graph_outputs = [o.name for o in g.output]
    parts = partition(low)
    dram = codegen.Dram()
    dram.place_tensors(low.tensors, views)
    subgraphs: list[Subgraph] = []
    for k, ((device, items), (ins, outs)) in enumerate(
        zip(parts, _subgraph_io(parts, graph_outputs, set(constants)), strict=True)
    ):
        if device == "dpu":
            instrs, stats = codegen.compile_subgraph(cfg, items, low.tensors, dram)
            stream = isa.to_bytes(instrs)
            layers = [asdict(s) for s in stats]
            subgraphs.append(
                Subgraph(f"subgraph_{k}_dpu", "DPU", ins, outs, stream, layers, kind="dpu")
            )
        else:
            subgraphs.append(_cpu_subgraph(low, k, items, ins, outs, constants, board))
    for k, sg in enumerate(subgraphs):
        if sg.device == "DPU":
            _check_program(cfg, sg.payload, dram.size, k)

    def spec(name: str) -> TensorSpec:
        elem, shape = low.value_types[name]
        return TensorSpec(name, list(shape), IO_TYPES[elem])

    return Program(
        config=cfg.as_dict(),
        fingerprint=cfg.fingerprint,
        source=str(source) if not isinstance(source, onnx.ModelProto) else g.name or "model",
        inputs=[spec(i.name) for i in g.input if i.name not in constants],
        outputs=[spec(n) for n in graph_outputs],
        tensors=dict(low.tensors),
        dram_offsets=dict(dram.tensors),
        const_base=dram.const_base,
        const=bytes(dram.const),
        subgraphs=subgraphs,
        preprocess=preprocess,
    )


def _as_json(value: object) -> object:
    """`value` as the program file will hold it (tuples become lists)."""
    try:
        return json.loads(json.dumps(value))  # NaN passes, for preprocess_problem to name
    except (TypeError, ValueError) as exc:
        raise CompileError(f"preprocess cannot be stored as JSON ({exc})") from None


def _constants(g: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """The graph's constant values by name: initializers and Constant nodes' outputs (the
    front end leaves Constant nodes out of the parts; the parts that read them get them as
    constants)."""
    consts = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = node.attribute[0]
            value = onnx.helper.get_attribute_value(attr)
            if attr.name == "value":
                consts[node.output[0]] = value
            elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                dtype = np.float32 if "float" in attr.name else np.int64
                consts[node.output[0]] = numpy_helper.from_array(np.array(value, dtype))
    return consts


def _cpu_subgraph(
    low: Lowered,
    k: int,
    nodes: list[onnx.NodeProto],
    ins: list[str],
    outs: list[str],
    constants: dict[str, onnx.TensorProto],
    board: bool,
) -> Subgraph:
    """A CPU part as the numpy executor's graph, or as ONNX where the executor lacks an op
    (refused with `board`); either way onnxruntime must be able to run it (checked now,
    not at run: the laptop's reference runs it)."""
    name = f"subgraph_{k}_cpu"
    onnx_bytes = _cpu_model(low, nodes, ins, outs, constants)
    why = onnxruntime_refusal(onnx_bytes)
    if why:
        raise CompileError(f"{low.where}: onnxruntime cannot run the host's {name}: {why}")
    opset = {o.domain: o.version for o in low.model.opset_import}.get("", 1)
    used = {i for n in nodes for i in n.input if i in constants}
    values = {n: numpy_helper.to_array(constants[n]) for n in used}
    part = lower_cpu_part(nodes, ins, outs, values, low.value_types, opset)
    if not part.unsupported:
        payload = cpu_ops.encode(part.graph)
        return Subgraph(name, "CPU", ins, outs, payload, kind="numpy", ops=part.ops)
    if board:
        raise CompileError(
            f"{low.where}: the host's {name} needs onnxruntime, which a board lacks: "
            f"{'; '.join(part.unsupported)}. Replace the op in the model, or compile the "
            "program for a machine with onnxruntime (not for a board)"
        )
    return Subgraph(
        name, "CPU", ins, outs, onnx_bytes, kind="onnx", ops=part.ops, unsupported=part.unsupported
    )


def _check_program(cfg: HwConfig, stream: bytes, dram_size: int, k: int) -> None:
    col = isa.decode_array(stream)
    try:
        check.check_stream(cfg, col, dram_size)
    except ExecutionError as exc:
        raise CompileError(f"internal: subgraph {k} failed the checking pass: {exc}") from None


def _cpu_model(
    low: Lowered,
    nodes: list[onnx.NodeProto],
    ins: list[str],
    outs: list[str],
    constants: dict[str, onnx.TensorProto],
) -> bytes:
    used = {i for n in nodes for i in n.input}

    def vi(name):
        et, shape = low.value_types.get(name, (onnx.TensorProto.FLOAT, None))
        return onnx.helper.make_tensor_value_info(name, et, list(shape) if shape else None)

    inits = []
    for name in sorted(used & constants.keys()):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(constants[name])
        tensor.name = name
        inits.append(tensor)
    graph = onnx.helper.make_graph(
        list(nodes), "cpu_subgraph", [vi(n) for n in ins], [vi(n) for n in outs], inits
    )
    model = onnx.helper.make_model(graph, opset_imports=list(low.model.opset_import))
    model.ir_version = low.model.ir_version
    return model.SerializeToString()
