"""Folders of digits images for the board scripts' tests, and the digits program they run:
the held-out digits (values in [0, 1]) as 8-bit pictures (pixel = round(255 * value)),
written in either folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpukit.compiler.compile import compile_model
from dpukit.models.digits import load_digits_split

PER_CLASS = 8  # images of each digit: 80 in all, a few seconds on the golden model
DIGITS_PREPROCESS = {
    "size": [8, 8],
    "color": "gray",
    "scale": 1 / 255,
    "labels": [str(d) for d in range(10)],
}


def digits_pictures(per_class: int = PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` held-out images of each digit as uint8 [N, 8, 8], and labels."""
    _, _, x_test, y_test = load_digits_split()
    picked = np.concatenate([np.flatnonzero(y_test == d)[:per_class] for d in range(10)])
    pixels = np.round(x_test[picked, 0] * 255).astype(np.uint8)
    return pixels, y_test[picked]


def write_folder(
    root: Path,
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    style: str = "folders",
    ext: str = ".png",
    upscale: int = 1,
    color: bool = False,
) -> list[str]:
    """Write each picture as `root/<digit>/<k>.ext` (style "folders") or `root/<digit>.<k>.ext`
    (style "kaggle"), optionally enlarged (each pixel a block) and as 3 equal channels;
    returns the names below `root` in the order of `pixels`."""
    import cv2

    names = []
    for k, (picture, digit) in enumerate(zip(pixels, labels, strict=True)):
        name = f"{digit}/{k:04d}{ext}" if style == "folders" else f"{digit}.{k:04d}{ext}"
        image = np.kron(picture, np.ones((upscale, upscale), np.uint8))
        if color:
            image = np.repeat(image[:, :, None], 3, axis=2)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
        assert cv2.imwrite(str(path), image, params)
        names.append(name)
    return names


def compile_digits(qdq: Path, out: Path, preprocess: dict | None = DIGITS_PREPROCESS) -> Path:
    compile_model(qdq, "pynq-z2", preprocess=preprocess).save(out)
    return out
