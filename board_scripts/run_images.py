"""Run a program over a folder of images and report accuracy, latency, throughput and, with
sensors, power and energy per inference. What a user runs on the board, and equally on a
laptop with `--backend golden` or `rtl`:

    python3 -m dpukit.board_scripts.run_images digits.dpu images/ --backend pynq \\
        --overlay dpukit_pynq_z2.bit --out report.json [--power hwmon:ina226/VSYS]

The images are decoded and preprocessed first (see preprocess.py for the preprocessing a
program carries, and the options that override it), then run in batches of --batch, each
timed on this machine's clock, so the inference phase the power recorder measures holds
inference alone. Files that are not images, or that cannot be decoded, are skipped and
counted. Runs on the board's Python 3.10 with numpy < 2 and opencv; no onnx, rich or sklearn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dpukit.board_scripts.images import ImageFolder, class_order, scan
from dpukit.board_scripts.preprocess import (
    COLORS,
    INTERPOLATIONS,
    LAYOUTS,
    Preprocess,
    load_image,
    resolve,
)
from dpukit.errors import DpuKitError, ExecutionError
from dpukit.host.backends import CYCLES_KIND
from dpukit.options import add_power_options, positive_int
from dpukit.outfiles import why_unwritable, write_file

# What a latency measures, by backend; what its cycle counts are: CYCLES_KIND.
WALL_TIME = {
    "golden": "measured wall time of this host running the golden model, not DPU latency",
    "rtl": "measured wall time of this host simulating the RTL, not DPU latency",
    "pynq": "measured on the board: driver, DPU and CPU subgraphs",
}

MEMORY_SHARE = 0.5  # preloaded images may take at most this share of the available memory


def build_parser() -> argparse.ArgumentParser:
    from dpukit.host.backends import BACKENDS

    p = argparse.ArgumentParser(
        prog="python3 -m dpukit.board_scripts.run_images",
        description="Run a .dpu program over a folder of images (class/x.jpg or Kaggle-style "
        "class.123.jpg): accuracy, latency per image, throughput, and power with --power.",
    )
    p.add_argument("program", help=".dpu program")
    p.add_argument("images", nargs="?", help="folder of images (class/x.jpg or class.1.jpg)")
    p.add_argument(
        "--random",
        type=positive_int,
        metavar="N",
        help="N random inputs instead of images (latency and power only)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="golden", help="default golden")
    p.add_argument("--overlay", metavar="FILE.bit", help="the overlay (pynq; .hwh beside it)")
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        metavar="B",
        help="images per Runner call; latency per image = call time / B (default 1)",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N images")
    p.add_argument("--out", metavar="FILE.json", help="write the report as JSON")
    g = p.add_argument_group(
        "preprocessing (each overrides the program's stored key; see board_scripts/preprocess.py)"
    )
    g.add_argument(
        "--labels",
        metavar="A,B,..|FILE",
        help="class names in the order of the model's outputs: comma-separated, or "
        "a file with one per line (default: the program's, else the sorted class "
        "names)",
    )
    g.add_argument("--size", type=_size, metavar="HxW", help="the model's input height x width")
    g.add_argument(
        "--resize-shorter",
        type=positive_int,
        metavar="N",
        help="resize the shorter side to N, then center-crop to the size",
    )
    g.add_argument("--interpolation", choices=INTERPOLATIONS)
    g.add_argument("--color", choices=COLORS, help="the channel order the model takes")
    g.add_argument("--scale", type=_number, metavar="S", help="pixel (0..255) * S, e.g. 1/255")
    g.add_argument("--mean", type=_numbers, metavar="M[,M,M]", help="subtracted after scaling")
    g.add_argument("--std", type=_numbers, metavar="S[,S,S]", help="divided by after the mean")
    g.add_argument("--layout", choices=LAYOUTS)
    add_power_options(p, plot=False)  # no matplotlib on the board: CSV only
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.images is None) == (args.random is None):
        parser.error("give a folder of images or --random N (one of them)")
    if args.power_trace and not args.power:
        parser.error("--power-trace needs --power SENSOR[,SENSOR]")
    try:
        run(args, print)
    except DpuKitError as exc:
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict:
    """The report (JSON-ready) of a run; `say` prints progress and the figures."""
    from dpukit.compiler.program import Program
    from dpukit.host.runner import create_runner

    for option, path in (("--out", args.out), ("--power-trace", args.power_trace)):
        why = path and why_unwritable(path)  # refused now, not after the run
        if why:
            raise ExecutionError(f"{option} {path}: cannot write it there ({why})")
    program = Program.load(args.program)
    spec, spec_source = resolve(program, _preprocess_options(args))
    scores = math.prod(program.outputs[0].shape[1:])
    folder, classes = None, []
    if args.images:
        folder = scan(args.images)
        if args.limit:
            folder.images = folder.images[: args.limit]
        labels = _labels_option(args.labels) if args.labels else spec.labels
        classes = class_order(folder, list(labels) if labels else None, scores)
        check_memory(len(folder.images), spec)
        if labels is None and len(classes) < scores:
            say(
                f"warning: {len(classes)} class(es) in {folder.root} but the program scores "
                f"{scores}: classes are numbered in sorted order of their names; give --labels "
                "if that is not the model's order"
            )
    with create_runner(program, backend=args.backend, overlay=args.overlay) as runner:
        cfg = runner.cfg
        start = time.perf_counter()
        if folder is not None:
            x, names, truth, unreadable = load_images(folder, spec, classes)
        else:
            from dpukit.host.runner import random_inputs

            # resolve() has checked that the preprocessing's shape is the program input's
            x = random_inputs(program.inputs, args.random)[program.inputs[0].name]
            names, unreadable = [f"random {i}" for i in range(len(x))], []
            truth = np.full(len(x), -1)  # no classes
        preprocess_s = time.perf_counter() - start
        what = f"{len(x)} images in {folder.root}" if folder else f"{len(x)} random inputs"
        say(
            f"running {args.program} on the {args.backend} backend ({cfg.name}): {what}, "
            f"batch {args.batch}"
        )
        if folder is not None and (folder.not_images or unreadable):
            say(_skipped_line(folder, unreadable))
        name, scored = program.inputs[0].name, program.outputs[0].name
        with _warmed_up(args, say, lambda: runner.run({name: x[: args.batch]})) as recorder:
            predicted, batch_s, cycles = _run_batches(runner, name, scored, x, args.batch)
    n = len(x)
    report = {
        "program": str(args.program),
        "backend": args.backend,
        "config": cfg.name,
        "fingerprint": cfg.fingerprint,
        "clock_mhz": cfg.clock_mhz,
        "images_dir": str(folder.root) if folder else None,
        "images": n,
        "skipped": _skipped(folder, unreadable),
        "preprocess": spec.as_dict(),
        "preprocess_from": spec_source,
        "classes": classes,  # in the order of the model's scores: "class" and "predicted"
        **_accuracy(predicted, truth, say),
        **_timing(batch_s, args.batch, n, preprocess_s, args.backend, say),
        "dpu_cycles_per_image": cycles / n,
        "dpu_ms_per_image": cycles / n / (cfg.clock_mhz * 1e3),
        "dpu_time_kind": CYCLES_KIND[args.backend],
        "energy_measured": _report_power(args, recorder, n, say),
        "per_image": [
            {"file": f, "class": None if t < 0 else int(t), "predicted": int(p)}
            for f, t, p in zip(names, truth, predicted, strict=True)
        ],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    say(
        f"DPU time per image, {CYCLES_KIND[args.backend]}: {report['dpu_ms_per_image']:.4g} ms "
        f"({cycles / n:,.0f} cycles at {cfg.clock_mhz:g} MHz)"
    )
    if args.out:
        _write(Path(args.out), json.dumps(report, indent=2, allow_nan=False) + "\n")
        say(f"wrote {args.out}")
    return report


def load_images(folder: ImageFolder, spec: Preprocess, classes: list[str]):
    """Every image decoded and preprocessed into one array; the names, class indices (-1:
    none) of those that could be read, and the names of those that could not."""
    index = {name: k for k, name in enumerate(classes)}
    x = None
    names, truth, unreadable = [], [], []
    for image in folder.images:
        sample = load_image(image.path, spec)
        if sample is None:
            unreadable.append(image.name)
            continue
        if x is None:
            x = np.empty((len(folder.images), *sample.shape), sample.dtype)
        x[len(names)] = sample
        names.append(image.name)
        truth.append(-1 if image.class_name is None else index[image.class_name])
    if not names:
        raise ExecutionError(
            f"{folder.root}: none of its {len(folder.images)} image file(s) could be read "
            f"({', '.join(unreadable[:3])}{', ...' if len(unreadable) > 3 else ''}); "
            f"{len(folder.not_images)} other file(s) are not images"
        )
    return x[: len(names)], names, np.asarray(truth, np.int64), unreadable


def _run_batches(runner, name: str, scored: str, x: np.ndarray, batch: int):
    """Top-1 class of each sample (by output `scored`), each batch's run time (s) and the
    DPU's cycles."""
    predicted, times, cycles = [], [], 0
    for i in range(0, len(x), batch):
        start = time.perf_counter()
        result = runner.run({name: x[i : i + batch]})
        times.append(time.perf_counter() - start)
        cycles += result.activity.cycles
        scores = result.outputs[scored]
        predicted.append(scores.reshape(len(scores), -1).argmax(axis=1))
    return np.concatenate(predicted), np.asarray(times), cycles


