"""The flow's data: scikit-learn's bundled digits or a folder of labelled images, split into
train / validation / test, and top-1 accuracy of an ONNX model on a split (onnxruntime).

A folder is read as the board scripts read it (board_scripts.images.scan: `class/x.jpg` and
Kaggle-style `class.123.jpg`) and decoded and resized by their preprocessing
(board_scripts.preprocess, opencv), resolved against the model's input exactly as a board
resolves it against the program's, so the board sees the pixels the flow measured. Nothing
downloads: Kaggle's Dogs vs. Cats works once its `train/` folder is on disk.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx

from dpukit.errors import ExecutionError

DIGITS = "digits"
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)  # train, validation, test of a folder


@dataclass
class Split:
    x: np.ndarray  # float32 samples as the model takes them (NCHW images, or NF features)
    y: np.ndarray  # int64 class indices into Dataset.classes

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str  # "digits" or the folder
    train: Split
    val: Split
    test: Split
    classes: list[str]  # class k is the model's output score k
    preprocess: dict | None  # the board scripts' keys (docs/board_scripts.md); None: digits

    def fingerprint(self) -> str:
        """A hash of every sample, label, class name and preprocessing key: the data part of
        the flow's cache keys."""
        h = hashlib.sha256()
        meta = {"classes": self.classes, "preprocess": self.preprocess}
        h.update(json.dumps(meta, sort_keys=True).encode())
        for split in (self.train, self.val, self.test):
            for a in (split.x, split.y):
                h.update(f"{a.dtype}{a.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.classes)} classes, {len(self.train)} train / "
            f"{len(self.val)} validation / {len(self.test)} test samples"
        )


