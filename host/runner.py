"""The Runner: executes a program's subgraphs, DPU ones on a backend, CPU ones on the host.

The kit's own API: the whole model, float in, float out, inputs and outputs by name.

    runner = create_runner(program, backend="golden")
    job = runner.execute_async({"input": x})   # returns at once; the job runs meanwhile
    outputs = runner.wait(job)

Vitis AI's shapes (xir graphs, a VART runner on one DPU subgraph with its own int8 tensors,
DPU-PYNQ's DpuOverlay) are a view over this Runner: dpukit/compat/.

Backends share one contract (`run(stream, dram) -> Activity`, `data_window(size)`):
`golden` (the bit-exact model), `rtl` (the board driver on the virtual board: the DPU's RTL
in Verilator) and `pynq` (the same driver on a PYNQ board); host/backends.py makes them.
Jobs run one after the other on the Runner's worker thread, so a caller can prepare the
next batch while the DPU runs the current one.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpukit.compiler.golden import Activity
from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.program import Program, TensorSpec
from dpukit.errors import ExecutionError, IsaError, ProgramError
from dpukit.host.backends import create_dpu
from dpukit.host.cpu import CpuSubgraph, load_cpu_subgraph
from dpukit.host.layout import from_dram, to_dram


@dataclass
class LayerActivity:
    subgraph: str
    layer: str
    kind: str
    macs: int  # the layer's own MACs (the compiler's count)
    activity: Activity  # what the DPU did for it, for one image


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    activity: Activity  # summed over the batch and all DPU subgraphs
    per_subgraph: list[Activity] = field(default_factory=list)  # first image of the batch
    per_layer: list[LayerActivity] = field(default_factory=list)  # one image


@dataclass
class SubgraphResult:
    """One DPU subgraph run on its own (`Runner.execute_subgraph_async`): its output tensors
    as the DPU stores them (int8, in the DPU's DRAM order, one per `sg.outputs`), and what
    the DPU did."""

    outputs: list[np.ndarray]
    activity: Activity


class Runner:
    """Runs a program on a backend: a name of host/backends.py, or a DPU object with the
    backends' contract (e.g. `BoardDPU(VirtualBoard(cfg, interrupts=False), cfg)`).
    `cpu_subgraphs=False` loads the DPU subgraphs only, for runs of one DPU subgraph at a time
    (`execute_subgraph_async`, the VART view), which need neither the CPU subgraphs nor
    onnxruntime for an ONNX one."""

    def __init__(
        self, program: Program, backend, cfg: HwConfig, *, overlay=None, cpu_subgraphs=True
    ):
        program.check_config(cfg)
        self.program, self.cfg = program, cfg
        self.whole_model = cpu_subgraphs
        self.dpu = (
            create_dpu(backend, cfg, overlay=overlay) if isinstance(backend, str) else backend
        )
        try:
            self._load(program)
        except BaseException:
            self.dpu.close()
            raise
        self._jobs: dict[int, Future] = {}
        self._job_ids = itertools.count(1)  # never reused, though waited jobs leave _jobs
        self._worker: ThreadPoolExecutor | None = None
        self._worker_thread: int | None = None  # its thread's ident
        self._worker_lock = threading.Lock()
        self._closed = False
        self.released = threading.Event()  # set once close has let go of the backend

    def _load(self, program: Program) -> None:
        try:
            self.dram = self.dpu.data_window(program.dram_size)
        except (MemoryError, ValueError):  # numpy: more than this host can, or can address
            raise ExecutionError(
                f"{program.label}: its data window of {program.dram_size} bytes does not fit "
                "in this host's memory"
            ) from None
        self.dram[program.const_base :] = np.frombuffer(program.const, np.uint8)
        self.cpu: dict[int, CpuSubgraph] = {}
        for k, sg in enumerate(program.subgraphs):
            if sg.device == "CPU":
                if self.whole_model:
                    self.cpu[k] = load_cpu_subgraph(program, sg)
            else:
                try:
                    self.dpu.prepare(sg.payload, self.dram.size)
                except (IsaError, ExecutionError) as exc:
                    raise ProgramError(
                        f"{program.label}: DPU subgraph '{sg.name}' is not a legal instruction "
                        f"stream ({exc}); recompile the model"
                    ) from None
        # Activity does not depend on the data: count it per layer once.
        self.layer_activity: list[LayerActivity] = []
        for sg in program.subgraphs:
            if sg.device == "DPU":
                ranges = [(layer["first_instr"], layer["num_instrs"]) for layer in sg.layers]
                acts = self.dpu.layer_activity(sg.payload, self.dram.size, ranges)
                self.layer_activity += [
                    LayerActivity(sg.name, layer["name"], layer["kind"], layer["macs"], act)
                    for layer, act in zip(sg.layers, acts, strict=True)
                ]

    def get_input_tensors(self) -> list[TensorSpec]:
        return list(self.program.inputs)

    def get_output_tensors(self) -> list[TensorSpec]:
        return list(self.program.outputs)

    def execute_async(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Start a batch (one array per input name, samples along the leading dimension) and
        return at once with a job id for `wait`. The inputs are checked and copied here, so
        the caller may reuse its arrays; jobs run in the order they were started."""
        if not self.whole_model:
            raise ExecutionError(
                "this runner loaded the DPU subgraphs only (cpu_subgraphs=False): create one "
                "with the CPU subgraphs to run the whole model"
            )
        feeds, n = check_inputs(self.program.inputs, inputs)
        return self._submit(self._run_batch, feeds, n)

    def execute_subgraph_async(self, index: int, inputs: Sequence[np.ndarray]) -> int:
        """Start the program's DPU subgraph `index` on its own, as VART runs one
        (dpukit/compat/vart.py): `inputs` are its input tensors (`sg.inputs` order) as the DPU
        stores them, int8 in its DRAM order, copied here. `wait` gives a SubgraphResult."""
        sg = self.program.subgraphs[index]
        if sg.device != "DPU":
            raise ExecutionError(
                f"subgraph '{sg.name}' runs on the {sg.device}, not the DPU: run the whole "
                "model with Runner.execute_async"
            )
        if len(inputs) != len(sg.inputs):
            raise ExecutionError(
                f"DPU subgraph '{sg.name}' reads {len(sg.inputs)} tensor(s), given {len(inputs)}"
            )
        copies = []
        for name, data in zip(sg.inputs, inputs, strict=True):
            t = self.program.tensors[name]
            data = np.asarray(data)
            if data.dtype != np.int8 or data.size != t.nbytes:
                raise ExecutionError(
                    f"tensor '{name}' of DPU subgraph '{sg.name}': {t.nbytes} int8 values, "
                    f"given {data.size} {data.dtype}"
                )
            copies.append(np.array(data.reshape(-1), copy=True))
        return self._submit(self._run_subgraph, sg, copies)

    def _submit(self, work: Callable, *args) -> int:
        """Queue `work(*args)` on the worker thread; its job id for `wait`."""
        with self._worker_lock:
            if self._closed:
                raise ExecutionError("this runner is closed: create another")
            if self._worker is None:
                self._worker = ThreadPoolExecutor(
                    1, thread_name_prefix="dpukit-runner", initializer=self._note_worker
                )
            future = self._worker.submit(work, *args)
        job = next(self._job_ids)
        self._jobs[job] = future
        return job

    def _note_worker(self) -> None:
        self._worker_thread = threading.get_ident()

    def wait(self, job: int) -> RunResult | SubgraphResult:
        """The result of job `job` once it has run (its error, if it failed)."""
        known = isinstance(job, int) and not isinstance(job, bool)
        future = self._jobs.pop(job, None) if known else None  # one waiter gets it
        if future is None:
            raise ExecutionError(f"no job {job}: not started by this runner, or already waited")
        return future.result()

    def run(self, inputs: Mapping[str, np.ndarray]) -> RunResult:
        """Run on a batch: one array per input name, samples along the leading dimension."""
        return self.wait(self.execute_async(inputs))

    def close(self, cancel: bool = False) -> None:
        """Finish the started jobs and release the backend (a board's buffers and clock).
        `cancel`: drop the jobs not started yet and stop the running one (its wait ends as a
        timeout), e.g. on Ctrl-C, rather than wait for a DPU that may take minutes."""
        with self._worker_lock:
            if self._closed:
                return
            self._closed = True  # no job is started from now on
        if self._worker_thread == threading.get_ident():
            # called by a job (a finalizer the garbage collector ran on the worker thread):
            # the worker cannot wait for itself, so another thread finishes the close
            threading.Thread(target=self._finish_close, args=(cancel,), name="dpukit-close").start()
        else:
            self._finish_close(cancel)

    def _finish_close(self, cancel: bool) -> None:
        if self._worker is not None:
            if cancel:
                self._worker.shutdown(wait=False, cancel_futures=True)
                abort = getattr(self.dpu, "abort", None)
                if abort is not None:
                    abort()
            self._worker.shutdown(wait=True)
            self._worker = None
        self.dpu.close()
        self.released.set()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close(cancel=kind is not None)

    def _run_batch(self, feeds: dict[str, np.ndarray], n: int) -> RunResult:
        total = Activity()
        per_sub: list[Activity] = []
        outs: dict[str, list[np.ndarray]] = {t.name: [] for t in self.program.outputs}
        for b in range(n):
            env = {k: v[b : b + 1] for k, v in feeds.items()}
            for k, sg in enumerate(self.program.subgraphs):
                if sg.device == "CPU":
                    env.update(zip(sg.outputs, self.cpu[k].run(env), strict=True))
                else:
                    act = self._run_dpu(sg, env)
                    total.add(act)
                    if b == 0:
                        per_sub.append(act)
            for name in outs:
                outs[name].append(env[name])
        outputs = {k: np.concatenate(v) for k, v in outs.items()}
        return RunResult(outputs, total, per_sub, list(self.layer_activity))

    def _run_dpu(self, sg, env) -> Activity:
        p = self.program
        inputs = [to_dram(p.tensors[name], env[name]) for name in sg.inputs]
        outputs, act = self._run_dpu_bytes(sg, inputs)
        for name, data in zip(sg.outputs, outputs, strict=True):
            env[name] = from_dram(p.tensors[name], data)
        return act

    def _run_subgraph(self, sg, inputs: list[np.ndarray]) -> SubgraphResult:
        outputs, act = self._run_dpu_bytes(sg, inputs)
        return SubgraphResult([data.copy() for data in outputs], act)

    def _run_dpu_bytes(self, sg, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], Activity]:
        """Run DPU subgraph `sg` on its input tensors' DRAM bytes; its output tensors' bytes
        are views of the data window (valid until the next run)."""
        p = self.program
        for name, data in zip(sg.inputs, inputs, strict=True):
            off = p.dram_offsets[name]
            self.dram[off : off + p.tensors[name].nbytes] = data.view(np.uint8)
        act = self.dpu.run(sg.payload, self.dram)
        outputs = []
        for name in sg.outputs:
            off = p.dram_offsets[name]
            outputs.append(self.dram[off : off + p.tensors[name].nbytes].view(np.int8))
        return outputs, act