def _accuracy(predicted: np.ndarray, truth: np.ndarray, say) -> dict:
    """Top-1 accuracy over the samples with a class (truth >= 0)."""
    labelled = truth >= 0
    n = int(labelled.sum())
    if n == 0:
        return {"labelled": 0, "correct": None, "accuracy": None}
    correct = int((predicted[labelled] == truth[labelled]).sum())
    unlabelled = len(predicted) - n
    say(
        f"top-1 accuracy: {100 * correct / n:.2f} % ({correct}/{n})"
        + (f"; {unlabelled} image(s) without a class not counted" if unlabelled else "")
    )
    return {"labelled": n, "correct": correct, "accuracy": correct / n}


def _timing(batch_s: np.ndarray, batch: int, n: int, preprocess_s: float, backend: str,
            say) -> dict:  # fmt: skip
    sizes = np.minimum(batch, n - batch * np.arange(len(batch_s)))
    per_image_ms = 1e3 * batch_s / sizes
    total = float(batch_s.sum())
    latency = {
        "mean": 1e3 * total / n,
        "median": float(np.median(per_image_ms)),
        "p95": float(np.percentile(per_image_ms, 95)),
        "min": float(per_image_ms.min()),
        "max": float(per_image_ms.max()),
    }
    say(
        f"latency per image: {latency['mean']:.4g} ms mean, {latency['median']:.4g} ms median, "
        f"{latency['p95']:.4g} ms p95 ({WALL_TIME[backend]}); throughput "
        f"{n / total:.4g} images/s; preprocessing {1e3 * preprocess_s / n:.3g} ms per image"
    )
    return {
        "batch": batch,
        "latency_ms_per_image": latency,
        "latency_kind": WALL_TIME[backend],
        "throughput_images_per_s": n / total,
        "inference_s": total,
        "preprocess_ms_per_image": 1e3 * preprocess_s / n,
    }


