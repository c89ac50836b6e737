"""The staged optimization flow of seed 000, with seed 001's neuron elimination: float ->
pruning steps -> eliminations -> quantized -> the DPU, each stage measured the same way.

    flow = Flow("model.onnx", "digits", config="pynq-z2", backend="golden",
                report_dir="report", options=FlowOptions(eliminate=(("fc", 16),)))
    for stage in flow.stages:          # or flow.run(): every stage, then the report
        result = flow.run_stage(stage) # a notebook can look at each one
    flow.write_report()

Every stage records top-1 accuracy on the test split, parameters and size, MACs, latency
per image, energy per inference and, with sensors, measured power and energy. Host stages
run onnxruntime on this CPU: their latency is measured here, their energy modeled at the
network level (seed 001's convention) and, as the stage's model would run once quantized
and compiled for the config, at the DPU level. The DPU stage runs the program on the chosen
backend: its cycles are modeled (golden) or measured (rtl, pynq), its energy the DPU level
over that activity. Every figure carries its kind: modeled or measured.

Resumable: each stage's result is cached in REPORT_DIR/cache under a hash of its inputs
(the input model's bytes, the data, the options that shape it); a stage whose inputs are
unchanged and whose output file is intact is read back, not recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from dpukit.errors import DpuKitError, ModelError
from dpukit.host.backends import CYCLES_KIND
from dpukit.optimize.data import (
    Dataset,
    accuracy_onnx,
    host_latency_s,
    latency_session,
    load_dataset,
    onnx_scores,
    top1,
)
from dpukit.optimize.report import MEASURED, MODELED

DEFAULT_PRUNE_STEPS = 6
CACHE_VERSION = 1  # in every key: a change to what a stage computes retires old entries
HOST_RUNS_ON = "host CPU (onnxruntime)"
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
KINDS = ("float", "prune", "eliminate", "quantized", "dpu")

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class FlowOptions:
    """What shapes the stages (all of it goes into their cache keys)."""

    # pruning with fine-tuning, steps of prune_ratio; None: 6 for a PyTorch model (seed
    # 000's schedule), 0 for an ONNX model (which cannot be fine-tuned)
    prune_steps: int | None = None
    prune_ratio: float = 0.1
    importance: str = "l2"
    finetune_epochs: int | None = None  # None: dpukit.optimize.prune's default
    eliminate: tuple[tuple[str, int], ...] = ()  # (layer, neurons kept), applied in order
    sweep_all: bool = False  # elimination curves for every eliminable layer, not only these
    per_channel: bool = True  # quantization: per-channel int8 weights
    activation_type: str = "int8"
    calibration_images: int = 256  # from the training split
    latency_images: int = 200  # from the test split, one at a time on the host
    batch: int = 64  # images per Runner call on the DPU
    energy_table: str = "horowitz45"  # the network level's table
    idle_s: float = 1.0  # idle baseline before each measured stage (sensors only)
    measure_s: float = 2.0  # a measured inference phase lasts at least this (sensors only)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prune_steps is not None and self.prune_steps < 0:
            raise ValueError(f"prune_steps must be >= 0, not {self.prune_steps}")
        if not 0 < self.prune_ratio < 1:
            raise ValueError(f"prune_ratio must lie in (0, 1), not {self.prune_ratio}")
        for layer, keep in self.eliminate:
            if not layer or int(keep) < 1:
                raise ValueError(f"elimination ({layer!r}, {keep!r}): a layer name and keep >= 1")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, not {self.seed}")


@dataclass(frozen=True)
class Stage:
    """One row of the report: what runs, on what input."""

    name: str  # "float", "prune3", "eliminate fc1:32", "quantized", "dpu"
    kind: str  # one of KINDS
    index: int  # its place in the flow: file names and cache entries start with it
    step: int | None = None  # pruning step, 1..prune_steps
    layer: str | None = None  # elimination: the layer and the neurons kept
    keep: int | None = None

    @property
    def slug(self) -> str:
        """The stage's file-name stem: its index and name, safe for any file system."""
        return f"{self.index:02d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("_")


