"""Image preprocessing for a program's image input, as the model was trained to see images.

A program may carry its preprocessing in its header (`Program.preprocess`, set with
`compile_model(..., preprocess={...})`); the board scripts' command line overrides any key.
The keys, all optional:

    size            [height, width] of the model's input (default: the program's input shape;
                    if given, it must agree with it)
    resize_shorter  int: first resize so the shorter side has this length, keeping the aspect
                    ratio, then center-crop to `size` (ImageNet style: 256, then 224). Without
                    it the image is resized straight to `size`.
    interpolation   "area" (default: OpenCV's choice for shrinking), "linear", "nearest", "cubic"
    color           the channel order the model takes: "rgb", "bgr" or "gray" (default: gray
                    for a 1-channel input, rgb for a 3-channel one)
    scale           each 0..255 pixel is multiplied by this (default 1/255)
    mean, std       a number or one per channel (in the model's channel order): the input is
                    (pixel * scale - mean) / std (defaults 0 and 1)
    layout          "NCHW" (default) or "NHWC"
    labels          the class names, in the order of the model's output scores

Runs on the board's Python 3.10 with numpy < 2; opencv (cv2) is imported on first use (a
PYNQ image brings it; the laptop has opencv-python-headless).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dpukit.errors import ExecutionError, ProgramError

COLORS = ("rgb", "bgr", "gray")
LAYOUTS = ("NCHW", "NHWC")
INTERPOLATIONS = ("area", "linear", "nearest", "cubic")
KEYS = (
    "size",
    "resize_shorter",
    "interpolation",
    "color",
    "scale",
    "mean",
    "std",
    "layout",
    "labels",
)


@dataclass(frozen=True)
class Preprocess:
    """Resolved preprocessing of one image input: every key has its value."""

    size: tuple[int, int]  # height, width
    resize_shorter: int | None
    interpolation: str
    color: str
    scale: float
    mean: tuple[float, ...]  # one per channel
    std: tuple[float, ...]
    layout: str
    labels: tuple[str, ...] | None
    dtype: str  # the program input's dtype

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def as_dict(self) -> dict:
        """The JSON form, with the keys a program header takes (dtype is the program's)."""
        d = asdict(self)
        del d["dtype"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def check_preprocess(raw: object, where: str) -> dict:
    """A preprocess dict with known keys and values of the right types (a copy); anything else
    is a ProgramError naming `where` and the key. Checked again against the program's input
    when resolved."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProgramError(f"{where}: preprocess must be an object of the keys {', '.join(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ProgramError(
            f"{where}: unknown preprocess key(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(KEYS)}"
        )
    out = {}
    for key, value in raw.items():
        out[key] = _checked_value(key, value, f"{where}: preprocess '{key}'")
    return out


def _checked_value(key: str, value: object, where: str) -> object:
    def fail(what: str) -> ProgramError:
        return ProgramError(f"{where} must be {what}, not {value!r}")

    def number(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise fail("a finite number or a list of them")
        return float(v)

    if key == "size":
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise fail("[height, width] in pixels")
        return [int(v) for v in value]
    if key == "resize_shorter":
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise fail("a positive number of pixels")
        return value
    if key in ("interpolation", "color", "layout"):
        choices = {"interpolation": INTERPOLATIONS, "color": COLORS, "layout": LAYOUTS}[key]
        if value not in choices:
            raise fail(" or ".join(f'"{c}"' for c in choices))
        return value
    if key == "scale":
        if number(value) == 0:
            raise fail("a non-zero number")
        return float(value)
    if key in ("mean", "std"):
        values = [number(v) for v in value] if isinstance(value, (list, tuple)) else [number(value)]
        if not values:
            raise fail("a number or a list of them")
        if key == "std" and any(v == 0 for v in values):
            raise fail("non-zero")
        return values
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise fail("a list of class names")
    if len(set(value)) != len(value):
        dup = sorted({v for v in value if list(value).count(v) > 1})
        raise fail(f"a list of distinct class names ({', '.join(dup)} repeat)")
    return list(value)


def resolve(program, overrides: dict | None = None) -> tuple[Preprocess, str]:
    """The preprocessing of `program`'s one image input: its header's `preprocess`, each key
    overridden by `overrides` (the command line's), the rest defaulted from the input's shape.
    Also says where the keys came from. Anything that does not fit the input is an error."""
    where = program.label
    if len(program.inputs) != 1:
        names = ", ".join(s.name for s in program.inputs)
        raise ExecutionError(
            f"{where}: takes {len(program.inputs)} inputs ({names}); the board scripts feed "
            "images to a program with one image input"
        )
    spec = program.inputs[0]
    stored = check_preprocess(program.preprocess, where)
    given = check_preprocess(overrides, "the command line")
    merged = {**stored, **given}
    source = " and ".join(
        what for what, d in (("the program", stored), ("the command line", given)) if d
    )
    layout = merged.get("layout", "NCHW")
    shape = list(spec.shape)
    if len(shape) != 4:
        raise ExecutionError(
            f"{where}: input '{spec.name}' has shape {shape}; an image input is "
            f"[N, C, H, W] or [N, H, W, C]"
        )
    channels, height, width = (
        (shape[1], *shape[2:]) if layout == "NCHW" else (shape[3], *shape[1:3])
    )
    if channels not in (1, 3):
        raise ExecutionError(
            f"{where}: input '{spec.name}' {shape} read as {layout} has {channels} channels; "
            "images have 1 (gray) or 3 (color): give --layout if it is the other one"
        )
    color = merged.get("color", "gray" if channels == 1 else "rgb")
    if (color == "gray") != (channels == 1):
        raise ExecutionError(
            f"{where}: preprocess color '{color}' does not fit input '{spec.name}' {shape} "
            f"({layout}, {channels} channel(s))"
        )
    size = tuple(merged.get("size", (height, width)))
    if size != (height, width):
        raise ExecutionError(
            f"{where}: preprocess size {list(size)} but input '{spec.name}' {shape} takes "
            f"{height}x{width} ({layout})"
        )
    shorter = merged.get("resize_shorter")
    if shorter is not None and shorter < max(size):
        raise ExecutionError(
            f"{where}: preprocess resize_shorter {shorter} is smaller than the crop "
            f"{list(size)}; give at least {max(size)}"
        )

    def per_channel(key: str, default: float) -> tuple[float, ...]:
        values = merged.get(key, [default])
        if len(values) == 1:
            return tuple(values) * channels
        if len(values) != channels:
            raise ExecutionError(
                f"{where}: preprocess {key} has {len(values)} values; input '{spec.name}' has "
                f"{channels} channel(s): give one number or one per channel"
            )
        return tuple(values)

    dtype = np.dtype(spec.dtype)
    mean, std, scale = per_channel("mean", 0.0), per_channel("std", 1.0), merged.get("scale")
    if scale is None:
        scale = 1.0 / 255.0 if dtype.kind == "f" else 1.0
    if dtype.kind != "f" and (scale != 1.0 or any(mean) or any(s != 1.0 for s in std)):
        raise ExecutionError(
            f"{where}: input '{spec.name}' is {dtype}: it takes raw pixels, so scale must be 1, "
            "mean 0 and std 1"
        )
    labels = merged.get("labels")
    return Preprocess(
        size=(int(size[0]), int(size[1])),
        resize_shorter=shorter,
        interpolation=merged.get("interpolation", "area"),
        color=color,
        scale=float(scale),
        mean=mean,
        std=std,
        layout=layout,
        labels=tuple(labels) if labels is not None else None,
        dtype=dtype.name,
    ), source or "defaults from the program's input"


def load_image(path: Path, spec: Preprocess) -> np.ndarray | None:
    """One image file as the model's input sample (without the batch dim); None if the file
    cannot be read or decoded (it is not an image, or a damaged one)."""
    cv2 = opencv()
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    flag = cv2.IMREAD_GRAYSCALE if spec.color == "gray" else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(data, flag)  # 8 bits, BGR or gray; None if not an image
    except cv2.error:
        return None
    if image is None or image.size == 0:
        return None
    return to_input(image, spec)


def to_input(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """A decoded uint8 image (OpenCV's BGR [H, W, 3] or gray [H, W]) as one input sample."""
    cv2 = opencv()
    interpolation = {
        "area": cv2.INTER_AREA,
        "linear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "cubic": cv2.INTER_CUBIC,
    }[spec.interpolation]
    height, width = spec.size
    if spec.resize_shorter is not None:
        h, w = image.shape[:2]
        k = spec.resize_shorter / min(h, w)
        new_h, new_w = max(height, round(h * k)), max(width, round(w * k))
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        image = image[top : top + height, left : left + width]
    elif image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=interpolation)
    if image.ndim == 2:
        image = image[:, :, None]
    elif spec.color == "rgb":
        image = image[:, :, ::-1]
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        x = image.astype(dtype) * dtype.type(spec.scale)
        x = (x - np.asarray(spec.mean, dtype)) / np.asarray(spec.std, dtype)
    elif dtype == np.uint8:
        x = image
    else:  # int8 and wider: pixels 128..255 would wrap or mean nothing the model was told
        raise ExecutionError(
            f"the model takes {dtype.name} input: the board scripts feed pixels to a float or "
            "uint8 input only; quantize the model with a float input"
        )
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)


def opencv():
    """The cv2 module, or one clear error saying how to get it."""
    try:
        import cv2
    except ImportError as exc:
        raise ExecutionError(
            f"opencv (cv2) is not importable ({exc}): a PYNQ image brings it; elsewhere "
            "`pip install opencv-python-headless`"
        ) from None
    return cv2
