"""The compiler driver: QDQ ONNX -> partition into DPU/CPU subgraphs -> code -> checked Program."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import onnx

from dpukit.compiler import check, codegen, isa
from dpukit.compiler.frontend import IO_TYPES, Lowered, lower, onnxruntime_refusal
from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.ir import QView, op_inputs
from dpukit.compiler.program import Program, Subgraph, TensorSpec
from dpukit.errors import CompileError, ExecutionError


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
) -> Program:
    """Compile a QDQ model for a hardware config into a checked, self-describing Program.

    `input_shapes` gives inputs with symbolic dims their sizes, e.g. {"input": (1, 3, 224, 224)}.
    """
    cfg = load_config(config) if not isinstance(config, HwConfig) else config
    low = lower(source, input_shapes)
    views = {op.y: op.x for dev, op in low.items if dev == "dpu" and isinstance(op, QView)}
    dpu_ops = [op for dev, op in low.items if dev == "dpu"]
    codegen.check_limits(cfg, dpu_ops, low.tensors, views, low.where)
    g = low.model.graph
    constants = {t.name for t in g.initializer}
    graph_outputs = [o.name for o in g.output]
    parts = partition(low)
    dram = codegen.Dram()
    dram.place_tensors(low.tensors, views)
    subgraphs: list[Subgraph] = []
    for k, ((device, items), (ins, outs)) in enumerate(
        zip(parts, _subgraph_io(parts, graph_outputs, constants), strict=True)
    ):
        if device == "dpu":
            instrs, stats = codegen.compile_subgraph(cfg, items, low.tensors, dram)
            stream = isa.to_bytes(instrs)
            layers = [asdict(s) for s in stats]
            subgraphs.append(Subgraph(f"subgraph_{k}_dpu", "DPU", ins, outs, stream, layers))
        else:
            onnx_bytes = _cpu_model(low, items, ins, outs)
            why = onnxruntime_refusal(onnx_bytes)  # now, not at run
            if why:
                raise CompileError(
                    f"{low.where}: onnxruntime cannot run the host's subgraph_{k}_cpu: {why}"
                )
            subgraphs.append(Subgraph(f"subgraph_{k}_cpu", "CPU", ins, outs, onnx_bytes))
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
    )


def _check_program(cfg: HwConfig, stream: bytes, dram_size: int, k: int) -> None:
    col = isa.decode_array(stream)
    try:
        check.check_stream(cfg, col, dram_size)
    except ExecutionError as exc:
        raise CompileError(f"internal: subgraph {k} failed the checking pass: {exc}") from None


def _cpu_model(low: Lowered, nodes: list[onnx.NodeProto], ins: list[str], outs: list[str]) -> bytes:
    g = low.model.graph
    inits = {t.name: t for t in g.initializer}
    used = {i for n in nodes for i in n.input}

    def vi(name):
        et, shape = low.value_types.get(name, (onnx.TensorProto.FLOAT, None))
        return onnx.helper.make_tensor_value_info(name, et, list(shape) if shape else None)

    graph = onnx.helper.make_graph(
        list(nodes),
        "cpu_subgraph",
        [vi(n) for n in ins],
        [vi(n) for n in outs],
        [inits[n] for n in used if n in inits],
    )
    model = onnx.helper.make_model(graph, opset_imports=list(low.model.opset_import))
    model.ir_version = low.model.ir_version
    return model.SerializeToString()
