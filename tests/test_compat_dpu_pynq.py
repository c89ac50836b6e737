"""The DPU-PYNQ example (docs/examples/dpu_pynq_classify.py), a DPU-PYNQ notebook ported by
its import alone, classifies a folder of digits pictures as `dpukit run` does: on the golden
model (DPUKIT_BACKEND=golden) and on the virtual board (the default off a PYNQ board), each
image's top-1 equals the argmax of `dpukit run`'s outputs for the same images prepared by
the board scripts' preprocessing, whose float32 arithmetic the example's preprocessing
repeats bit for bit. Only its import lines name dpukit."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from board_images import compile_digits, digits_pictures, write_folder

from dpukit.board_scripts.preprocess import (
    INTERPOLATIONS,
    Preprocess,
    load_image,
    resolve,
    to_input,
)
from dpukit.cli import main as dpukit_main
from dpukit.compiler.program import Program

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "dpu_pynq_classify.py"
PER_CLASS = 4  # 40 pictures: a second or two on the virtual board
# Each 8x8 picture framed by black pixels (wide, tall or square) and enlarged 2x: 20x28,
# 28x20 or 20x20 files. Resizing the shorter side to 10 and cropping 8x8 from the center
# cuts away the frame, so the model sees its digits, through a real resize and crop.
FRAMES = (((1, 1), (3, 3)), ((3, 3), (1, 1)), ((1, 1), (1, 1)))
# the preprocessing of each case, as the example's options and the board scripts' keys
CASES = {
    "golden": {"resize_shorter": 10, "interpolation": "area", "scale": 1 / 255},
    "rtl": {
        "resize_shorter": 10,
        "interpolation": "linear",
        "scale": 1.0,
        "mean": [0.0],
        "std": [255.0],
    },
}


@pytest.fixture(scope="module")
def digits_dpu(digits_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_digits(digits_qdq, tmp_path_factory.mktemp("dpu_pynq") / "digits.dpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """Class folders of framed, enlarged digits pictures, and each file's label."""
    pixels, labels = digits_pictures(PER_CLASS)
    framed = [np.pad(p, FRAMES[k % len(FRAMES)]) for k, p in enumerate(pixels)]
    root = tmp_path_factory.mktemp("dpu_pynq_images") / "images"
    names = write_folder(root, framed, labels, upscale=2)
    return root, {name: int(label) for name, label in zip(names, labels, strict=True)}


def _example_options(settings: dict) -> list[str]:
    options = []
    for key, value in settings.items():
        values = value if isinstance(value, list) else [value]
        options += [f"--{key.replace('_', '-')}", *map(str, values)]
    return options