def random_inputs(specs: list[TensorSpec], n: int) -> dict[str, np.ndarray]:
    """`n` samples of each input, the same on every call (seed 0): uniform in [0, 1) for a
    float input, over the dtype's whole range for an integer one."""
    rng = np.random.default_rng(0)
    feeds = {}
    for s in specs:
        shape = (n, *s.shape[1:])
        if np.issubdtype(np.dtype(s.dtype), np.integer):
            info = np.iinfo(np.dtype(s.dtype))
            feeds[s.name] = rng.integers(info.min, info.max, shape, endpoint=True).astype(s.dtype)
        else:
            feeds[s.name] = rng.random(shape, dtype=np.float32).astype(s.dtype)
    return feeds


def check_inputs(
    specs: list[TensorSpec], inputs: Mapping[str, object]
) -> tuple[dict[str, np.ndarray], int]:
    """A run's inputs as contiguous arrays of the model's dtypes, and their batch size.

    Anything that does not fit the program's inputs is an ExecutionError naming the input:
    unknown or missing names, another shape or dtype, NaN or infinity (quantization has no
    value for them), batches of different or zero size.
    """
    if not isinstance(inputs, Mapping):
        raise ExecutionError(
            f"inputs must be a dict of arrays by input name ({', '.join(s.name for s in specs)}), "
            f"not a {type(inputs).__name__}"
        )
    takes = ", ".join(f"'{s.name}'" for s in specs)
    unknown = sorted(map(str, inputs.keys() - {s.name for s in specs}))
    if unknown:
        raise ExecutionError(f"unknown input(s) {', '.join(unknown)}: the model takes {takes}")
    missing = [s.name for s in specs if s.name not in inputs]
    if missing:
        raise ExecutionError(f"missing input(s) {', '.join(missing)}: the model takes {takes}")
    feeds = {s.name: _input_array(s, inputs[s.name]) for s in specs}
    sizes = {name: len(a) for name, a in feeds.items()}
    if len(set(sizes.values())) > 1:
        got = ", ".join(f"'{k}' {v}" for k, v in sizes.items())
        raise ExecutionError(f"inputs differ in batch size ({got}): give each the same samples")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ExecutionError(f"empty batch: input(s) {takes} hold no samples; give at least one")
    return feeds, n


