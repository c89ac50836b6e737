"""The compiler driver: QDQ ONNX -> partition into DPU/CPU subgraphs -> code -> checked Program."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import onnx

from dpukit.compiler import check, codegen, isa, timing
from dpukit.compiler.frontend import Lowered, lower
from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.ir import QView, op_inputs
from dpukit.compiler.program import Program, Subgraph, TensorSpec
from dpukit.errors import CompileError, ExecutionError

_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT8: "int8",
           onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT64: "int64",
           onnx.TensorProto.INT32: "int32"}


def partition(low: Lowered) -> list[tuple[str, list]]:
    """Consecutive items on one device form a subgraph (XIR-style), in topological order."""
    parts: list[tuple[str, list]] = []
    for device, item in low.items:
        if not parts or parts[-1][0] != device:
            parts.append((device, []))
        parts[-1][1].append(item)
    return parts


def _io(items, produced_by, consumers_later) -> tuple[list[str], list[str]]:
    ins, outs = [], []
    made = set()
    for it in items:
        names_in = list(op_inputs(it)) if not isinstance(it, onnx.NodeProto) else [i for i in it.input if i]
        for n in names_in:
            if n not in made and n not in ins:
                ins.append(n)
        names_out = [it.y] if not isinstance(it, onnx.NodeProto) else list(it.output)
        made.update(names_out)
        outs += [n for n in names_out if n in consumers_later]
    return ins, outs


def compile_model(source: str | Path | onnx.ModelProto, config: str | HwConfig = "pynq-z2") -> Program:
    cfg = load_config(config) if not isinstance(config, HwConfig) else config
    low = lower(source)
    g = low.model.graph
    init_names = {t.name for t in g.initializer}
    graph_outputs = [o.name for o in g.output]
    parts = partition(low)
    views = {op.y: op.x for dev, op in low.items if dev == "dpu" and isinstance(op, QView)}
    dram = codegen.Dram()
    subgraphs: list[Subgraph] = []
    # which tensors are needed after each part
    needed_after: list[set[str]] = []
    later: set[str] = set(graph_outputs)
    for device, items in reversed(parts):
        needed_after.append(set(later))
        for it in items:
            ins = op_inputs(it) if device == "dpu" else list(it.input)
            later.update(i for i in ins if i)
    needed_after.reverse()
    pending = []
    for k, (device, items) in enumerate(parts):
        ins, outs = _io(items, None, needed_after[k])
        ins = [i for i in ins if i not in init_names]
        pending.append((device, items, ins, outs))
    dram.place_tensors(low.tensors, views)
    for k, (device, items, ins, outs) in enumerate(pending):
        if device == "dpu":
            instrs, stats = codegen.compile_subgraph(cfg, items, low.tensors, dram)
            stream = isa.to_bytes(instrs)
            subgraphs.append(Subgraph(f"subgraph_{k}_dpu", "DPU", ins, outs, stream,
                                      [asdict(s) for s in stats]))
        else:
            subgraphs.append(Subgraph(f"subgraph_{k}_cpu", "CPU", ins, outs,
                                      _cpu_model(low, items, ins, outs)))
    for k, sg in enumerate(subgraphs):
        if sg.device == "DPU":
            _check_program(cfg, sg.payload, dram.size, k)
    spec = lambda name: TensorSpec(name, list(low.value_types[name][1]),  # noqa: E731
                                   _DTYPES.get(low.value_types[name][0], "float32"))
    graph_inputs = [i.name for i in g.input if i.name not in init_names]
    used_tensors = {t for sg in subgraphs if sg.device == "DPU" for t in (*sg.inputs, *sg.outputs)}
    used_tensors |= {op.y for dev, op in low.items if dev == "dpu"}
    used_tensors |= {i for dev, op in low.items if dev == "dpu" for i in op_inputs(op)}
    return Program(
        config=cfg.as_dict(), fingerprint=cfg.fingerprint,
        source=str(source) if not isinstance(source, onnx.ModelProto) else g.name or "model",
        inputs=[spec(n) for n in graph_inputs], outputs=[spec(n) for n in graph_outputs],
        tensors={n: t for n, t in low.tensors.items() if n in used_tensors},
        dram_offsets={n: o for n, o in dram.tensors.items() if n in used_tensors},
        const_base=dram.const_base, const=bytes(dram.const), subgraphs=subgraphs,
    )


def _check_program(cfg: HwConfig, stream: bytes, dram_size: int, k: int) -> None:
    col = isa.decode_array(stream)
    try:
        check.check_bounds(cfg, col, dram_size)
        sched = timing.schedule(cfg, col)
        check.check_hazards(cfg, col, sched)
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
        list(nodes), "cpu_subgraph", [vi(n) for n in ins], [vi(n) for n in outs],
        [inits[n] for n in used if n in inits],
    )
    model = onnx.helper.make_model(graph, opset_imports=list(low.model.opset_import))
    model.ir_version = low.model.ir_version
    return model.SerializeToString()