def _run_example(
    script: Path, program: Path, images: Path, options: list[str], cwd: Path, **env: str
) -> tuple[dict[str, int], str]:
    """The example's top-1 per image file, in the order it printed them, and its stderr.
    DPUKIT_BACKEND is the test's to set: unset, the example runs on the virtual board."""
    environ = {k: v for k, v in os.environ.items() if k != "DPUKIT_BACKEND"} | env
    proc = subprocess.run(
        [sys.executable, str(script), str(program), str(images), *options],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    *lines, last = proc.stdout.splitlines()
    assert last == f"{len(lines)} images classified", proc.stdout
    top1 = {}
    for line in lines:
        name, index = line.rsplit(" ", 1)
        top1[name] = int(index)
    assert list(top1) == sorted(top1) and len(top1) == len(lines)
    return top1, proc.stderr


def _dpukit_run(
    program: Path, images: Path, names: list[str], settings: dict, backend: str, work: Path
) -> np.ndarray:
    """Argmax of `dpukit run`'s outputs for the images, prepared by the board scripts'
    preprocessing with the same settings (NCHW, the program's input layout)."""
    spec, _ = resolve(Program.load(program), settings)
    x = np.stack([load_image(images / name, spec) for name in names])
    assert x.shape == (len(names), 1, 8, 8) and x.dtype == np.float32
    np.save(work / "x.npy", x)
    out = work / "out.npz"
    argv = ["run", str(program), "--backend", backend, "--input", str(work / "x.npy")]
    assert dpukit_main([*argv, "--output", str(out)]) == 0
    with np.load(out) as saved:
        logits = saved["logits"]
    assert logits.shape == (len(names), 10)
    return logits.argmax(axis=1)


@pytest.mark.parametrize("backend", list(CASES))
def test_example_matches_dpukit_run(
    backend: str,
    digits_dpu: Path,
    folder: tuple[Path, dict[str, int]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    images, labels = folder
    settings = CASES[backend]
    env = {"DPUKIT_BACKEND": "golden"} if backend == "golden" else {}
    top1, stderr = _run_example(
        EXAMPLE, digits_dpu, images, _example_options(settings), tmp_path, **env
    )
    # off a PYNQ board and without DPUKIT_BACKEND, DpuOverlay says it runs the virtual board
    assert ("the DPU runs on the virtual board" in stderr) == (backend == "rtl"), stderr
    names = sorted(labels)
    assert list(top1) == names
    expected = _dpukit_run(digits_dpu, images, names, settings, backend, tmp_path)
    capsys.readouterr()  # dpukit run's tables
    got = np.array([top1[name] for name in names])
    differ = [name for name, g, e in zip(names, got, expected, strict=True) if g != e]
    assert not differ, differ
    accuracy = np.mean([top1[name] == labels[name] for name in names])
    assert accuracy >= 0.9, accuracy  # the digits CNN, not noise


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dpu_pynq_classify", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("color", ["gray", "bgr", "rgb"])
def test_example_preprocessing_is_the_board_scripts_bit_for_bit(color: str) -> None:
    """The example's resize, crop and normalization give the float32 values to_input gives
    for the same settings, bit for bit, over image sizes, interpolations and crops."""
    example = _load_example()
    rng = np.random.default_rng(7)
    channels = 1 if color == "gray" else 3
    if channels == 1:
        numbers = {"scale": 1 / 255, "mean": (0.5,), "std": (0.25,)}
    else:
        numbers = {"scale": 1 / 255, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    checked = 0
    for height, width in [(8, 8), (20, 28), (31, 17), (9, 64), (101, 75)]:
        image = rng.integers(0, 256, (height, width, channels)[: 2 if channels == 1 else 3])
        image = image.astype(np.uint8)
        for crop in [(8, 8), (8, 6)]:
            for resize_shorter in (None, 8, 13):
                for interpolation in INTERPOLATIONS:
                    spec = Preprocess(
                        size=crop,
                        resize_shorter=resize_shorter,
                        interpolation=interpolation,
                        color=color,
                        labels=None,
                        layout="NHWC",
                        dtype="float32",
                        **numbers,
                    )
                    options = [
                        "model.dpu",
                        "images",
                        "--interpolation",
                        interpolation,
                        "--scale",
                        repr(numbers["scale"]),
                        "--mean",
                        *map(repr, numbers["mean"]),
                        "--std",
                        *map(repr, numbers["std"]),
                    ]
                    options += ["--resize-shorter", str(resize_shorter)] if resize_shorter else []
                    options += ["--bgr"] if color == "bgr" else []
                    args = example.parse_args(options)
                    got = example.preprocess_fn(image, *crop, args).reshape(*crop, channels)
                    expected = to_input(image, spec)
                    assert got.dtype == expected.dtype == np.float32
                    assert got.shape == expected.shape
                    assert got.tobytes() == expected.tobytes(), (
                        (height, width),
                        crop,
                        resize_shorter,
                        interpolation,
                    )
                    checked += 1
    assert checked == 5 * 2 * 3 * len(INTERPOLATIONS)


def test_only_import_lines_name_dpukit(
    digits_dpu: Path, folder: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    """Every line of the example that mentions dpukit is an import; with that import
    replaced by DPU-PYNQ's, the script names dpukit nowhere and runs as it did (here with a
    stand-in pynq_dpu module over dpukit's DpuOverlay, on the golden model)."""
    text = EXAMPLE.read_text()
    imports = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports |= set(range(node.lineno, node.end_lineno + 1))
    mentions = [k for k, line in enumerate(text.splitlines(), 1) if "dpukit" in line.lower()]
    assert mentions, "the example imports DpuOverlay from dpukit"
    assert set(mentions) <= imports, [text.splitlines()[k - 1] for k in mentions]

    ported = text.replace("from dpukit.compat.pynq_dpu import", "from pynq_dpu import")
    assert "dpukit" not in ported.lower()
    script = tmp_path / "dpu_pynq_classify.py"
    script.write_text(ported)
    stand_in = tmp_path / "stand_in"
    stand_in.mkdir()
    (stand_in / "pynq_dpu.py").write_text("from dpukit.compat.pynq_dpu import DpuOverlay\n")
    images, labels = folder
    options = _example_options(CASES["golden"])
    env = {"DPUKIT_BACKEND": "golden"}
    original, _ = _run_example(EXAMPLE, digits_dpu, images, options, tmp_path, **env)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(stand_in), os.environ.get("PYTHONPATH")) if p
    )
    top1, _ = _run_example(script, digits_dpu, images, options, tmp_path, **env)
    assert top1 == original and sorted(top1) == sorted(labels)
