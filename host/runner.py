"""The Runner: executes a program's subgraphs, DPU ones on a backend, CPU ones on the host.

Shaped like Vitis AI's VART so DPU-PYNQ users feel at home:

    runner = create_runner(program, backend="golden")
    job = runner.execute_async({"input": x})
    outputs = runner.wait(job)

Backends share one contract (`run(stream, dram) -> Activity`): `golden` (the bit-exact
model), `rtl` (the DPU's RTL in Verilator, host/rtl_backend.py), and `pynq` later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dpukit.compiler.golden import Activity, GoldenDPU
from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.program import Program, TensorSpec
from dpukit.errors import ExecutionError, ProgramError
from dpukit.host.backends import BACKENDS
from dpukit.host.layout import from_dram, to_dram
from dpukit.host.rtl_backend import RtlDPU


@dataclass
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


class Runner:
    def __init__(self, program: Program, backend: str, cfg: HwConfig):
        program.check_config(cfg)
        if backend not in BACKENDS:
            raise ExecutionError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
        self.program, self.cfg = program, cfg
        self.dpu = GoldenDPU(cfg) if backend == "golden" else RtlDPU(cfg)
        self.dram = np.zeros(program.dram_size, np.uint8)
        self.dram[program.const_base :] = np.frombuffer(program.const, np.uint8)
        self.cpu: dict[int, ort.InferenceSession] = {}
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # CPU subgraphs are small; a thread pool would spin after each run and steal the
        # cores the DPU backend is about to use.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        for k, sg in enumerate(program.subgraphs):
            if sg.device == "CPU":
                self.cpu[k] = ort.InferenceSession(
                    sg.payload, opts, providers=["CPUExecutionProvider"]
                )
            else:
                self.dpu.prepare(sg.payload, self.dram.size)
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
        self._jobs: dict[int, RunResult] = {}

    def get_input_tensors(self) -> list[TensorSpec]:
        return list(self.program.inputs)

    def get_output_tensors(self) -> list[TensorSpec]:
        return list(self.program.outputs)

    def execute_async(self, inputs: dict[str, np.ndarray]) -> int:
        """Run on a batch (leading dimension); returns a job id for `wait`."""
        result = self.run(inputs)
        job = len(self._jobs) + 1
        self._jobs[job] = result
        return job

    def wait(self, job: int) -> RunResult:
        if job not in self._jobs:
            raise ExecutionError(f"no job {job}")
        return self._jobs.pop(job)

    def run(self, inputs: dict[str, np.ndarray]) -> RunResult:
        specs = {t.name: t for t in self.program.inputs}
        missing = specs.keys() - inputs.keys()
        if missing:
            raise ExecutionError(
                f"missing inputs {sorted(missing)}; the model takes {sorted(specs)}"
            )
        batch = {len(np.asarray(v)) for v in inputs.values()}
        if len(batch) != 1:
            raise ExecutionError("all inputs must have the same batch size")
        n = batch.pop()
        total = Activity()
        per_sub: list[Activity] = []
        outs: dict[str, list[np.ndarray]] = {t.name: [] for t in self.program.outputs}
        for b in range(n):
            env = {k: np.asarray(v)[b : b + 1] for k, v in inputs.items()}
            for name, spec in specs.items():
                if list(env[name].shape[1:]) != spec.shape[1:]:
                    raise ExecutionError(
                        f"input '{name}': shape {list(env[name].shape)}, model expects {spec.shape}"
                    )
                env[name] = _coerce(name, env[name], spec.dtype)
            for k, sg in enumerate(self.program.subgraphs):
                if sg.device == "CPU":
                    res = self.cpu[k].run(sg.outputs, {i: env[i] for i in sg.inputs})
                    env.update(zip(sg.outputs, res, strict=True))
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
        for name in sg.inputs:
            t, off = p.tensors[name], p.dram_offsets[name]
            self.dram[off : off + t.nbytes] = to_dram(t, env[name]).view(np.uint8)
        act = self.dpu.run(sg.payload, self.dram)
        for name in sg.outputs:
            t, off = p.tensors[name], p.dram_offsets[name]
            env[name] = from_dram(t, self.dram[off : off + t.nbytes])
        return act


def _coerce(name: str, value: np.ndarray, dtype: str) -> np.ndarray:
    """Accept another float width for a float input; anything else must match exactly."""
    want = np.dtype(dtype)
    if value.dtype == want or (value.dtype.kind == "f" and want.kind == "f"):
        return value.astype(want)
    raise ExecutionError(
        f"input '{name}': the model takes {dtype}, got {value.dtype}"
        + (" (scale images to floats as in training)" if want.kind == "f" else "")
    )


def create_runner(
    program: Program | str | Path, backend: str = "golden", config: str | HwConfig | None = None
) -> Runner:
    """Load a program (object or .dpu path) and bind it to a backend.

    The hardware config defaults to the one the program was compiled for; giving another
    one is a clear error (the program's fingerprint would not match).
    """
    if not isinstance(program, Program):
        program = Program.load(program)
    if config is None:
        name = program.config.get("name")
        try:
            cfg = load_config(name)
        except Exception:
            raise ProgramError(
                f"program was compiled for config '{name}', which is not installed"
            ) from None
    else:
        cfg = load_config(config) if not isinstance(config, HwConfig) else config
    return Runner(program, backend, cfg)
