"""The `dpukit` command line: quantize, compile, run, inspect, demo, configs.

Every number a command prints about time or activity comes from the golden model's cycle
model (compiler/timing.py) and is labelled "modeled"; nothing here is measured on hardware.
A `DpuKitError` ends the command with one red `error: ...` line and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from dpukit import __version__
from dpukit.errors import DpuKitError
from dpukit.host.backends import BACKENDS

DIGITS_SHAPE = [1, 8, 8]  # one digits image, without the batch dim
OPCODE_ORDER = ("LOAD", "GEMM", "ALU", "POST", "STORE", "END")
BUFFERS = ("inp", "wgt", "acc", "out", "par")
MODELED = "modeled (cycle model)"
MEASURED_RTL = "measured (RTL counters in Verilator)"


def _kind(backend: str) -> str:
    """Whether a backend's cycles are modeled or counted by the hardware."""
    return MEASURED_RTL if backend == "rtl" else MODELED


class UsageError(DpuKitError):
    """A command-line option does not fit the model, program or file it is applied to."""


# -- formatting helpers ----------------------------------------------------------------------


def _int(n: float) -> str:
    return f"{int(round(n)):,}"


def _bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n):,} B"
    if n < 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / (1024 * 1024):,.2f} MiB"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _progress(con: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=con,
        transient=True,
        disable=not con.is_terminal,  # no bar in logs and pipes
    )