def _skipped(folder: ImageFolder | None, unreadable: list[str]) -> dict:
    not_images = folder.not_images if folder else []
    return {
        "count": len(not_images) + len(unreadable),
        "not_images": not_images,
        "unreadable": unreadable,
    }


def _skipped_line(folder: ImageFolder, unreadable: list[str]) -> str:
    parts = []
    for what, files in (("unreadable", unreadable), ("not images", folder.not_images)):
        if files:
            more = ", ..." if len(files) > 3 else ""
            parts.append(f"{len(files)} {what} ({', '.join(files[:3])}{more})")
    return f"skipped {len(unreadable) + len(folder.not_images)} file(s): {'; '.join(parts)}"


# ---- power ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _warmed_up(args, say, warm_up: Callable[[], object]) -> Iterator:
    """Run `warm_up()` (one batch, untimed), then the block; with --power, inside the
    recorder's phases. The recorder or None."""
    if not args.power:
        warm_up()
        yield None
        return
    from dpukit.host.power import recording_sensors

    def idle(seconds: float) -> None:
        say(f"recording {seconds:g} s of idle power (the baseline)")
        time.sleep(seconds)

    with recording_sensors(args.power, args.sysfs, args.idle_s, warm_up, idle) as rec:
        yield rec


def _report_power(args, rec, n: int, say) -> dict | None:
    if rec is None:
        return None
    from dpukit.host.power import csv_text

    s = rec.trace.summary(inferences=n)
    per = s["per_inference"]
    of = "" if args.backend == "pynq" else f", of this host running the {args.backend} model"
    if per is None or not per["complete"]:
        say(
            f"energy per inference, {s['label']}{of}: none: "
            f"{per['note'] if per else 'no inference phase'}"
        )
    else:
        dynamic = (
            f"{per['dynamic_energy_j']:.4g} J above idle ({per['idle_power_w']:.4g} W)"
            if "dynamic_energy_j" in per
            else per["note"]
        )
        say(
            f"energy per inference, {s['label']}{of}: {per['energy_j']:.4g} J "
            f"(± {per['uncertainty_j']:.2g}) total, {dynamic}; {per['avg_power_w']:.4g} W "
            f"average over {per['duration_s']:.3g} s"
        )
    for warning in s["warnings"]:
        say(f"warning: {warning}")
    if args.power_trace:
        _write(Path(args.power_trace), csv_text(rec.trace))
        say(f"wrote {args.power_trace}")
    return s


