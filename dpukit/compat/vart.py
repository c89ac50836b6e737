"""Vitis AI's VART runner over one DPU subgraph of a dpukit program.

    from dpukit.compat import vart, xir      # instead of: import vart, xir
    runner = vart.Runner.create_runner(dpu_subgraph, "run")
    job_id = runner.execute_async(input_buffers, output_buffers)   # fills the outputs
    runner.wait(job_id)

As VART's does, a runner runs its DPU subgraph alone on the subgraph's own tensors
(dpukit/compat/xir.py: int8, the DPU's layout, dims [1, H, W, C] for an image); the CPU
subgraphs around it are the caller's. One buffer per tensor, in `get_input_tensors()` /
`get_output_tensors()` order, each a numpy array of exactly the tensor's dims:
- int8: the tensor's own values, copied as they are;
- float32: quantized on the way in with the tensor's scale and zero point (round half to
  even, saturating: the model's QuantizeLinear, bit for bit) and dequantized on the way out,
  as VART converts float buffers with a tensor's fix point.
`execute_async` checks and copies the inputs and returns `(job_id, 0)` at once; the job
runs on the whole-model Runner's worker thread (host/runner.py: one DPU, jobs in order) and
`wait(job_id)` fills the output buffers in place and returns 0, or raises the run's error.

Where it runs: `create_runner(..., backend=)`, else $DPUKIT_BACKEND, else `pynq` where pynq
is installed (a PYNQ board; the overlay DpuOverlay loaded, or $DPUKIT_OVERLAY) and `rtl`,
the virtual board (the DPU's RTL in Verilator), elsewhere. Runners on subgraphs of one
Graph with one backend share one board, so their jobs take turns on its one DPU.

Board-side code: Python 3.10, numpy < 2, no onnx.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpukit.compat import xir
from dpukit.errors import ExecutionError
from dpukit.host import cpu_ops
from dpukit.host.backends import BACKENDS
from dpukit.host.layout import from_dram, to_dram
from dpukit.host.runner import Runner as ModelRunner

BUFFER_DTYPES = ("int8", "float32")  # what a buffer may hold (VART also takes int16, for
# 16-bit tensors, which this DPU does not have)
_current_overlay: str | None = None  # the .bit the last DpuOverlay loaded (pynq backend)


def choose_backend(given: str | None) -> str:
    """The backend a runner or DpuOverlay uses: `given`, else $DPUKIT_BACKEND, else pynq
    where pynq is installed (only a board has it), else rtl; an unknown name is an error."""
    available = ", ".join(BACKENDS)
    if given is None:
        given = os.environ.get("DPUKIT_BACKEND") or None
        if given is None:
            return "pynq" if importlib.util.find_spec("pynq") is not None else "rtl"
        if given not in BACKENDS:
            raise ExecutionError(f"DPUKIT_BACKEND={given!r} is no backend; available: {available}")
    if given not in BACKENDS:
        raise ExecutionError(f"unknown backend {given!r}; available: {available}")
    return given


class Runner:
    """A runner on one DPU subgraph (vart.Runner). Make one with `Runner.create_runner`."""

    def __init__(self, subgraph: xir.Subgraph, backend: str, overlay: str | None) -> None:
        graph = subgraph.get_graph()
        self._subgraph, self._index = subgraph, subgraph.index
        self._inputs = subgraph.get_input_tensors()
        self._outputs = subgraph.get_output_tensors()
        self._derived = subgraph.host_derived
        self._key = (backend, overlay)
        self._model = _share(graph, self._key)
        self._jobs: dict[int, list[np.ndarray]] = {}
        # VART scripts `del` their runners: letting go of the board then, or at exit, is
        # what close() does
        self._release = weakref.finalize(self, _release, graph, self._key)

    @staticmethod
    def create_runner(
        subgraph: xir.Subgraph,
        mode: str = "run",
        *,
        backend: str | None = None,
        overlay: str | os.PathLike | None = None,
    ) -> Runner:
        """A runner on DPU subgraph `subgraph` (from `xir.Graph.deserialize`). `mode` "run"
        (VART's "" means the same). `backend`: golden, rtl or pynq (default: see the module);
        `overlay`: the .bit for pynq (default: the one DpuOverlay loaded)."""
        if not isinstance(subgraph, xir.Subgraph):
            raise ExecutionError(
                f"create_runner takes an xir.Subgraph of dpukit.compat.xir, not a "
                f"{type(subgraph).__name__}"
            )
        if mode not in ("run", ""):
            raise ExecutionError(f"runner mode {mode!r}: dpukit's runners have mode 'run' only")
        if subgraph.is_root or subgraph.get_attr("device") != "DPU":
            device = "the whole graph" if subgraph.is_root else subgraph.get_attr("device")
            raise ExecutionError(
                f"subgraph '{subgraph.get_name()}' runs on {device}, not the DPU: a runner "
                "runs one DPU subgraph (pick them with get_attr('device') == 'DPU'); run the "
                "whole model, CPU parts too, with dpukit.host.runner.create_runner"
            )
        backend = choose_backend(backend)
        if backend == "pynq":
            overlay = overlay or os.environ.get("DPUKIT_OVERLAY") or _current_overlay
            if overlay is None:
                raise ExecutionError(
                    "the pynq backend needs the overlay: load it first with "
                    "dpukit.compat.pynq_dpu.DpuOverlay('dpu.bit'), or set DPUKIT_OVERLAY"
                )
        return Runner(subgraph, backend, None if overlay is None else str(Path(overlay).resolve()))

    def get_input_tensors(self) -> list[xir.Tensor]:
        return list(self._inputs)

    def get_output_tensors(self) -> list[xir.Tensor]:
        return list(self._outputs)

    def execute_async(
        self,
        inputs: Sequence[np.ndarray],
        outputs: Sequence[np.ndarray],
        enable_dynamic_array: bool = False,
    ) -> tuple[int, int]:
        """Start the subgraph on `inputs` (checked and copied now); `wait` fills `outputs`.
        Returns (job_id, status 0), as VART's Python runner does. VART's
        `enable_dynamic_array` (buffers of other shapes than the tensors') is refused."""
        self._check_open()
        if enable_dynamic_array:
            raise ExecutionError(
                "enable_dynamic_array is not supported: each buffer has exactly its tensor's "
                "dims (one image per job)"
            )
        ins = _buffers(inputs, self._inputs, "input")
        outs = _buffers(outputs, self._outputs, "output")
        for k, out in enumerate(outs):
            if not out.flags.writeable:
                raise ExecutionError(
                    f"output buffer {k} (tensor '{self._outputs[k].name}') is read-only: give "
                    "arrays the runner can fill, e.g. np.empty(dims, np.float32)"
                )
        values = {t.name: _to_dpu(b, t) for b, t in zip(ins, self._inputs, strict=True)}
        if self._derived is not None:
            values.update(self._derive(self._derived, values))
        sg = self._model.program.subgraphs[self._index]
        job = self._model.execute_subgraph_async(self._index, [values[n] for n in sg.inputs])
        self._jobs[job] = list(outs)
        return job, 0

    def wait(self, job_id: tuple[int, int] | int, timeout: int = -1) -> int:
        """Wait for job `job_id` (execute_async's pair, or its first element), fill its output
        buffers and return 0; the run's error, if it failed. `timeout` is VART's and ignored:
        the driver bounds every run by the cycle model."""
        self._check_open()
        job = _job_number(job_id)
        outs = self._jobs.pop(job, None) if job is not None else None  # one waiter gets it
        if outs is None:
            raise ExecutionError(
                f"no job {job_id!r}: not started by this runner, or already waited"
            )
        result = self._model.wait(job)
        for out, data, t in zip(outs, result.outputs, self._outputs, strict=True):
            _from_dpu(data, t, out)
        return 0

    def close(self) -> None:
        """Finish the jobs started and not waited (their results and errors dropped) and let
        go of the board (the last runner on it closes it)."""
        if self._release.alive:
            for job in list(self._jobs):
                if self._jobs.pop(job, None) is None:
                    continue  # a wait in another thread took it
                try:
                    self._model.wait(job)
                except Exception:  # noqa: BLE001 - a dropped job's error is nobody's now
                    pass
            self._release()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<vart.Runner on '{self._subgraph.get_name()}', {self._key[0]} backend>"

    def _check_open(self) -> None:
        if not self._release.alive:
            raise ExecutionError("this runner is closed: create another")

    def _derive(
        self, derived: cpu_ops.CpuGraph, values: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The inputs the host derives from the given ones, in the DPU's bytes."""
        tensors = self._model.program.tensors
        feeds = {v.name: from_dram(tensors[v.name], values[v.name]) for v in derived.inputs}
        made = derived.run(feeds)
        return {
            v.name: to_dram(tensors[v.name], value)
            for v, value in zip(derived.outputs, made, strict=True)
        }


def _job_number(job_id: object) -> int | None:
    """The job number in what `wait` was given: execute_async's pair or its first element
    (any integer type); None if it is neither."""
    job = job_id[0] if isinstance(job_id, tuple) and job_id else job_id
    index = getattr(job, "__index__", None)  # int, numpy integers
    if index is None or isinstance(job, bool):
        return None
    try:
        return int(index())
    except TypeError:  # a numpy array of other than one integer
        return None


def _buffers(given: object, tensors: list[xir.Tensor], what: str) -> list[np.ndarray]:
    """The buffers of a call, one per tensor: numpy arrays of the tensor's dims, int8 or
    float32; anything else is an ExecutionError naming the buffer and the tensor."""
    if isinstance(given, np.ndarray) or not isinstance(given, (list, tuple)):
        raise ExecutionError(
            f"{what}s must be a list of numpy arrays, one per tensor "
            f"({', '.join(t.name for t in tensors)}), not a {type(given).__name__}"
        )
    if len(given) != len(tensors):
        raise ExecutionError(
            f"{len(given)} {what} buffer(s) for {len(tensors)} {what} tensor(s) "
            f"({', '.join(t.name for t in tensors)}): give one per tensor, in "
            f"get_{what}_tensors() order"
        )
    out = []
    for k, (b, t) in enumerate(zip(given, tensors, strict=True)):
        if not isinstance(b, np.ndarray) or isinstance(b, np.ma.MaskedArray):
            raise ExecutionError(f"{what} buffer {k} is a {type(b).__name__}, not a numpy array")
        if b.dtype.name not in BUFFER_DTYPES:
            raise ExecutionError(
                f"{what} buffer {k} (tensor '{t.name}') is {b.dtype}: buffers are int8 (the "
                "tensor's own values) or float32 (converted with its scale and zero point)"
            )
        if list(b.shape) != t.dims:
            raise ExecutionError(
                f"{what} buffer {k} has shape {list(b.shape)}; tensor '{t.name}' has dims "
                f"{t.dims}" + (" (N, H, W, C: the DPU's layout)" if t.ndim == 4 else "")
            )
        out.append(b)
    return out


def _to_dpu(buffer: np.ndarray, t: xir.Tensor) -> np.ndarray:
    """An input buffer as the DPU's int8 bytes (execute_subgraph_async copies them)."""
    if buffer.dtype == np.int8:
        return np.ascontiguousarray(buffer).reshape(-1)
    if not np.isfinite(buffer).all():
        at = [int(i) for i in np.argwhere(~np.isfinite(buffer))[0]]
        raise ExecutionError(
            f"input tensor '{t.name}': {buffer[tuple(at)]} at index {at}; NaN and infinity "
            "have no quantized value"
        )
    scale, zero_point = _quantization(t)
    return cpu_ops.quantize(buffer, scale, zero_point, np.int8).reshape(-1)


def _from_dpu(data: np.ndarray, t: xir.Tensor, out: np.ndarray) -> None:
    """Write an output tensor's int8 bytes into its buffer (as values, or dequantized)."""
    q = data.view(np.int8).reshape(t.dims)
    if out.dtype == np.int8:
        out[...] = q
    else:
        scale, zero_point = _quantization(t)
        out[...] = cpu_ops.dequantize(q, scale, zero_point)


def _quantization(t: xir.Tensor) -> tuple[np.float32, np.int32]:
    """A DPU tensor's scale (float32, the ONNX model's) and int8-domain zero point."""
    return np.float32(t.get_attr("scale")), np.int32(t.get_attr("zero_point"))


# One whole-model Runner per (graph, backend, overlay), shared by the runners on its
# subgraphs (one board, one worker thread), closed when the last of them closes. A PYNQ
# board has one DPU: one graph at a time drives it.
_shared: dict[tuple[int, tuple], list] = {}  # key -> [ModelRunner, graph, count]
_closing: list[tuple[tuple, ModelRunner, xir.Graph]] = []  # released, their close under way
_shared_lock = threading.Lock()


def _share(graph: xir.Graph, key: tuple) -> ModelRunner:
    with _shared_lock:
        entry = _shared.get((id(graph), key))
        if entry is None:
            _refuse_second_board(key)
            if key[0] == "pynq":  # opened under the lock: never two boards at once
                entry = _shared[(id(graph), key)] = [_open(graph, key), graph, 0]
        if entry is not None:
            entry[2] += 1
            return entry[0]
    # not under the lock: the simulator's first build takes minutes
    model = _open(graph, key)
    with _shared_lock:
        entry = _shared.setdefault((id(graph), key), [model, graph, 0])
        entry[2] += 1
    if entry[0] is not model:  # another thread shared one first
        model.close()
    return entry[0]


def _open(graph: xir.Graph, key: tuple) -> ModelRunner:
    """The whole-model Runner of `graph` on `key`'s backend, its DPU subgraphs only."""
    backend, overlay = key
    program = graph.program
    return ModelRunner(program, backend, program.hwconfig(), overlay=overlay, cpu_subgraphs=False)


def _refuse_second_board(key: tuple) -> None:
    """A PYNQ board runs one graph's runners at a time (they drive its one DPU)."""
    if key[0] != "pynq":
        return
    _closing[:] = [c for c in _closing if not c[1].released.is_set()]
    open_now = [(other, g) for (_, other), (_, g, _) in _shared.items()]
    for other, open_graph in open_now + [(other, g) for other, _, g in _closing]:
        if other[0] == "pynq":
            raise ExecutionError(
                f"the board's DPU is in use by runners on {open_graph.program.label}: close "
                "them (runner.close(), DpuOverlay.close()) before running another model"
            )


def _release(graph: xir.Graph, key: tuple) -> None:
    with _shared_lock:
        entry = _shared[(id(graph), key)]
        entry[2] -= 1
        if entry[2] > 0:
            return
        del _shared[(id(graph), key)]
        _closing.append((key, entry[0], graph))  # its board is busy until it has closed
    entry[0].close()  # outside the lock: it waits for the jobs still queued