def _ort_session(path: str | Path, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:  # the QDQ model's reference meaning: DQ -> float op -> Q, node by node
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_outputs(path: str | Path, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    """The first output of an ONNX model over `x` (stacked along axis 0), fixed batch or not."""
    session = _ort_session(path, optimize)
    inp = session.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else len(x)
    parts = [
        session.run(None, {inp.name: x[i : i + step].astype(np.float32)})[0]
        for i in range(0, len(x), step)
    ]
    return np.concatenate(parts)


def _cpu_nodes(sg) -> list:
    import onnx

    return list(onnx.load_from_string(sg.payload).graph.node)


def _instr_count(sg) -> int:
    from dpukit.compiler.isa import INSTR_BYTES

    return len(sg.payload) // INSTR_BYTES


def _opcodes(layers: list[dict]) -> list[str]:
    seen = {op for layer in layers for op in layer.get("instructions", {})}
    return [op for op in OPCODE_ORDER if op in seen] + sorted(seen - set(OPCODE_ORDER))


# -- tables shared by several commands -------------------------------------------------------


def _layer_table(sg, title: str | None = None) -> Table:
    """One row per DPU layer: MACs, instructions per opcode, buffer use, weights, tile."""
    ops = _opcodes(sg.layers)
    table = Table(title=title, title_justify="left", show_footer=True)
    table.add_column("layer", footer="total", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    macs = _int(sum(x["macs"] for x in sg.layers))
    table.add_column("MACs", justify="right", footer=macs, no_wrap=True)
    for op in ops:
        total = sum(x["instructions"].get(op, 0) for x in sg.layers)
        table.add_column(op, justify="right", footer=_int(total), no_wrap=True)
    table.add_column("entries used\ninp/wgt/acc/out/par", justify="right", no_wrap=True)
    weights = _bytes(sum(x["weight_bytes"] for x in sg.layers))
    table.add_column("weights", justify="right", footer=weights, no_wrap=True)
    table.add_column("tile")
    for layer in sg.layers:
        use = layer.get("buffer_use") or {}
        table.add_row(
            layer["name"],
            layer["kind"],
            _int(layer["macs"]),
            *(_int(layer["instructions"].get(op, 0)) for op in ops),
            "/".join(str(use.get(b, 0)) for b in BUFFERS) if use else "-",
            _bytes(layer["weight_bytes"]),
            layer["tile"],
        )
    return table


def _print_subgraphs(con: Console, program) -> None:
    for k, sg in enumerate(program.subgraphs):
        con.print()
        con.print(
            f"[bold]subgraph {k}[/] {sg.name}  device [bold]{sg.device}[/]   "
            f"inputs {', '.join(sg.inputs)}  ->  outputs {', '.join(sg.outputs)}",
            markup=True,
            highlight=False,
        )
        if sg.device == "DPU":
            con.print(f"  {_instr_count(sg):,} instructions ({_bytes(len(sg.payload))})")
            con.print(_layer_table(sg))
        else:
            nodes = _cpu_nodes(sg)
            ops = ", ".join(f"{n.op_type} ({n.name or n.output[0]})" for n in nodes)
            con.print(f"  host CPU (onnxruntime), {len(nodes)} node(s): {ops}")


def _activity_table(act, images: int, cfg, model_macs: int, title: str) -> Table:
    """Totals and per-image numbers of a run's Activity, labelled as modeled."""
    per = 1 / max(images, 1)
    cycles_img = act.cycles * per
    latency_ms = cycles_img / (cfg.clock_mhz * 1e3)
    util = act.mac_cycles / act.cycles if act.cycles else 0.0
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("total", justify="right")
    table.add_column("per image", justify="right")
    table.add_row("cycles", _int(act.cycles), _int(cycles_img))
    table.add_row(
        f"latency at {cfg.clock_mhz:g} MHz, {MODELED}",
        f"{latency_ms * images:.3f} ms",
        f"{latency_ms:.4f} ms",
    )
    table.add_row("MACs of the model's layers", _int(model_macs * images), _int(model_macs))
    table.add_row("MACs issued by the array (incl. padding)", _int(act.macs), _int(act.macs * per))
    table.add_row("PE utilization (mac_cycles / cycles)", _pct(util), _pct(util))
    table.add_row("DRAM bytes read", _int(act.dram_read_bytes), _int(act.dram_read_bytes * per))
    table.add_row(
        "DRAM bytes written", _int(act.dram_write_bytes), _int(act.dram_write_bytes * per)
    )
    for b in BUFFERS:
        for what, d in (("reads", act.buffer_reads), ("writes", act.buffer_writes)):
            if b in d:
                table.add_row(f"{b.upper()} buffer {what} (entries)", _int(d[b]), _int(d[b] * per))
    if act.instructions:
        ops = [op for op in OPCODE_ORDER if op in act.instructions]
        ops += sorted(set(act.instructions) - set(OPCODE_ORDER))
        total = sum(act.instructions.values())
        table.add_row("instructions executed", _int(total), _int(total * per))
        table.add_row(
            f"  {'/'.join(ops)}",
            "/".join(_int(act.instructions[op]) for op in ops),
            "/".join(_int(act.instructions[op] * per) for op in ops),
        )
    return table


def _subgraph_activity_table(program, per_subgraph: list, title: str) -> Table:
    """Per-DPU-subgraph activity of one image (the runner reports a batch's first image)."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("DPU subgraph", no_wrap=True)
    for col in ("cycles", "array MACs", "PE util.", "DRAM read", "DRAM written", "instr."):
        table.add_column(col, justify="right")
    table.add_column("busy cycles\nload/compute/store", justify="right")
    dpu = [sg for sg in program.subgraphs if sg.device == "DPU"]
    for sg, act in zip(dpu, per_subgraph, strict=False):
        busy = "/".join(_int(act.busy.get(e, 0)) for e in ("load", "compute", "store"))
        table.add_row(
            sg.name,
            _int(act.cycles),
            _int(act.macs),
            _pct(act.mac_cycles / act.cycles if act.cycles else 0.0),
            _bytes(act.dram_read_bytes),
            _bytes(act.dram_write_bytes),
            _int(sum(act.instructions.values())),
            busy,
        )
    cpu = [sg.name for sg in program.subgraphs if sg.device == "CPU"]
    if cpu:
        table.caption = f"CPU subgraphs ({', '.join(cpu)}) run on the host and are not modeled"
    return table


def _layer_activity_table(per_layer: list, title: str) -> Table:
    """What the DPU did for each layer of one image (Runner.layer_activity)."""
    table = Table(title=title, title_justify="left")
    table.add_column("layer", no_wrap=True)
    table.add_column("kind")
    for col in ("cycles", "layer MACs", "PE util.", "DRAM read", "DRAM written"):
        table.add_column(col, justify="right")
    table.add_column("buffer reads\ninp/wgt/acc/out/par", justify="right")
    table.add_column("buffer writes\ninp/wgt/acc/out/par", justify="right")
    for la in per_layer:
        act = la.activity
        table.add_row(
            la.layer,
            la.kind,
            _int(act.cycles),
            _int(la.macs),
            _pct(act.mac_cycles / act.cycles if act.cycles else 0.0),
            _bytes(act.dram_read_bytes),
            _bytes(act.dram_write_bytes),
            "/".join(_int(v) for v in act.buffer_reads.values()),
            "/".join(_int(v) for v in act.buffer_writes.values()),
        )
    return table


def _model_macs(program) -> int:
    return sum(layer["macs"] for sg in program.subgraphs for layer in sg.layers)


# -- running a program over a set of inputs --------------------------------------------------


def _run_batches(con: Console, runner, inputs: dict[str, np.ndarray], batch: int, label: str):
    """Run `inputs` (stacked along axis 0) in batches; returns outputs, total and per-subgraph
    activity (of the first image), number of images and wall time."""
    from dpukit.compiler.golden import Activity

    n = len(next(iter(inputs.values())))
    total = Activity()
    per_subgraph: list = []
    outs: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    with _progress(con) as progress:
        task = progress.add_task(label, total=n)
        for i in range(0, n, batch):
            res = runner.run({k: v[i : i + batch] for k, v in inputs.items()})
            total.add(res.activity)
            if not per_subgraph:
                per_subgraph = res.per_subgraph
            for k, v in res.outputs.items():
                outs.setdefault(k, []).append(v)
            progress.advance(task, min(batch, n - i))
    wall = time.perf_counter() - start
    return {k: np.concatenate(v) for k, v in outs.items()}, total, per_subgraph, n, wall


def _inputs_for(args, program) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """The run's inputs (stacked along axis 0), digits labels if any, and a description."""
    specs = program.inputs
    if args.digits:
        if len(specs) != 1 or list(specs[0].shape[1:]) != DIGITS_SHAPE:
            got = ", ".join(f"{s.name} {_shape(s.shape)}" for s in specs)
            raise UsageError(
                f"--digits needs a model with one input of shape [N, 1, 8, 8]; this program "
                f"takes {got}; use --input FILE.npy or --random N"
            )
        from dpukit.models.digits import load_digits_split

        _, _, x_test, y_test = load_digits_split()
        return {specs[0].name: x_test}, y_test, f"{len(x_test)} held-out digits images"
    if args.input:
        return _load_input_file(Path(args.input), specs), None, str(args.input)
    n = args.random or 1
    rng = np.random.default_rng(0)
    feeds = {}
    for s in specs:
        shape = (n, *s.shape[1:])
        if np.issubdtype(np.dtype(s.dtype), np.integer):
            info = np.iinfo(np.dtype(s.dtype))
            feeds[s.name] = rng.integers(info.min, info.max, shape, endpoint=True).astype(s.dtype)
        else:
            feeds[s.name] = rng.random(shape, dtype=np.float32).astype(s.dtype)
    return feeds, None, f"{n} random uniform [0, 1) input(s)"


def _load_input_file(path: Path, specs) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"{path}: no such input file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise UsageError(
                f"{path}: the program takes {len(specs)} inputs ({names}); "
                "pass an .npz with one array per input name"
            )
        arrays = {specs[0].name: data}
    else:
        arrays = {k: data[k] for k in data.files}
    feeds = {}
    for s in specs:
        if s.name not in arrays:
            raise UsageError(f"{path}: no array named '{s.name}' (has {', '.join(arrays)})")
        a = np.asarray(arrays[s.name])
        if a.ndim == len(s.shape) - 1:  # one sample without the batch dim
            a = a[None]
        if list(a.shape[1:]) != list(s.shape[1:]):
            raise UsageError(
                f"{path}: input '{s.name}' has shape {_shape(a.shape)}; the program expects "
                f"[N, {', '.join(str(d) for d in s.shape[1:])}]"
            )
        feeds[s.name] = a
    return feeds


# -- commands --------------------------------------------------------------------------------


def cmd_configs(args, con: Console) -> int:
    from dpukit.compiler.hwconfig import DEFAULT_CONFIG, available_configs, config_dir, load_config

    configs = [load_config(name) for name in available_configs()]
    table = Table(title=f"hardware configs shipped in {config_dir()}", title_justify="left")
    table.add_column("")
    for c in configs:
        table.add_column(f"{c.name} (default)" if c.name == DEFAULT_CONFIG else c.name)

    def row(label: str, fn) -> None:
        table.add_row(label, *(fn(c) for c in configs))

    row("FPGA part", lambda c: c.fpga_part)
    row("clock", lambda c: f"{c.clock_mhz:g} MHz")
    row("systolic array", lambda c: f"{c.rows} x {c.cols} ({c.peak_macs_per_cycle} MACs/cycle)")
    row("precision", lambda c: f"int{c.operand_bits} x int{c.operand_bits} -> "
        f"int{c.accumulator_bits}")  # fmt: skip
    for b in BUFFERS:
        row(
            f"{b.upper()} buffer",
            lambda c, b=b: (
                f"{_bytes(getattr(c, f'{b}_entries') * getattr(c, f'{b}_entry_bytes'))}"
                f" ({getattr(c, f'{b}_entries'):,} x {getattr(c, f'{b}_entry_bytes')} B)"
            ),
        )
    row("AXI data bus", lambda c: f"{c.axi_data_bits} bit, bursts of {c.max_burst_beats}")
    row("DRAM latency (modeled)", lambda c: f"{c.dram_latency_cycles} cycles")
    row("queue depth", lambda c: str(c.queue_depth))
    row("fingerprint", lambda c: c.fingerprint)
    con.print(table)
    return 0


def cmd_quantize(args, con: Console) -> int:
    from dpukit.quantize import _graph_input, _load, quantize_model

    model, label = _load(args.model)
    input_name, shape = _graph_input(model, label)
    if args.calib_digits:
        if len(shape) != 4 or list(shape[1:]) != DIGITS_SHAPE:
            raise UsageError(
                f"{label}: --calib-digits needs an input of shape [N, 1, 8, 8]; "
                f"'{input_name}' is {_shape(['N' if d is None else d for d in shape])}; "
                "use --calib-random N"
            )
        from dpukit.models.digits import load_digits_split

        calib = load_digits_split()[0]
        what = f"{len(calib)} digits training images"
    else:
        if not shape or any(d is None for d in shape[1:]):
            raise UsageError(
                f"{label}: input '{input_name}' has symbolic dims besides the batch "
                f"({_shape(['?' if d is None else d for d in shape])}); random calibration "
                "needs a static shape: export the model with fixed input dims"
            )
        n = args.calib_random
        calib = np.random.default_rng(0).random((n, *shape[1:]), dtype=np.float32)
        what = f"{n} random uniform [0, 1) samples of shape {_shape([1, *shape[1:]])}"
    out = Path(args.output) if args.output else _default_qdq_path(Path(args.model))
    start = time.perf_counter()
    with con.status(f"quantizing {label} ({what})"):
        quantize_model(
            model,
            out,
            calib,
            per_channel=args.per_channel,
            activation_type=args.activation_type,
        )
    elapsed = time.perf_counter() - start
    import onnx

    nodes = onnx.load(out).graph.node
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in nodes)
    con.print(f"wrote [bold]{out}[/] (QDQ ONNX, {len(nodes)} nodes, {qdq} Q/DQ) in {elapsed:.2f} s")
    granularity = "per-channel" if args.per_channel else "per-tensor"
    con.print(
        f"  calibration: {what}; weights int8 symmetric {granularity}, "
        f"activations {args.activation_type} (MinMax)",
        highlight=False,
    )
    con.print(f"  next: dpukit compile {out}", highlight=False)
    return 0


def _default_qdq_path(model: Path) -> Path:
    return model.with_name(model.name.removesuffix(".onnx") + ".qdq.onnx")


def _default_dpu_path(model: Path) -> Path:
    stem = model.name.removesuffix(".onnx").removesuffix(".qdq")
    return model.with_name(stem + ".dpu")


def _compile_summary(con: Console, program, out: Path, elapsed: float) -> None:
    table = Table(title=f"{out}", title_justify="left")
    for col, just in (
        ("#", "right"),
        ("subgraph", "left"),
        ("device", "left"),
        ("layers / nodes", "right"),
        ("instructions", "right"),
        ("inputs -> outputs", "left"),
    ):
        table.add_column(col, justify=just)
    total_instr = 0
    for k, sg in enumerate(program.subgraphs):
        if sg.device == "DPU":
            count = f"{len(sg.layers)} layers"
            instr = _instr_count(sg)
            total_instr += instr
            instr_text = _int(instr)
        else:
            count = f"{len(_cpu_nodes(sg))} node(s)"
            instr_text = "-"
        table.add_row(
            str(k), sg.name, sg.device, count, instr_text,
            f"{', '.join(sg.inputs)} -> {', '.join(sg.outputs)}",
        )  # fmt: skip
    con.print(table)
    tensors = program.const_base
    con.print(
        f"compiled for {program.config['name']} (fingerprint {program.fingerprint}) "
        f"in {elapsed:.2f} s\n{total_instr:,} DPU instructions; data window "
        f"{_bytes(program.dram_size)} ({_bytes(tensors)} tensors + "
        f"{_bytes(len(program.const))} constants)",
        highlight=False,
    )


def cmd_compile(args, con: Console) -> int:
    from dpukit.compiler.compile import compile_model
    from dpukit.compiler.hwconfig import load_config

    cfg = load_config(args.config)
    start = time.perf_counter()
    program = compile_model(args.model, cfg)
    elapsed = time.perf_counter() - start
    out = Path(args.output) if args.output else _default_dpu_path(Path(args.model))
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(out)
    _compile_summary(con, program, out, elapsed)
    return 0


def cmd_inspect(args, con: Console) -> int:
    from dpukit.compiler.program import FORMAT_VERSION, Program

    program = Program.load(args.program)
    c = program.config
    con.print(f"[bold]{args.program}[/]  (dpukit program format {FORMAT_VERSION})")
    con.print(f"  source      {program.source}", highlight=False)
    con.print(
        f"  config      {c['name']}  fingerprint {program.fingerprint}  "
        f"({c['rows']}x{c['cols']} array, {c['clock_mhz']:g} MHz, {c['fpga_part']})",
        highlight=False,
    )
    con.print(
        f"  data window {_bytes(program.dram_size)} ({_bytes(program.const_base)} tensors + "
        f"{_bytes(len(program.const))} constants)",
        highlight=False,
    )
    io = Table(title="graph inputs and outputs", title_justify="left")
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind, specs in (("input", program.inputs), ("output", program.outputs)):
        for s in specs:
            io.add_row(kind, s.name, _shape(s.shape), s.dtype)
    con.print(io)
    _print_subgraphs(con, program)
    return 0


def _outputs_table(outputs: dict[str, np.ndarray], show: int = 10) -> Table:
    table = Table(title="outputs", title_justify="left")
    for col in ("name", "shape", "dtype", "min", "max", f"argmax (first {show})"):
        table.add_column(col)
    for name, v in outputs.items():
        arg = "-"
        if v.ndim == 2:
            top = v.argmax(axis=1)
            arg = " ".join(str(int(a)) for a in top[:show]) + (" ..." if len(top) > show else "")
        table.add_row(name, _shape(v.shape), str(v.dtype), f"{v.min():.4g}", f"{v.max():.4g}", arg)
    return table


def _activity_json(act) -> dict:
    return asdict(act)


def cmd_run(args, con: Console) -> int:
    from dpukit.compiler.program import Program
    from dpukit.host.runner import create_runner

    program = Program.load(args.program)
    runner = create_runner(program, backend=args.backend)
    cfg = runner.cfg
    inputs, labels, what = _inputs_for(args, program)
    con.print(
        f"running [bold]{args.program}[/] on the {args.backend} backend "
        f"({cfg.name}): {what}, batch {args.batch}",
        highlight=False,
    )
    outputs, act, per_sub, n, wall = _run_batches(
        con, runner, inputs, args.batch, f"{args.backend} DPU"
    )
    kind = _kind(args.backend)
    con.print(_outputs_table(outputs))
    accuracy = None
    if labels is not None:
        first = outputs[program.outputs[0].name]
        accuracy = float((first.argmax(axis=1) == labels).mean())
        con.print(
            f"top-1 accuracy vs labels: [bold]{_pct(accuracy)}[/] ({int(round(accuracy * n))}/{n})"
        )
    macs = _model_macs(program)
    con.print(
        _activity_table(
            act, n, cfg, macs, f"DPU activity, {args.backend} backend, {kind}, {n} image(s)"
        )
    )
    con.print(_subgraph_activity_table(program, per_sub, f"per subgraph, first image, {kind}"))
    con.print(_layer_activity_table(runner.layer_activity, f"per layer, one image, {MODELED}"))
    con.print(f"host wall time {wall:.2f} s (simulation speed, not DPU latency)", style="dim")
    if args.json:
        cycles_img = act.cycles / n
        doc = {
            "program": str(args.program),
            "backend": args.backend,
            "config": cfg.name,
            "fingerprint": cfg.fingerprint,
            "clock_mhz": cfg.clock_mhz,
            "images": n,
            "inputs": what,
            "accuracy": accuracy,
            "cycles_per_image": cycles_img,
            "latency_ms_per_image": cycles_img / (cfg.clock_mhz * 1e3),
            "latency_kind": kind,
            "model_macs_per_image": macs,
            "pe_utilization": act.mac_cycles / act.cycles if act.cycles else 0.0,
            "activity": _activity_json(act),
            "per_subgraph_first_image": [
                {"name": sg.name, **_activity_json(a)}
                for sg, a in zip(
                    [s for s in program.subgraphs if s.device == "DPU"], per_sub, strict=False
                )
            ],
            "per_layer_one_image": [
                {
                    "subgraph": la.subgraph,
                    "layer": la.layer,
                    "kind": la.kind,
                    "layer_macs": la.macs,
                    **_activity_json(la.activity),
                }
                for la in runner.layer_activity
            ],
            "outputs": {
                k: {
                    "shape": list(v.shape),
                    **({"argmax": v.argmax(axis=1).tolist()} if v.ndim == 2 else {}),
                }
                for k, v in outputs.items()
            },
            "host_wall_s": wall,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        con.print(f"wrote {args.json}", highlight=False)
    return 0


def cmd_demo(args, con: Console) -> int:
    from dpukit.compiler.compile import compile_model
    from dpukit.compiler.hwconfig import load_config
    from dpukit.host.runner import create_runner
    from dpukit.models.digits import digits_model, load_digits_split
    from dpukit.quantize import quantize_model

    t_all = time.perf_counter()
    cfg = load_config(args.config)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    float_path = work / "digits_cnn.onnx"
    qdq_path = work / "digits_cnn.qdq.onnx"
    dpu_path = work / "digits_cnn.dpu"
    width = max(len(str(p)) for p in (float_path, qdq_path, dpu_path)) + 2
    x_train, _, x_test, y_test = load_digits_split()
    con.rule(
        f"dpukit demo: digits CNN -> {cfg.name} "
        f"({cfg.rows}x{cfg.cols} array @ {cfg.clock_mhz:g} MHz), golden DPU model"
    )

    def step(name: str, target: str, detail: str) -> None:
        con.print(f"{name:<11}{target:<{width}}{detail}", highlight=False)

    cached = float_path.is_file()
    start = time.perf_counter()
    with con.status("loading" if cached else "training the digits CNN in numpy (~10 s)"):
        float_path = digits_model(work)
    step(
        "1 train",
        str(float_path),
        "loaded from cache" if cached else f"trained in {time.perf_counter() - start:.1f} s",
    )

    start = time.perf_counter()
    with con.status("quantizing"):
        quantize_model(float_path, qdq_path, x_train, per_channel=True, activation_type="int8")
    step(
        "2 quantize",
        str(qdq_path),
        f"int8, per-channel weights, {len(x_train):,} calibration images, "
        f"{time.perf_counter() - start:.1f} s",
    )

    start = time.perf_counter()
    program = compile_model(qdq_path, cfg)
    program.save(dpu_path)
    n_instr = sum(_instr_count(sg) for sg in program.subgraphs if sg.device == "DPU")
    step(
        "3 compile",
        str(dpu_path),
        f"{'+'.join(sg.device for sg in program.subgraphs)} subgraphs, {n_instr:,} "
        f"instructions, {_bytes(program.dram_size)} data, {time.perf_counter() - start:.2f} s",
    )

    runner = create_runner(dpu_path, backend="golden")
    outputs, act, per_sub, n, wall = _run_batches(
        con, runner, {program.inputs[0].name: x_test}, 64, "4 run (golden)"
    )
    golden = outputs[program.outputs[0].name]
    step("4 run", f"{n} held-out images", f"golden backend, {wall:.1f} s host time")

    with con.status("onnxruntime"):
        float_pred = _ort_outputs(float_path, x_test).argmax(axis=1)
        qdq_out = _ort_outputs(qdq_path, x_test)
        ref_out = _ort_outputs(qdq_path, x_test, optimize=False)
    g_pred = golden.argmax(axis=1)
    acc = {
        "float model (onnxruntime)": float((float_pred == y_test).mean()),
        "QDQ int8 model (onnxruntime)": float((qdq_out.argmax(axis=1) == y_test).mean()),
        "golden DPU model": float((g_pred == y_test).mean()),
    }
    agree = {
        "QDQ, onnxruntime default session": (
            float((g_pred == qdq_out.argmax(axis=1)).mean()),
            int(np.all(golden == qdq_out, axis=1).sum()),
        ),
        "QDQ reference (graph optimizations off)": (
            float((g_pred == ref_out.argmax(axis=1)).mean()),
            int(np.all(golden == ref_out, axis=1).sum()),
        ),
    }

    con.print()
    table = Table(title=f"accuracy on {n} held-out digits", title_justify="left")
    table.add_column("model")
    table.add_column("top-1", justify="right")
    for stage, a in acc.items():
        table.add_row(stage, _pct(a))
    con.print(table)
    table = Table(title="golden DPU vs onnxruntime", title_justify="left")
    table.add_column("compared with")
    table.add_column("predictions agree", justify="right")
    table.add_column("outputs bit-identical", justify="right")
    for what, (a, exact) in agree.items():
        table.add_row(what, _pct(a), f"{exact}/{n}")
    con.print(table)
    exact_ref = agree["QDQ reference (graph optimizations off)"][1]
    if exact_ref < n:
        con.print(
            f"warning: the golden model's outputs differ from the QDQ reference on "
            f"{n - exact_ref}/{n} images; the compiled program does not mean what the model "
            "means (a compiler or simulator bug; please report it with this model)",
            style="bold yellow",
            highlight=False,
        )

    rtl = None
    if args.rtl_images:
        rtl = _demo_rtl(con, dpu_path, program, x_test[: args.rtl_images], golden, act.cycles / n)
        step(
            "5 verify",
            f"{rtl['images']} images on the RTL",
            f"{rtl['bit_identical']}/{rtl['images']} outputs bit-identical to the golden model; "
            f"{rtl['cycles_per_image']:,.0f} cycles per image measured vs "
            f"{rtl['model_cycles_per_image']:,.0f} modeled; "
            f"{rtl['sim_cycles_per_s']:,.0f} simulated cycles/s",
        )

    cycles_img = act.cycles / n
    latency_ms = cycles_img / (cfg.clock_mhz * 1e3)
    util = act.mac_cycles / act.cycles if act.cycles else 0.0
    con.print(
        f"\n[bold]{cycles_img:,.0f}[/] cycles per image = [bold]{latency_ms:.4f} ms[/] at "
        f"{cfg.clock_mhz:g} MHz ({1e3 / latency_ms:,.0f} images/s), {MODELED}; "
        f"PE utilization {_pct(util)}",
        highlight=False,
    )
    _print_subgraphs(con, program)
    con.print()
    con.print(
        _subgraph_activity_table(program, per_sub, f"per-subgraph activity, one image, {MODELED}")
    )
    con.print(
        _layer_activity_table(runner.layer_activity, f"per-layer activity, one image, {MODELED}")
    )
    con.print(
        _activity_table(act, n, cfg, _model_macs(program), f"whole run, {n} images, {MODELED}")
    )

    summary = {
        "config": cfg.name,
        "fingerprint": cfg.fingerprint,
        "images": n,
        "accuracy": acc,
        "golden_vs_onnxruntime": {
            k: {"predictions_agree": a, "bit_identical": e} for k, (a, e) in agree.items()
        },
        "cycles_per_image": cycles_img,
        "latency_ms_per_image": latency_ms,
        "latency_kind": MODELED,
        "pe_utilization": util,
        "activity": asdict(act),
        "rtl": rtl,
    }
    (work / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    con.print(
        f"numbers in {work / 'demo.json'}; demo took {time.perf_counter() - t_all:.1f} s. "
        "The time and activity tables above are modeled (golden backend); step 5 measured "
        "the RTL. PYNQ boards and measured power come next.",
        highlight=False,
    )
    return 0


def _demo_rtl(con: Console, dpu_path: Path, program, x: np.ndarray, golden, model_cycles) -> dict:
    """Run the first images on the RTL (the virtual board) and compare with the golden model."""
    from dpukit.host.runner import create_runner

    with con.status("building the RTL simulator (Verilator; minutes on first use, then cached)"):
        runner = create_runner(dpu_path, backend="rtl")
        from dpukit.sim.rtl_harness import build

        build(runner.cfg)
    outputs, act, _, n, _ = _run_batches(
        con, runner, {program.inputs[0].name: x}, 8, "5 verify (RTL)"
    )
    got = outputs[program.outputs[0].name]
    sim = runner.dpu.simulated
    return {
        "images": n,
        "bit_identical": int(np.all(got == golden[:n], axis=1).sum()),
        "cycles_per_image": act.cycles / n,
        "model_cycles_per_image": model_cycles,
        "latency_kind": MEASURED_RTL,
        "sim_cycles_per_s": sim["cycles"] / sim["wall_s"] if sim["wall_s"] else 0.0,
    }


# -- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from dpukit.compiler.hwconfig import DEFAULT_CONFIG

    p = argparse.ArgumentParser(
        prog="dpukit",
        description="Quantized ONNX -> program for the open dpukit systolic DPU -> golden model.",
    )
    p.add_argument("--version", action="version", version=f"dpukit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quantize", help="float ONNX -> QDQ ONNX (static post-training, int8)")
    q.add_argument("model", help="float ONNX model")
    q.add_argument("-o", "--output", help="output QDQ model (default: MODEL.qdq.onnx)")
    calib = q.add_mutually_exclusive_group()
    calib.add_argument(
        "--calib-digits",
        action="store_true",
        help="calibrate on the digits training images (input [N, 1, 8, 8])",
    )
    calib.add_argument(
        "--calib-random",
        type=_positive_int,
        default=32,
        metavar="N",
        help="calibrate on N random uniform [0, 1) samples (default 32)",
    )
    q.add_argument("--per-channel", action="store_true", help="per-channel weight scales")
    q.add_argument("--activation-type", choices=("int8", "uint8"), default="int8")
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser("compile", help="QDQ ONNX -> .dpu program for a hardware config")
    c.add_argument("model", help="QDQ ONNX model (from `dpukit quantize`)")
    c.add_argument("-o", "--output", help="output program (default: MODEL.dpu)")
    c.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"hardware config name or .toml path (default {DEFAULT_CONFIG}; see `dpukit configs`)",
    )
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", help="run a program; print outputs and modeled activity")
    r.add_argument("program", help=".dpu program")
    r.add_argument(
        "--backend",
        choices=BACKENDS,
        default="golden",
        help="golden: the bit-exact model (modeled cycles); rtl: the DPU's RTL in Verilator "
        "(measured cycles; builds the simulator on first use, minutes)",
    )
    src = r.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="FILE", help=".npy (one input) or .npz (by input name)")
    src.add_argument(
        "--digits", action="store_true", help="the held-out digits set; prints top-1 accuracy"
    )
    src.add_argument(
        "--random", type=_positive_int, metavar="N", help="N random inputs (default: 1)"
    )
    r.add_argument("--batch", type=_positive_int, default=32, metavar="B", help="default 32")
    r.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="show a program: config, tensors, subgraphs, layers")
    i.add_argument("program", help=".dpu program")
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("demo", help="the whole flow on the digits CNN")
    d.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    d.add_argument("--workdir", default="artifacts/demo", help="default artifacts/demo")
    d.add_argument(
        "--rtl-images",
        type=int,
        default=16,
        metavar="N",
        help="verify the first N images on the DPU's RTL in Verilator (0: skip; default 16)",
    )
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("configs", help="list the shipped hardware configs")
    g.set_defaults(func=cmd_configs)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    # Logs and pipes get 130 columns unless COLUMNS says otherwise (rich's default is 80).
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    con = Console(highlight=False, width=130 if wide else None)
    try:
        return args.func(args, con)
    except DpuKitError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(Text(f"error: {message}", style="red"))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