# ---- options and files ----------------------------------------------------------------------


def _preprocess_options(args) -> dict:
    given = {
        "size": list(args.size) if args.size else None,
        "resize_shorter": args.resize_shorter,
        "interpolation": args.interpolation,
        "color": args.color,
        "scale": args.scale,
        "mean": args.mean,
        "std": args.std,
        "layout": args.layout,
    }
    return {k: v for k, v in given.items() if v is not None}


def _labels_option(text: str) -> list[str]:
    """--labels: a file with one name per line (blank lines ignored), or A,B,C."""
    path = Path(text)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ExecutionError(f"--labels {path}: cannot read it ({exc})") from None
        names = [n for n in names if n]
    else:
        names = [n.strip() for n in text.split(",")]
    if not names or not all(names) or len(set(names)) != len(names):
        raise ExecutionError(
            f"--labels {text}: give distinct, non-empty class names (A,B,C or a file with one "
            "per line)"
        )
    return names


def check_memory(images: int, spec: Preprocess) -> None:
    """Refuse to preload more images than fit in a share of the available memory."""
    sample = spec.size[0] * spec.size[1] * spec.channels * np.dtype(spec.dtype).itemsize
    from dpukit.host.pynq_board import meminfo

    available = meminfo().get("MemAvailable")
    if available is not None and images * sample > MEMORY_SHARE * available:
        fit = int(MEMORY_SHARE * available // sample)
        raise ExecutionError(
            f"{images} preprocessed images take {images * sample / 2**20:.0f} MiB, more than "
            f"{MEMORY_SHARE:.0%} of the {available / 2**20:.0f} MiB this machine has free: "
            f"run at most --limit {fit} at a time"
        )


def _write(path: Path, text: str) -> None:
    why = write_file(path, text)
    if why:
        raise ExecutionError(f"{path}: cannot write it ({why})")


def _number(text: str) -> float:
    """A number, or a fraction such as 1/255."""
    num, slash, den = text.partition("/")
    try:
        value = float(num) / (float(den) if slash else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number (or a fraction 1/255)"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return value


def _numbers(text: str) -> list[float]:
    return [_number(t) for t in text.split(",")]


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW such as 224x224")
    return int(parts[0]), int(parts[1])


if __name__ == "__main__":
    sys.exit(main())
