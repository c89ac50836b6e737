"""What several commands share: the usage error, option types, onnxruntime sessions, and
the run's inputs (a file, the digits set or random data) fed to a Runner in batches."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from dpukit.cli.render import fmt_shape, progress
from dpukit.errors import DpuKitError

DIGITS_SHAPE = [1, 8, 8]  # one digits image, without the batch dim


class UsageError(DpuKitError):
    """A command-line option does not fit the model, program or file it is applied to."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config` on a command that takes a program: the program carries its config, so this
    only checks that the program was compiled for the given one."""
    parser.add_argument(
        "--config",
        metavar="NAME|FILE.toml",
        help="check that the program was compiled for this hardware config "
        "(default: the config the program carries)",
    )


def ort_session(path: str | Path, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:  # the QDQ model's reference meaning: DQ -> float op -> Q, node by node
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_outputs(path: str | Path, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    """The first output of an ONNX model over `x` (stacked along axis 0), fixed batch or not."""
    session = ort_session(path, optimize)
    inp = session.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else len(x)
    parts = [
        session.run(None, {inp.name: x[i : i + step].astype(np.float32)})[0]
        for i in range(0, len(x), step)
    ]
    return np.concatenate(parts)


def run_batches(con: Console, runner, inputs: dict[str, np.ndarray], batch: int, label: str):
    """Run `inputs` (stacked along axis 0) in batches; returns outputs, total and per-subgraph
    activity (of the first image), number of images and wall time."""
    from dpukit.compiler.golden import Activity

    n = len(next(iter(inputs.values())))
    total = Activity()
    per_subgraph: list = []
    outs: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    with progress(con) as bar:
        task = bar.add_task(label, total=n)
        for i in range(0, n, batch):
            res = runner.run({k: v[i : i + batch] for k, v in inputs.items()})
            total.add(res.activity)
            if not per_subgraph:
                per_subgraph = res.per_subgraph
            for k, v in res.outputs.items():
                outs.setdefault(k, []).append(v)
            bar.advance(task, min(batch, n - i))
    wall = time.perf_counter() - start
    return {k: np.concatenate(v) for k, v in outs.items()}, total, per_subgraph, n, wall


def inputs_for(args, program) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """The run's inputs (stacked along axis 0), digits labels if any, and a description."""
    specs = program.inputs
    if args.digits:
        if len(specs) != 1 or list(specs[0].shape[1:]) != DIGITS_SHAPE:
            got = ", ".join(f"{s.name} {fmt_shape(s.shape)}" for s in specs)
            raise UsageError(
                f"--digits needs a model with one input of shape [N, 1, 8, 8]; this program "
                f"takes {got}; use --input FILE.npy or --random N"
            )
        from dpukit.models.digits import load_digits_split

        _, _, x_test, y_test = load_digits_split()
        return {specs[0].name: x_test}, y_test, f"{len(x_test)} held-out digits images"
    if args.input:
        return load_input_file(Path(args.input), specs), None, str(args.input)
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


def load_input_file(path: Path, specs) -> dict[str, np.ndarray]:
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
                f"{path}: input '{s.name}' has shape {fmt_shape(a.shape)}; the program expects "
                f"[N, {', '.join(str(d) for d in s.shape[1:])}]"
            )
        feeds[s.name] = a
    return feeds
