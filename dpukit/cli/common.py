"""What several commands share: the usage error, option types, writing output files,
onnxruntime sessions, and the run's inputs (a file, the digits set or random data) fed to a
Runner in batches."""

from __future__ import annotations

import argparse
import math
import re
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from rich.console import Console

from dpukit.cli.render import fmt_shape, progress
from dpukit.errors import DpuKitError
from dpukit.options import positive_int  # noqa: F401 (the commands')
from dpukit.outfiles import write_file

DIGITS_SHAPE = [1, 8, 8]  # one digits image, without the batch dim


class UsageError(DpuKitError):
    """A command-line option does not fit the model, program or file it is applied to."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config` on a command that takes a program: the program carries its config, so this
    only checks that the program was compiled for the given one."""
    parser.add_argument(
        "--config",
        metavar="NAME|FILE.toml",
        help="check that the program was compiled for this hardware config "
        "(default: the config the program carries)",
    )


def write_output(path: str | Path, data: str | bytes) -> Path:
    """Write a command's output file (text as UTF-8), creating its folder; a failure (a
    folder in the way, a full disk, no permission) is one UsageError naming the path."""
    path = Path(path)
    why = write_file(path, data)
    if why:
        raise UsageError(f"{path}: cannot write the output ({why}); choose another path")
    return path


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
    from dpukit.host.runner import random_inputs

    n = args.random or 1
    return random_inputs(specs, n), None, f"{n} random uniform [0, 1) input(s)"


def load_input_file(path: Path, specs) -> dict[str, np.ndarray]:
    """A run's inputs from an .npy file (a program with one input) or an .npz file (one
    array per input name), checked as `Runner.run` checks them. Each array's header is
    checked against the program's inputs before its data is read, so a header claiming
    10**12 elements is refused without allocating them."""
    from dpukit.errors import ExecutionError
    from dpukit.host.runner import check_inputs

    if not path.exists():
        raise UsageError(f"{path}: no such input file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file; give an .npy or .npz file")
    try:
        with path.open("rb") as f:
            if f.read(2) == b"PK":  # a zip archive: .npz
                f.seek(0)
                arrays = _read_npz(path, f, specs)
            elif len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise UsageError(
                    f"{path}: the program takes {len(specs)} inputs ({names}); "
                    "pass an .npz with one array per input name"
                )
            else:
                f.seek(0)
                arrays = {specs[0].name: _read_npy(f, path.stat().st_size, str(path), specs[0])}
        feeds, _ = check_inputs(specs, arrays)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UsageError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    except ExecutionError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return feeds


def _read_npz(path: Path, f: BinaryIO, specs) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(f) as z:
        members = {name.removesuffix(".npy"): z.getinfo(name) for name in z.namelist()}
        unknown = sorted(members.keys() - {s.name for s in specs})
        if unknown:
            raise UsageError(
                f"{path}: array(s) {', '.join(unknown)} are not inputs of the program, which "
                f"takes {', '.join(s.name for s in specs)}"
            )
        arrays = {}
        for s in specs:
            if s.name not in members:
                raise UsageError(f"{path}: no array named '{s.name}' (has {', '.join(members)})")
            with z.open(members[s.name]) as member:
                where = f"{path}: array '{s.name}'"
                arrays[s.name] = _read_npy(member, members[s.name].file_size, where, s)
        return arrays


def _read_npy(f: BinaryIO, size: int, where: str, spec) -> np.ndarray:
    """One array in .npy format from `f` (of `size` bytes), for input `spec`: its header is
    checked first (no Python objects, the input's shape, no more data than the file holds);
    one sample without the batch dimension becomes a batch of one."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {version}")
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise UsageError(f"{where}: holds Python objects ({dtype}); save a numeric array")
    sample = tuple(spec.shape[1:])
    if shape[1:] != sample and shape != sample:
        raise UsageError(
            f"{where}: input '{spec.name}' has shape {fmt_shape(shape)}; the program expects "
            f"[N, {', '.join(str(d) for d in sample)}]"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    left = size - f.tell()
    if nbytes > left:
        raise UsageError(
            f"{where}: its header claims {fmt_shape(shape)} {dtype} ({nbytes} bytes) but "
            f"{left} bytes follow: the file is truncated or damaged"
        )
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise EOFError(f"{len(data)} of {nbytes} data bytes")
    a = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return a[None] if shape == sample else a


def build_simulator(con: Console, backend: str, cfg) -> None:
    """Build the RTL simulator now if the backend needs it, under a status line, so a user at
    a terminal sees why the first rtl run waits (minutes; cached after). Off a terminal the
    harness prints one line itself."""
    if backend != "rtl":
        return
    from dpukit.sim.virtual_board import build

    with con.status(f"building the RTL simulator for {cfg.name} (Verilator; minutes on first use)"):
        build(cfg)


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    """`--input-shape [NAME=]DIMS`, repeatable: fixed sizes for inputs with symbolic dims."""
    parser.add_argument(
        "--input-shape",
        action="append",
        type=_input_shape,
        metavar="[NAME=]DIMS",
        help="sizes for an input with symbolic dims, e.g. input=1x3x224x224 (or 1,3,224,224; "
        "NAME may be left out when the model has one input); repeat for several inputs",
    )


MAX_DIM = 2**31 - 1  # what an ONNX dim may hold (and far more than any DPU addresses)


def _input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    name, named, dims = text.rpartition("=")
    parts = re.split(r"[x,]", dims)
    if not all(re.fullmatch(r"[0-9]+", d) for d in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not [NAME=]DIMS such as input=1x3x224x224")
    shape = tuple(int(d) for d in parts)
    if max(shape) > MAX_DIM:
        raise argparse.ArgumentTypeError(f"{text!r}: a dim above {MAX_DIM:,} fits no model")
    return (name if named else None), shape


def model_input_shapes(
    given: list[tuple[str | None, tuple[int, ...]]] | None, model: str
) -> dict[str, tuple[int, ...]]:
    """The --input-shape options of a command that reads MODEL (read only if a shape has
    no name, to learn the name of its one input)."""
    names = []
    if any(name is None for name, _ in given or []):
        from dpukit.compiler.frontend import graph_inputs, read_onnx

        names = [i.name for i in graph_inputs(read_onnx(model)[0])]
    return input_shapes(given, names, model)


def input_shapes(
    given: list[tuple[str | None, tuple[int, ...]]] | None, inputs: list[str], model: str
) -> dict[str, tuple[int, ...]]:
    """The --input-shape options by input name; a shape without a name is the only input's."""
    shapes = {}
    for name, dims in given or []:
        if name is None:
            if len(inputs) != 1:
                raise UsageError(
                    f"{model}: --input-shape without a name, but the model has inputs "
                    f"{', '.join(inputs) or '(none)'}: give NAME=DIMS"
                )
            name = inputs[0]
        if name in shapes:
            raise UsageError(f"{model}: --input-shape gives input '{name}' twice")
        shapes[name] = dims
    return shapes


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Where a command's run inputs come from (see `inputs_for`)."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="FILE", help=".npy (one input) or .npz (by input name)")
    src.add_argument(
        "--digits", action="store_true", help="the held-out digits set (top-1 accuracy)"
    )
    src.add_argument(
        "--random", type=positive_int, metavar="N", help="N random inputs (default: 1)"
    )