def plan(options: FlowOptions) -> list[Stage]:
    """The stages a flow with these options runs, in order."""
    stages = [Stage("float", "float", 0)]
    for step in range(1, (options.prune_steps or 0) + 1):
        stages.append(Stage(f"prune{step}", "prune", len(stages), step=step))
    for layer, keep in options.eliminate:
        name = f"eliminate {layer}:{keep}"
        stages.append(Stage(name, "eliminate", len(stages), layer=layer, keep=int(keep)))
    stages.append(Stage("quantized", "quantized", len(stages)))
    stages.append(Stage("dpu", "dpu", len(stages)))
    return stages


@dataclass
class _Source:
    """The user's model: an ONNX model, or a PyTorch one (exported for the float stage)."""

    kind: str  # "onnx" or "torch"
    label: str
    onnx_bytes: bytes | None = None
    torch_model: object = None
    digest: str = ""  # the cache key's hash of the model


class Flow:
    """The staged flow over one model and data set, writing into `report_dir`."""

    def __init__(
        self,
        model,
        data: Dataset | str | Path,
        config="pynq-z2",
        backend: str = "golden",
        sensors: str | list | None = None,
        report_dir: str | Path = "flow-report",
        *,
        options: FlowOptions | None = None,
        sysfs: str | None = None,
        overlay: str | Path | None = None,
        size: tuple[int, int] | None = None,
        limit: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        """`model`: a float ONNX model (path or ModelProto), a PyTorch model file (.pt
        TorchScript / torch.export archive, or .py defining `model` or `build_model()`) or
        an nn.Module. `data`: a Dataset, "digits" or a folder of images (`size`, `limit`:
        load_dataset's). `config`: the hardware config (a name, a .toml, a HwConfig).
        `sensors`: names for `open_sensors` (measured power per stage)."""
        from dpukit.compiler.hwconfig import HwConfig, load_config
        from dpukit.host.backends import BACKENDS

        if backend not in BACKENDS:
            raise DpuKitError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
        options = options or FlowOptions()
        self.cfg = config if isinstance(config, HwConfig) else load_config(config)
        self.backend, self.overlay = backend, overlay
        self.report_dir = Path(report_dir)
        try:
            for folder in ("models", "cache", "cache/deploy"):
                (self.report_dir / folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission
            why = exc.strerror or exc
            raise DpuKitError(
                f"{self.report_dir}: cannot write the report there ({why}); choose another folder"
            ) from None
        self.progress = progress
        self.source = _load_source(model)
        if options.prune_steps is None:
            steps = DEFAULT_PRUNE_STEPS if self.source.kind == "torch" else 0
            options = replace(options, prune_steps=steps)
        self.options = options
        if options.prune_steps * options.prune_ratio >= 1:
            raise ModelError(
                f"{options.prune_steps} pruning steps of {options.prune_ratio:g} remove every "
                "channel; take fewer steps or a smaller ratio"
            )
        if self.source.kind == "onnx":  # now, not after the float stage has run
            self._check_eliminations(onnx.load_from_string(self.source.onnx_bytes))
        if self.options.prune_steps and self.source.kind != "torch":
            raise ModelError(
                f"{self.source.label}: pruning with fine-tuning needs a PyTorch model (.pt, .py "
                "or an nn.Module) and its training data; shrink an ONNX model with neuron "
                "elimination (--eliminate LAYER:P) instead"
            )
        if isinstance(data, Dataset):
            self.data = data
        else:
            shape = _input_shape(self.source.onnx_bytes) if self.source.onnx_bytes else None
            self.data = load_dataset(
                data, size=size, seed=self.options.seed, input_shape=shape, limit=limit
            )
        self._data_key = self.data.fingerprint()
        self._sensors = None
        self.sensor_names: str | None = None  # as they go into the cache keys
        if sensors is not None:
            from dpukit.host.power import open_sensors

            self._sensors = (
                open_sensors(sensors, sysfs) if isinstance(sensors, str) else list(sensors)
            )
            self.sensor_names = ",".join(s.name for s in self._sensors)
        self.stages = plan(self.options)
        self.results: dict[str, dict] = {}
        self.curves: dict[str, list[dict]] = {}
        self.computed: list[str] = []  # the stages this object computed (not read from cache)
        self._outputs: dict[str, Path] = {}  # stage name -> its model file
        self._pruning: Iterator | None = None
        self._pruned_to = 0
        self._pruned_model = None

    # -- running ---------------------------------------------------------------------------

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise DpuKitError(f"no stage '{name}'; stages: {', '.join(s.name for s in self.stages)}")

    def run(self) -> list[dict]:
        """Every stage (cached ones read back), then the report; the stages' results."""
        try:
            results = [self.run_stage(s) for s in self.stages]
            self.write_report()
            return results
        finally:
            self.close()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the sensors (`run` does it; a notebook running stage by stage calls it)."""
        if self._sensors is not None:
            from dpukit.host.power import close_sensors

            close_sensors(self._sensors)
            self._sensors = None

    def run_stage(self, stage: Stage | str) -> dict:
        """One stage's result (a JSON-ready dict), running the stages before it first if
        they have not run; read from the cache when its inputs are unchanged."""
        stage = self.stage(stage) if isinstance(stage, str) else stage
        if stage.name in self.results:
            return self.results[stage.name]
        parent = self.stages[stage.index - 1] if stage.index else None
        if parent is not None:
            self.run_stage(parent)
        wants_curves = self.options.eliminate or self.options.sweep_all
        if wants_curves and parent is not None and parent.kind in ("float", "prune"):
            if stage.kind in ("eliminate", "quantized"):  # the model before any elimination
                self._elimination_curves(self._outputs[parent.name])
        key, inputs = self._key(stage, parent)
        result = self._cached(stage, key)
        if result is None:
            start = time.perf_counter()
            result = self._compute(stage, parent)
            result.update(
                stage=stage.name,
                kind=stage.kind,
                index=stage.index,
                computed_unix=time.time(),
                compute_s=time.perf_counter() - start,
            )
            self._store(stage, key, inputs, result)
            self.computed.append(stage.name)
        if stage.kind == "float":
            self._check_eliminations(self.report_dir / result["model"])
        self.results[stage.name] = result
        self._outputs[stage.name] = self.report_dir / result["model"]
        return result

    def _compute(self, stage: Stage, parent: Stage | None) -> dict:
        out = self.report_dir / "models" / f"{stage.slug}.onnx"
        if stage.kind == "float":
            self._float_model(out)
        elif stage.kind == "prune":
            from dpukit.optimize.prune import export_onnx

            model = self._prune_to(stage.step)
            export_onnx(model, self._example_input(), out)
        elif stage.kind == "eliminate":
            from dpukit.optimize.eliminate import eliminate

            proto = eliminate(
                self._outputs[parent.name], stage.layer, stage.keep, self._calibration()
            )
            onnx.save(proto, out)
        elif stage.kind == "quantized":
            shutil.copyfile(self._quantized(self._outputs[parent.name]), out)
        else:
            return self._dpu_stage(stage, parent)
        return self._host_stage(stage, out)

    # -- the stages' models ----------------------------------------------------------------

    def _float_model(self, out: Path) -> None:
        if self.source.kind == "onnx":
            out.write_bytes(self.source.onnx_bytes)
            return
        from dpukit.optimize.prune import export_onnx

        export_onnx(self.source.torch_model, self._example_input(), out)

    def _example_input(self) -> np.ndarray:
        return np.ascontiguousarray(self.data.test.x[:1])

    def _prune_to(self, step: int):
        """The PyTorch model after pruning step `step`. The steps run in order from one
        iterator; after a resumed run it starts again from the unpruned model."""
        if self._pruning is None or self._pruned_to >= step:
            from dpukit.optimize.prune import prune_steps

            o = self.options
            extra = {} if o.finetune_epochs is None else {"finetune_epochs": o.finetune_epochs}
            self._pruning = prune_steps(
                self.source.torch_model,  # left as it is: each step yields a pruned copy
                self.data.train,
                self.data.val,
                steps=o.prune_steps,
                ratio=o.prune_ratio,
                importance=o.importance,
                seed=o.seed,
                example_input=self._example_input(),
                **extra,
            )
            self._pruned_to = 0
        while self._pruned_to < step:
            self._tick(f"prune{self._pruned_to + 1}: pruning and fine-tuning", 0, 1)
            self._pruned_to, self._pruned_model = next(self._pruning)
        return self._pruned_model

    def _calibration(self) -> np.ndarray:
        """Calibration images drawn from the whole training split (a folder's split is in
        file order, so its first images would be one class)."""
        train = self.data.train
        pick = np.random.default_rng(self.options.seed).permutation(len(train.y))
        return train.x[np.sort(pick[: self.options.calibration_images])]

    def _quantized(self, float_model: Path) -> Path:
        """The float model quantized (QDQ), cached by its bytes and the quantizer's inputs."""
        from dpukit.quantize import quantize_model

        o = self.options
        key = _digest(
            {
                "model": _sha(float_model.read_bytes()),
                "calibration": self._data_key,
                "images": o.calibration_images,
                "per_channel": o.per_channel,
                "activation_type": o.activation_type,
            }
        )[:20]
        qdq = self.report_dir / "cache" / "deploy" / f"{key}.qdq.onnx"
        if not qdq.is_file():
            tmp = qdq.with_suffix(".tmp")
            quantize_model(
                float_model,
                tmp,
                self._calibration(),
                per_channel=o.per_channel,
                activation_type=o.activation_type,
            )
            tmp.replace(qdq)  # whole or not there: an interrupted run leaves no half file
        return qdq

    def _compiled(self, qdq: Path) -> Path:
        """The QDQ model compiled for the config (with the data's preprocessing, which the
        board scripts read), cached by its bytes, the config and the preprocessing."""
        from dpukit.compiler.compile import compile_model

        key = _digest(
            {
                "model": _sha(qdq.read_bytes()),
                "config": self.cfg.fingerprint,
                "preprocess": self.data.preprocess,
            }
        )[:20]
        program = self.report_dir / "cache" / "deploy" / f"{key}.dpu"
        if not program.is_file():
            tmp = program.with_suffix(".tmp")
            compile_model(qdq, self.cfg, preprocess=self.data.preprocess).save(tmp)
            tmp.replace(program)
        return program

    # -- measuring -------------------------------------------------------------------------

    def _host_stage(self, stage: Stage, model: Path) -> dict:
        """Accuracy, size, MACs, host latency, network- and DPU-level energy of an ONNX model."""
        from dpukit.compiler.energy import network_energy

        test = self.data.test
        self._tick(f"{stage.name}: accuracy", 0, len(test))
        accuracy = accuracy_onnx(model, test)
        net = network_energy(model, self.options.energy_table)
        n = min(self.options.latency_images, len(test))
        x = test.x[:n]
        # made once: with sensors, the measured phase repeats latency() and must not hold
        # session builds
        session = latency_session(model)

        def latency():
            def tick(done: int) -> None:
                self._tick(f"{stage.name}: latency", done, n)

            return host_latency_s(model, x, tick=tick, session=session)

        (median_s, _), measured = self._measure(
            stage, latency, lambda: host_latency_s(model, x[:1], session=session), n,
            "onnxruntime",
        )  # fmt: skip
        return {
            "runs_on": HOST_RUNS_ON,
            "model": str(model.relative_to(self.report_dir)),
            "model_sha256": _sha(model.read_bytes()),
            "accuracy": accuracy,
            "accuracy_on": f"test split, {len(test)} samples (onnxruntime, graph as written)",
            **model_size(model),
            "macs": int(sum(la.macs for la in net.layers)),
            "latency_ms": median_s * 1e3,
            "latency_kind": f"{MEASURED} (this host's CPU, onnxruntime, batch 1, median of {n})",
            "energy_network_modeled": _energy_fields(net.total, net.table, "network"),
            "dpu_modeled": self._dpu_estimate(model, stage),
            "measured": measured,
        }

    def _dpu_estimate(self, model: Path, stage: Stage) -> dict:
        """The DPU level of the stage's model as deployed (quantized, compiled; modeled by the
        cycle model), or why it cannot be deployed."""
        from dpukit.compiler.energy import program_energy
        from dpukit.compiler.program import Program

        try:
            qdq = model if stage.kind == "quantized" else self._quantized(model)
            program = Program.load(self._compiled(qdq))
            report = program_energy(program)
        except DpuKitError as exc:
            return {"kind": MODELED, "error": " ".join(str(exc).split())}
        cycles = report.seconds * self.cfg.clock_mhz * 1e6
        as_what = "as compiled" if stage.kind == "quantized" else "once quantized and compiled"
        return {
            "kind": MODELED,
            "level": "dpu",
            "what": f"the stage's model {as_what} for {self.cfg.name} (cycle model)",
            "config": self.cfg.name,
            "cycles_per_image": cycles,
            "latency_ms": report.seconds * 1e3,
            "average_power_w": report.total.total / report.seconds if report.seconds else None,
            "energy": _energy_fields(report.total, report.table, "dpu"),
            "weight_bytes": _program_weight_bytes(program),
        }

    def _dpu_stage(self, stage: Stage, parent: Stage) -> dict:
        from dpukit.compiler.energy import per_inference
        from dpukit.compiler.golden import Activity
        from dpukit.compiler.program import Program
        from dpukit.host.runner import create_runner

        out = self.report_dir / "models" / f"{stage.slug}.dpu"
        shutil.copyfile(self._compiled(self._outputs[parent.name]), out)
        program = Program.load(out)
        test = self.data.test
        name, scored = program.inputs[0].name, program.outputs[0].name
        batch = self.options.batch
        with create_runner(program, self.backend, overlay=self.overlay) as runner:

            def run_all():
                act, scores = Activity(), []
                for i in range(0, len(test), batch):
                    res = runner.run({name: test.x[i : i + batch]})
                    act.add(res.activity)
                    scores.append(res.outputs[scored])
                    self._tick(f"dpu: {self.backend}", min(i + batch, len(test)), len(test))
                return act, np.concatenate(scores)

            warm_up = {name: test.x[:batch]}
            what = f"the {self.backend} model" if self.backend != "pynq" else None
            (act, scores), measured = self._measure(
                stage, run_all, lambda: runner.run(warm_up), len(test), what
            )
        n = len(test)
        energy = per_inference(act, n, self.cfg)
        quantized = self.results[parent.name]
        reference = onnx_scores(self.report_dir / quantized["model"], test.x)
        cycles = act.cycles / n
        return {
            "runs_on": f"DPU ({self.backend} backend, {self.cfg.name})",
            "model": str(out.relative_to(self.report_dir)),
            "model_sha256": _sha(out.read_bytes()),
            "accuracy": top1(scores, test.y),
            "accuracy_on": f"test split, {n} samples ({self.backend} backend)",
            "agreement_with_quantized": {
                "predictions_equal": float((scores.argmax(1) == reference.argmax(1)).mean()),
                "outputs_bit_identical": int(np.all(scores == reference, axis=1).sum()),
                "images": n,
                "reference": "the quantized stage's model, onnxruntime, graph as written",
            },
            **model_size(self.report_dir / quantized["model"]),
            "weight_bytes": _program_weight_bytes(program),
            "file_bytes": out.stat().st_size,
            "macs": int(sum(la["macs"] for sg in program.subgraphs for la in sg.layers)),
            "cycles_per_image": cycles,
            "cycles_kind": CYCLES_KIND[self.backend],
            "cycles_per_image_modeled": quantized["dpu_modeled"].get("cycles_per_image"),
            "latency_ms": cycles / (self.cfg.clock_mhz * 1e3),
            "latency_kind": f"{CYCLES_KIND[self.backend]}, at {self.cfg.clock_mhz:g} MHz",
            "dpu_modeled": {
                "kind": MODELED,
                "level": "dpu",
                "what": f"the run's activity ({CYCLES_KIND[self.backend]}) x the energy table",
                "config": self.cfg.name,
                "cycles_per_image": cycles,
                "latency_ms": energy.seconds * 1e3,
                "latency_ms_modeled": quantized["dpu_modeled"].get("latency_ms"),  # cycle model
                "average_power_w": energy.average_w,
                "energy": _energy_fields(energy.total, energy.table, "dpu"),
                "weight_bytes": _program_weight_bytes(program),
            },
            "energy_network_modeled": quantized["energy_network_modeled"],
            "measured": measured,
        }

    def _measure(self, stage: Stage, run: Callable, warm_up: Callable, n: int, what):
        """`run()`'s value and, with sensors, the power recorded while it ran (an idle
        baseline, a warm-up, then the inference phase: `run()`, `n` inferences, repeated
        until it has lasted measure_s, so that the sensors read it more than a few times),
        measured."""
        if self._sensors is None:
            return run(), None
        from dpukit.host.power import recording_phases, write_csv

        def wait_idle(seconds: float) -> None:
            self._tick(f"{stage.name}: idle baseline", 0, 1)
            time.sleep(seconds)

        with recording_phases(self._sensors, self.options.idle_s, warm_up, wait_idle) as rec:
            start, value = time.perf_counter(), run()
            runs = 1
            while time.perf_counter() - start < self.options.measure_s:
                run()
                runs += 1
        n *= runs
        s = rec.trace.summary(inferences=n)
        trace = self.report_dir / "power" / f"{stage.slug}.csv"
        trace.parent.mkdir(exist_ok=True)
        write_csv(rec.trace, trace)
        per = s["per_inference"] or {}
        of = f", of this host running {what}" if what else ""
        fields = ("energy_j", "uncertainty_j", "avg_power_w", "avg_power_uncertainty_w",
                  "dynamic_energy_j", "dynamic_uncertainty_j", "idle_power_w",
                  "duration_s")  # fmt: skip
        return value, {
            "kind": MEASURED,
            "label": s["label"] + of,
            "inferences": n,
            "complete": bool(per.get("complete")),
            **{k: per.get(k) for k in fields},
            "note": per.get("note"),
            "warnings": s["warnings"],
            "trace": str(trace.relative_to(self.report_dir)),
        }

    # -- elimination -----------------------------------------------------------------------

    def _check_eliminations(self, float_model: Path | onnx.ModelProto) -> None:
        """Every --eliminate layer must be one the float model can shrink: checked before
        any pruning or elimination runs (for an ONNX model, when the Flow is made)."""
        if not self.options.eliminate and not self.options.sweep_all:
            return
        from dpukit.optimize.eliminate import eliminable_layers

        proto = float_model if isinstance(float_model, onnx.ModelProto) else None
        proto = proto or onnx.load(str(float_model))
        layers = eliminable_layers(proto)
        nodes = {n.name or n.output[0] for n in proto.graph.node}
        for layer, _ in self.options.eliminate:
            if layer not in layers:
                what = (
                    f"layer '{layer}' is not one whose neurons can be eliminated (its output "
                    "must feed one next Conv, Gemm or MatMul)"
                    if layer in nodes
                    else f"no layer '{layer}' to eliminate neurons of"
                )
                raise ModelError(
                    f"{self.source.label}: {what}; the eliminable layers: "
                    f"{', '.join(layers) or 'none'}"
                )

    def _elimination_curves(self, model: Path) -> None:
        """Seed 001's per-layer curves (accuracy on the validation split vs modeled energy,
        over the neurons kept) on the model before any elimination, cached like a stage."""
        from dpukit.optimize.eliminate import eliminable_layers, sweep

        layers = [layer for layer, _ in self.options.eliminate]
        if self.options.sweep_all:
            layers = eliminable_layers(model)
        layers = list(dict.fromkeys(layers))
        inputs = {"model": _sha(model.read_bytes()), "data": self._data_key, "layers": layers,
                  "calibration_images": self.options.calibration_images,
                  "table": self.options.energy_table}  # fmt: skip
        key = _digest({"what": "elimination curves", "version": CACHE_VERSION, **inputs})
        path = self.report_dir / "cache" / "elimination_curves.json"
        cached = _read_json(path)
        if cached and cached.get("key") == key:
            self.curves = cached["curves"]
            return
        curves = {}
        for k, layer in enumerate(layers):
            self._tick(f"elimination curves: {layer}", k, len(layers))
            curves[layer] = sweep(
                model, layer, None, self._calibration(), self.data.val,
                table=self.options.energy_table,
            )  # fmt: skip
        self.curves = json.loads(json.dumps(curves, default=_json_default))
        path.write_text(json.dumps({"key": key, "inputs": inputs, "curves": self.curves}))
        self.computed.append("elimination curves")

    # -- cache -----------------------------------------------------------------------------

    def _key(self, stage: Stage, parent: Stage | None) -> tuple[str, dict]:
        o = self.options
        inputs: dict = {"version": CACHE_VERSION, "stage": asdict(stage), "data": self._data_key}
        if parent is None:
            inputs["model"] = self.source.digest
        else:
            inputs["model"] = self.results[parent.name]["model_sha256"]
        if stage.kind == "prune":  # pruning starts from the user's model, not the step before
            inputs["model"] = self.source.digest
            inputs["prune"] = [o.prune_steps, o.prune_ratio, o.importance, o.finetune_epochs,
                               o.seed]  # fmt: skip
        if stage.kind == "eliminate":
            inputs["calibration_images"] = o.calibration_images
        inputs["measure"] = {
            "latency_images": o.latency_images,
            "energy_table": o.energy_table,
            "sensors": self.sensor_names,
            "idle_s": o.idle_s if self.sensor_names else None,
            "measure_s": o.measure_s if self.sensor_names else None,
        }
        inputs["deploy"] = {
            "config": self.cfg.fingerprint,
            "calibration_images": o.calibration_images,
            "per_channel": o.per_channel,
            "activation_type": o.activation_type,
            "preprocess": self.data.preprocess,
        }
        if stage.kind == "dpu":
            inputs["backend"] = [self.backend, str(self.overlay or ""), o.batch]
        return _digest(inputs), inputs

    def _cache_path(self, stage: Stage) -> Path:
        return self.report_dir / "cache" / f"{stage.slug}.json"

    def _cached(self, stage: Stage, key: str) -> dict | None:
        entry = _read_json(self._cache_path(stage))
        if not entry or entry.get("key") != key:
            return None
        result = entry["result"]
        model = self.report_dir / result["model"]
        if not model.is_file() or _sha(model.read_bytes()) != result["model_sha256"]:
            return None  # its output was removed or changed since
        return result

    def _store(self, stage: Stage, key: str, inputs: dict, result: dict) -> None:
        path = self._cache_path(stage)
        tmp = path.with_suffix(".tmp")
        doc = {"key": key, "inputs": inputs, "result": result}
        tmp.write_text(json.dumps(doc, indent=1, default=_json_default))
        tmp.replace(path)  # a stage interrupted while writing is simply not cached

    # -- report ----------------------------------------------------------------------------

    def write_report(self) -> dict[str, Path]:
        """stages.csv, report.json, the plots and report.html in the report folder (from the
        stages run so far); the files written, by kind."""
        from dpukit.optimize.report import write_report

        meta = {
            "model": self.source.label,
            "data": self.data.describe(),
            "config": self.cfg.name,
            "clock_mhz": self.cfg.clock_mhz,
            "backend": self.backend,
            "sensors": self.sensor_names,
            "options": asdict(self.options),
        }
        results = [self.results[s.name] for s in self.stages if s.name in self.results]
        if not results:
            raise DpuKitError("no stage has run yet: run_stage() or run() first")
        return write_report(self.report_dir, results, meta, self.curves, self.elimination_choice())

    def elimination_choice(self) -> dict | None:
        """Seed 001's choice: the layer and neurons kept that save the most energy while
        keeping validation accuracy within 2 points of the unreduced model's."""
        if not self.curves:
            return None
        from dpukit.optimize.eliminate import choose

        best = max(max(p["accuracy"] for p in c) for c in self.curves.values())
        target = best - 0.02
        layer, keep = choose(self.curves, target)
        return {"target_accuracy": target, "layer": layer, "keep": int(keep),
                "on": "validation split"}  # fmt: skip

    def _tick(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)


# -- helpers -----------------------------------------------------------------------------------


def _load_source(model) -> _Source:
    if isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        return _Source("onnx", model.graph.name or "the given model", data, digest=_sha(data))
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file; give a float ONNX model, a .pt or a .py")
        if path.suffix.lower() in (".pt", ".pth", ".pt2", ".py"):
            from dpukit.optimize.prune import load_torch_model

            torch_model = load_torch_model(path)
            # its weights and layers, not the file's bytes: a .py may load weights from elsewhere
            digest = _torch_digest(torch_model)
            return _Source("torch", str(path), torch_model=torch_model, digest=digest)
        from dpukit.compiler.frontend import read_onnx

        proto, _ = read_onnx(path)
        if _is_quantized(proto):
            raise ModelError(
                f"{path}: already quantized (QDQ); the flow starts from the float model"
            )
        data = path.read_bytes()
        return _Source("onnx", str(path), data, digest=_sha(data))
    label = f"a PyTorch {type(model).__name__}"
    return _Source("torch", label, torch_model=model, digest=_torch_digest(model))


def _torch_digest(model) -> str:
    """A hash of a PyTorch model's architecture (its repr) and every parameter and buffer."""
    try:
        state = model.state_dict()
    except AttributeError:
        raise ModelError(
            f"a {type(model).__name__} is not a model the flow takes: give an ONNX model, a "
            "PyTorch nn.Module, or the path of a .onnx, .pt or .py file"
        ) from None
    h = hashlib.sha256(repr(model).encode())
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _input_shape(onnx_bytes: bytes) -> tuple:
    """The model's single data input's dims (None for a symbolic one)."""
    model = onnx.load_from_string(onnx_bytes)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"the flow needs a model with one input, not {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def model_size(model: str | Path | onnx.ModelProto) -> dict:
    """Parameters of the weighted layers (Conv, ConvTranspose, Gemm, MatMul: weights and
    biases, as stored, looking through DequantizeLinear), their bytes, and the file's."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def stored(name: str) -> str:
        node = producer.get(name)
        return node.input[0] if node is not None and node.op_type == "DequantizeLinear" else name

    params, nbytes, seen = 0, 0, set()
    for node in g.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for name in node.input:
            tensor = inits.get(stored(name)) if name else None
            if tensor is None or tensor.name in seen:
                continue
            seen.add(tensor.name)
            n = int(np.prod(tensor.dims)) if tensor.dims else 1
            params += n
            nbytes += n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    size = len(proto.SerializeToString()) if isinstance(model, onnx.ModelProto) else None
    return {
        "params": params,
        "param_bytes": nbytes,
        "file_bytes": size if size is not None else Path(model).stat().st_size,
    }


def _program_weight_bytes(program) -> int:
    return int(sum(la["weight_bytes"] for sg in program.subgraphs for la in sg.layers))


def _energy_fields(total, table, level: str) -> dict:
    return {
        "kind": MODELED,
        "level": level,
        "table": table.label,
        "unit": "J per inference",
        **total.as_dict(),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(inputs: dict) -> str:
    return _sha(json.dumps(inputs, sort_keys=True, default=_json_default).encode())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _read_json(path: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None