def _input_array(spec: TensorSpec, value: object) -> np.ndarray:
    """One input as the model takes it: [N, *spec.shape[1:]] of spec.dtype, where any float
    width is accepted for a float input (and must stay finite in the model's width)."""
    want_shape = "[" + ", ".join(map(str, ["N", *spec.shape[1:]])) + "]"
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ExecutionError(f"input '{spec.name}': not an array {want_shape} ({exc})") from None
    if a.ndim != len(spec.shape) or list(a.shape[1:]) != list(spec.shape[1:]):
        raise ExecutionError(
            f"input '{spec.name}': shape {list(a.shape)}, the model takes {want_shape}"
        )
    want = np.dtype(spec.dtype)
    if a.dtype != want and not (a.dtype.kind == "f" and want.kind == "f"):
        raise ExecutionError(
            f"input '{spec.name}': the model takes {spec.dtype}, got {a.dtype}"
            + (" (scale images to floats as in training)" if want.kind == "f" else "")
        )
    given = a.dtype
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
        # a copy, always: the caller may refill its array while an async job reads this one
        a = np.array(a, dtype=want, order="C", copy=True)
    if want.kind == "f" and not np.isfinite(a).all():
        at = [int(i) for i in np.argwhere(~np.isfinite(a))[0]]
        raise ExecutionError(
            f"input '{spec.name}': {a[tuple(at)]} at index {at}"
            + (f" (once converted from {given} to {want})" if given != want else "")
            + "; NaN and infinity have no quantized value: clean or clip the data"
        )
    return a


def create_runner(
    program: Program | str | Path,
    backend: str = "golden",
    config: str | HwConfig | None = None,
    *,
    overlay: str | Path | None = None,
) -> Runner:
    """Load a program (object or .dpu path) and bind it to a backend (`overlay`: the .bit
    file for the pynq backend).

    The hardware config defaults to the one the program carries (so a program compiled for a
    custom .toml runs anywhere); giving another one (a name, a .toml path or a HwConfig) is a
    clear error unless it has the program's fingerprint.
    """
    if not isinstance(program, Program):
        program = Program.load(program)
    cfg = program.hwconfig() if config is None else load_config(config)
    return Runner(program, backend, cfg, overlay=overlay)