def load_dataset(
    spec: str | Path,
    *,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    input_shape: tuple[int | str | None, ...] | None = None,
    preprocess: dict | None = None,
    limit: int | None = None,
) -> Dataset:
    """The digits set (`spec` "digits") or a folder of images, split for the flow.

    digits: the kit's fixed stratified test split (load_digits_split, the demo's 450 held-out
    images); the rest is split into train and validation in the ratio of `fractions`.
    A folder: each class split in `fractions` (shuffled with `seed`), decoded to the model's
    input `input_shape` ([N, C, H, W], or `size` [H, W] with `preprocess`'s color, default
    rgb) by the board scripts' preprocessing (`preprocess`: their keys, e.g. mean and std);
    `limit` keeps at most that many images, the same share of each class.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three numbers > 0 adding up to 1, not {fractions}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit}")
    if str(spec) == DIGITS:
        if limit is not None:
            raise ExecutionError("a limit is for a folder of images; the digits set is small")
        return _digits(size, input_shape, fractions, seed)
    return _folder(Path(spec), size, input_shape, preprocess, fractions, seed, limit)


def _digits(size, input_shape, fractions, seed) -> Dataset:
    from dpukit.models.digits import NUM_CLASSES, load_digits_split

    sample = (1, 8, 8)
    if size is not None and tuple(size) != sample[1:]:
        raise ExecutionError(f"the digits set has 8x8 images, not {size[0]}x{size[1]}")
    if input_shape is not None:
        given = tuple(input_shape[1:])
        flat = len(given) == 1 and given[0] == 64
        if given != sample and not flat:
            raise ExecutionError(
                f"the digits set has images [1, 8, 8] (or 64 features); the model takes "
                f"{_fmt_shape(input_shape)}: give it a folder of images (--data DIR)"
            )
        sample = given
    x_train, y_train, x_test, y_test = load_digits_split()
    val_share = fractions[1] / (fractions[0] + fractions[1])
    train_idx, val_idx, _ = _stratified(y_train, (1 - val_share, val_share, 0.0), seed)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(np.ascontiguousarray(x.reshape(len(x), *sample)), y)

    return Dataset(
        DIGITS,
        split(x_train[train_idx], y_train[train_idx]),
        split(x_train[val_idx], y_train[val_idx]),
        split(x_test, y_test),
        [str(d) for d in range(NUM_CLASSES)],
        None,
    )


def _folder(root, size, input_shape, preprocess, fractions, seed, limit) -> Dataset:
    from dpukit.board_scripts.images import scan
    from dpukit.board_scripts.preprocess import check_preprocess, resolve
    from dpukit.board_scripts.run_images import check_memory, load_images
    from dpukit.compiler.program import TensorSpec

    folder = scan(root)  # an ExecutionError for a missing or empty folder
    given = dict(check_preprocess(preprocess, "the flow's preprocess"))
    if size is not None:
        given["size"] = [int(d) for d in size]
    if input_shape is not None and not all(isinstance(d, int) for d in input_shape[1:]):
        if "size" not in given or len(input_shape) != 4:
            raise ExecutionError(
                f"the model's input {_fmt_shape(input_shape)} has symbolic dims: give the "
                "images' size [height, width]"
            )
        layout = given.get("layout", "NCHW")
        channels = input_shape[1] if layout == "NCHW" else input_shape[3]
        if not isinstance(channels, int):
            raise ExecutionError(
                f"the model's input {_fmt_shape(input_shape)}: its channels are symbolic"
            )
        input_shape = None
        given.setdefault("color", "gray" if channels == 1 else "rgb")
    if input_shape is None:
        if "size" not in given:
            raise ExecutionError(
                f"{root}: give the images' size [height, width] (or the model's input shape)"
            )
        channels = 1 if given.get("color") == "gray" else 3
        nchw = given.get("layout", "NCHW") == "NCHW"
        h, w = given["size"]
        input_shape = (1, channels, h, w) if nchw else (1, h, w, channels)
    # The board resolves a program's stored keys against its input: the same call here.
    model_input = SimpleNamespace(
        label=str(root),
        inputs=[TensorSpec("input", [1, *input_shape[1:]], "float32")],
        preprocess=given,
    )
    spec, _ = resolve(model_input)
    labelled = [im for im in folder.images if im.class_name is not None]
    if not labelled:
        raise ExecutionError(
            f"{root}: no image carries a class (class/x.jpg or class.123.jpg); the flow "
            "measures accuracy, so it needs labelled images"
        )
    classes = list(spec.labels) if spec.labels else folder.class_names
    unknown = sorted({im.class_name for im in labelled} - set(classes))
    if unknown:
        raise ExecutionError(f"{root}: classes {', '.join(unknown)} are not in the labels")
    y_all = np.array([classes.index(im.class_name) for im in labelled], np.int64)
    keep = np.arange(len(labelled))
    if limit is not None and limit < len(labelled):
        keep = np.sort(_stratified_subset(y_all, limit, seed))
    folder.images = [labelled[i] for i in keep]
    check_memory(len(folder.images), spec)
    x, _, y, unreadable = load_images(folder, spec, classes)
    if unreadable:
        raise ExecutionError(
            f"{root}: {len(unreadable)} image file(s) do not decode ({', '.join(unreadable[:3])}"
            f"{', ...' if len(unreadable) > 3 else ''}); remove them or fix them"
        )
    too_few = [classes[c] for c in np.unique(y) if np.count_nonzero(y == c) < 3]
    if too_few:
        raise ExecutionError(
            f"{root}: class(es) {', '.join(too_few[:5])} have fewer than 3 images; each class "
            "needs one for train, validation and test"
        )
    x = x.astype(np.float32, copy=False)
    parts = _stratified(y, fractions, seed)
    train, val, test = (Split(np.ascontiguousarray(x[i]), y[i]) for i in parts)
    # what compile_model stores for the board: the resolved keys (None: a key left unset)
    kept = {k: v for k, v in {**spec.as_dict(), "labels": classes}.items() if v is not None}
    return Dataset(str(root), train, val, test, classes, kept)


def _stratified(
    y: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a per-class shuffled split in `fractions`, each part sorted; every class
    with at least as many samples as non-zero fractions has one in each such part."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        sizes = [int(round(f * n)) for f in fractions]
        for k in (1, 2):  # validation and test get one each when the class allows
            if fractions[k] > 0 and sizes[k] == 0 and n >= 3:
                sizes[k] = 1
        sizes[0] = n - sizes[1] - sizes[2]
        cut = np.cumsum([0, *sizes])
        for k in range(3):
            parts[k].append(idx[cut[k] : cut[k + 1]])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def _stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` indices drawn with the classes' shares (rounded; at least one per class)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = max(1, int(round(n * len(idx) / len(y))))
        chosen.append(rng.permutation(idx)[:take])
    return np.concatenate(chosen)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("N" if d is None or isinstance(d, str) else str(d) for d in shape) + "]"


# -- running an ONNX model -------------------------------------------------------------------


def onnx_scores(
    model: str | Path | onnx.ModelProto, x: np.ndarray, *, optimize: bool = False
) -> np.ndarray:
    """The first output of an ONNX model over samples `x`, fixed batch or not: onnxruntime
    on the graph as written (`optimize`: with its default graph optimizations)."""
    from dpukit.verify import reference_session

    session = reference_session(model, optimize)
    inp = session.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else max(len(x), 1)
    parts = [
        session.run(None, {inp.name: x[i : i + step].astype(np.float32, copy=False)})[0]
        for i in range(0, len(x), step)
    ]
    return np.concatenate(parts)


def accuracy_onnx(model: str | Path | onnx.ModelProto, split: Split) -> float:
    """Top-1 accuracy of a float or QDQ model on `split` under onnxruntime, graph as written
    (for a QDQ model: the reference the DPU's golden model reproduces bit-exactly)."""
    return top1(onnx_scores(model, split.x), split.y)


def top1(scores: np.ndarray, y: np.ndarray) -> float:
    """The share of samples whose highest score is their class."""
    return float((scores.reshape(len(y), -1).argmax(axis=1) == y).mean()) if len(y) else 0.0


def latency_session(model: str | Path | onnx.ModelProto):
    """The onnxruntime session host latency is measured on: default graph optimizations."""
    from dpukit.verify import reference_session

    return reference_session(model, optimize=True)


def host_latency_s(
    model: str | Path | onnx.ModelProto, x: np.ndarray, *, tick=None, session=None
) -> tuple[float, np.ndarray]:
    """Median seconds per sample of onnxruntime (default optimizations, batch 1) on this
    host over the samples `x`, measured; and every sample's time. `tick(done)` is called
    after each sample (progress). `session`: the model's optimized session, made once by a
    caller that measures again and again (`latency_session`)."""
    if session is None:
        session = latency_session(model)
    name = session.get_inputs()[0].name
    session.run(None, {name: x[:1].astype(np.float32)})  # the first run allocates
    times = np.empty(len(x))
    for i in range(len(x)):
        sample = x[i : i + 1].astype(np.float32)
        start = time.perf_counter()
        session.run(None, {name: sample})
        times[i] = time.perf_counter() - start
        if tick is not None:
            tick(i + 1)
    return float(np.median(times)), times
