"""A program's CPU subgraphs, loaded to run on the host: on the numpy executor
(host/cpu_ops.py) for kind "numpy", which a board has, or on onnxruntime for kind "onnx"
(an op the executor lacks), which only a laptop has; onnx and onnxruntime are imported only
for the latter. Either way the subgraph must read and make the values the program header
lists, with the types it gives them: checked when loaded, and each output again when run
(a dim the model did not fix may depend on the data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from dpukit.compiler.program import Program, Subgraph, ValueType, same_value_type
from dpukit.errors import ExecutionError, ProgramError
from dpukit.host import cpu_ops

Compute = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class CpuSubgraph:
    """A CPU subgraph ready to run: `run(env)` reads its inputs from `env` (name -> array)
    and returns its outputs in `sg.outputs` order."""

    def __init__(self, program: Program, sg: Subgraph, compute: Compute):
        self.program, self.sg, self._compute = program, sg, compute

    def run(self, env: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        results = self._compute({name: env[name] for name in self.sg.inputs})
        for name, value in zip(self.sg.outputs, results, strict=True):
            want = self.program.value_type(name)
            if want and not same_value_type((value.dtype.name, value.shape), want):
                raise ExecutionError(
                    f"{self.program.label}: CPU subgraph '{self.sg.name}' made '{name}' "
                    f"{value.dtype.name} {list(value.shape)}; the program header says "
                    f"{want[0]} {list(want[1] or [])}: recompile the model"
                )
        return results


def load_cpu_subgraph(program: Program, sg: Subgraph) -> CpuSubgraph:
    """The CPU subgraph `sg` of `program`, checked and ready to run; a payload that cannot be
    loaded, or declares other values than the header, is a ProgramError."""
    if sg.kind == "numpy":
        return _numpy_subgraph(program, sg)
    if sg.kind == "onnx":
        return _onnx_subgraph(program, sg)
    raise ProgramError(f"{program.label}: subgraph '{sg.name}' of kind '{sg.kind}' is no CPU one")


def cpu_graph_nodes(sg: Subgraph) -> list[cpu_ops.Node]:
    """A CPU subgraph's nodes (op type, name, inputs, outputs, attributes), of either kind:
    what `dpukit inspect` lists and verify maps to layers."""
    if sg.kind == "numpy":
        return cpu_ops.decode(sg.payload).nodes
    import onnx  # only programs with an ONNX subgraph pay for the import

    return [
        cpu_ops.Node(n.op_type, n.name or n.output[0], list(n.input), list(n.output))
        for n in onnx.load_from_string(sg.payload).graph.node
    ]


def _numpy_subgraph(program: Program, sg: Subgraph) -> CpuSubgraph:
    try:
        graph = cpu_ops.decode(sg.payload)
    except cpu_ops.FormatError as exc:
        raise ProgramError(
            f"{program.label}: CPU subgraph '{sg.name}': its numpy graph is damaged ({exc}); "
            "recompile the model"
        ) from None
    _check_io(program, sg, graph.inputs, graph.outputs, "numpy graph")

    def compute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return graph.run(feeds)
        except cpu_ops.OpError as exc:
            raise ExecutionError(
                f"{program.label}: CPU subgraph '{sg.name}' failed: {exc}"
            ) from None

    return CpuSubgraph(program, sg, compute)


def _onnx_subgraph(program: Program, sg: Subgraph) -> CpuSubgraph:
    try:
        import onnxruntime as ort  # a laptop's; no board has it
    except ImportError:
        lacks = "; ".join(sg.unsupported) or ", ".join(sg.ops)
        raise ProgramError(
            f"{program.label}: CPU subgraph '{sg.name}' needs onnxruntime, which is not "
            f"installed here: the numpy executor cannot run {lacks}. Run "
            "the program where onnxruntime is installed, or replace the op in the model"
        ) from None
    errors = _ort_errors()
    # Fatal messages only: onnxruntime raises every error it logs, and we report it once.
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4
    # CPU subgraphs are small; a thread pool would spin after each run and steal the
    # cores the DPU backend is about to use.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # The host computes what the QDQ model means, node by node in float32, as the
    # reference does: fused into onnxruntime's integer kernels (QLinearConv, ...) its
    # int16 sums may saturate on x86 CPUs without VNNI (onnxruntime issue #14642).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(sg.payload, opts, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise ProgramError(
            f"{program.label}: CPU subgraph '{sg.name}': onnxruntime cannot load it ({exc}); "
            "recompile the model"
        ) from None
    _check_io(
        program, sg, _ort_values(session.get_inputs()), _ort_values(session.get_outputs()),
        "ONNX model",
    )  # fmt: skip

    def compute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run(sg.outputs, feeds, quiet)
        except errors as exc:
            raise ExecutionError(
                f"{program.label}: CPU subgraph '{sg.name}' failed in onnxruntime: {exc}"
            ) from None

    return CpuSubgraph(program, sg, compute)


def _ort_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises (its own classes, not RuntimeError) for a model it cannot load
    or run: for a CPU subgraph, a program error rather than a traceback."""
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        EPFail,
        Fail,
        InvalidArgument,
        InvalidGraph,
        InvalidProtobuf,
        NotImplemented,
        RuntimeException,
    )

    return (
        EPFail, Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NotImplemented,
        RuntimeException,
    )  # fmt: skip


def _ort_values(args) -> list[cpu_ops.ValueInfo]:
    """onnxruntime's NodeArgs as ValueInfos: its types read "tensor(float)"; a dim it does not
    know is a string or None, and a value without shape information has the shape []."""
    values = []
    for v in args:
        elem = v.type.removeprefix("tensor(").removesuffix(")")
        dtype = {"float": "float32", "double": "float64"}.get(elem, elem)
        shape = tuple(d if isinstance(d, int) else None for d in v.shape) or None
        values.append(cpu_ops.ValueInfo(v.name, dtype, shape))
    return values


def _check_io(
    program: Program,
    sg: Subgraph,
    inputs: list[cpu_ops.ValueInfo],
    outputs: list[cpu_ops.ValueInfo],
    what: str,
) -> None:
    """A CPU subgraph's model maps the names the header lists, with the types the header
    gives them (the graph's inputs and outputs, the DPU tensors)."""
    ins, outs = {v.name: v for v in inputs}, {v.name: v for v in outputs}
    if set(ins) != set(sg.inputs) or not set(sg.outputs) <= set(outs):
        raise ProgramError(
            f"{program.label}: CPU subgraph '{sg.name}': its {what} maps {sorted(ins)} to "
            f"{sorted(outs)}, the header says {sg.inputs} to {sg.outputs}; recompile the model"
        )
    for v in [*(ins[n] for n in sg.inputs), *(outs[n] for n in sg.outputs)]:
        want: ValueType | None = program.value_type(v.name)
        if want and not same_value_type((v.dtype, v.shape), want):
            raise ProgramError(
                f"{program.label}: CPU subgraph '{sg.name}': '{v.name}' is {v.dtype} "
                f"{list(v.shape or [])} in its {what}, {want[0]} {list(want[1] or [])} in the "
                "program header; recompile the model"
            )
