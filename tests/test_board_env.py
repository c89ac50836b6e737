"""The board runtime as a PYNQ image runs it: Python 3.10, numpy < 2, opencv, and dpukit
installed without its laptop dependencies. A session fixture builds that environment once
(cached in .venv-board/<key>/, keyed by pyproject.toml and the interpreter, shared by
pytest-xdist workers through a file lock); the tests import the board path there without
onnx, onnxruntime, scikit-learn, rich, tomllib or matplotlib, and run the digits CNN
through the board script with the accuracy the laptop's Python gets on the same JPEGs."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from board_images import compile_digits, digits_pictures, write_folder
from packaging.requirements import Requirement

from dpukit.board_scripts.run_images import main as run_images
from dpukit.compiler.compile import compile_model
from dpukit.compiler.hwconfig import load_config
from dpukit.sim import virtual_board

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".venv-board"  # ignored by git (.venv-*/)
# What a PYNQ image has besides pynq (which the tests do not need off a board).
BOARD_PACKAGES = ("numpy<2", "opencv-python-headless==4.11.0.86")
LAPTOP_ONLY = ("onnx", "onnxruntime", "sklearn", "rich", "tomllib", "matplotlib")
BOARD_PATH = (
    "dpukit.compiler.program",
    "dpukit.compiler.golden",
    "dpukit.host.layout",
    "dpukit.host.cpu_ops",
    "dpukit.host.cpu",
    "dpukit.host.driver",
    "dpukit.host.board_backend",
    "dpukit.host.pynq_board",
    "dpukit.host.runner",
    "dpukit.host.power",
    "dpukit.board_scripts.run_images",
    "dpukit.compat.xir",
    "dpukit.compat.vart",
    "dpukit.compat.pynq_dpu",
)
# Imports each module in turn; after each, which laptop-only packages are loaded.
PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
        error = None
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    loaded = {m.split(".")[0] for m in sys.modules}
    found[name] = {"error": error, "laptop_only": sorted(loaded & set(sys.argv[1].split(",")))}
import numpy
print(json.dumps({"modules": found, "numpy": numpy.__version__,
                  "python": list(sys.version_info[:2])}))
"""


def find_python310() -> Path:
    """A Python 3.10: $DPUKIT_PYTHON310, pyenv's newest 3.10.x, or python3.10 on the PATH
    (pyenv's shim only works when PYENV_VERSION names it, so each is tried)."""
    candidates = [os.environ.get("DPUKIT_PYTHON310")]
    roots = [os.environ.get("PYENV_ROOT"), Path.home() / ".pyenv"]
    if shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        roots.insert(0, done.stdout.strip() or None)
    for root in filter(None, roots):
        found = Path(root).glob("versions/3.10.*/bin/python3.10")
        candidates += sorted(found, key=_version_key, reverse=True)
    candidates += [shutil.which("python3.10"), "/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    for candidate in filter(None, candidates):
        check = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"]
        if subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return Path(candidate)
    pytest.fail(
        "no Python 3.10 found (tried $DPUKIT_PYTHON310, $(pyenv root)/versions/3.10.*, "
        "python3.10 on the PATH): the board runtime is tested on the boards' Python; install "
        "one (pyenv install 3.10) or set DPUKIT_PYTHON310"
    )


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parts[-3]))


def _run(argv: list, what: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}"
                    f"\n{done.stderr[-3000:]}")  # fmt: skip
    return done


@pytest.fixture(scope="session")
def board_python() -> Path:
    """The Python of a 3.10 environment with numpy < 2, opencv and dpukit (editable, so it
    runs this working tree's code; --no-deps, so nothing of the laptop's comes along)."""
    base = find_python310()
    version = _run([base, "-c", "import sys; print(sys.version)"], "python3.10").stdout
    key = hashlib.sha256(
        (REPO / "pyproject.toml").read_bytes() + str(base).encode() + version.encode()
        + "\n".join(BOARD_PACKAGES).encode()
    ).hexdigest()[:16]  # fmt: skip
    env = CACHE / key
    python = env / "bin" / "python"
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other workers wait here, then find it built
        if not (env / ".ready").exists():
            for old in CACHE.iterdir():  # environments of an older pyproject.toml
                if old.is_dir():
                    shutil.rmtree(old)
            _run([base, "-m", "venv", env], "creating the Python 3.10 environment")
            pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run([*pip, *BOARD_PACKAGES], "installing the board's packages")
            _run([*pip, "--no-deps", "--editable", REPO], "installing dpukit (--no-deps)")
            (env / ".ready").write_text(version)
    return python


def _probe(python: Path | str, modules: tuple[str, ...] = BOARD_PATH) -> dict:
    done = _run([python, "-c", PROBE, ",".join(LAPTOP_ONLY), *modules], f"{python} probe")
    return json.loads(done.stdout.splitlines()[-1])


def test_the_probe_sees_laptop_libraries() -> None:
    """The check below is not vacuous: the CLI does load rich, the quantizer onnx."""
    found = _probe(sys.executable, ("dpukit.cli", "dpukit.quantize"))["modules"]
    assert "rich" in found["dpukit.cli"]["laptop_only"]
    assert "onnx" in found["dpukit.quantize"]["laptop_only"]


@pytest.mark.parametrize("side", ["board", "laptop"])
def test_board_path_imports_no_laptop_library(side: str, request) -> None:
    """On the board's Python the laptop's libraries are absent; on the laptop's they are
    present, and importing the board path still loads none of them."""
    python = request.getfixturevalue("board_python") if side == "board" else sys.executable
    found = _probe(python)
    assert found["python"] == ([3, 10] if side == "board" else list(sys.version_info[:2]))
    errors = {m: r["error"] for m, r in found["modules"].items() if r["error"]}
    assert not errors, f"board path modules that fail to import on the {side}'s Python: {errors}"
    culprits = {}
    for module, result in found["modules"].items():  # the first module that loads each
        for lib in result["laptop_only"]:
            culprits.setdefault(lib, module)
    assert not culprits, f"laptop-only libraries loaded (library: first module): {culprits}"


def test_board_numpy_is_below_2(board_python: Path) -> None:
    numpy = _probe(board_python)["numpy"]
    assert int(numpy.split(".")[0]) < 2, numpy


def test_requirements_on_python310() -> None:
    """What pip installs on the board's Python 3.10: numpy alone, and with [board] numpy < 2
    and pynq 3.x; on 3.11 the laptop's libraries; the dev extra never brings pynq."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def wanted(requirements: list[str], python: str) -> dict[str, str]:
        env = {"python_version": python, "python_full_version": f"{python}.0", "extra": ""}
        reqs = [Requirement(r) for r in requirements]
        return {r.name: str(r.specifier) for r in reqs if not r.marker or r.marker.evaluate(env)}

    extras = project["optional-dependencies"]
    assert wanted(project["dependencies"], "3.10") == {"numpy": ">=1.24"}
    assert set(wanted(project["dependencies"], "3.11")) >= {"onnx", "onnxruntime", "rich"}
    board = wanted(extras["board"], "3.10")
    assert set(board) == {"pynq", "numpy"}
    assert Requirement(f"numpy{board['numpy']}").specifier.contains("1.26.4")
    assert not Requirement(f"numpy{board['numpy']}").specifier.contains("2.0.0")
    pynq = Requirement(f"pynq{board['pynq']}").specifier
    assert pynq.contains("3.0.1") and pynq.contains("3.1.2") and not pynq.contains("4.0.0")
    assert not any(Requirement(r).name == "pynq" for r in extras["dev"])


def test_command_line_on_python310_says_what_to_run(board_python: Path) -> None:
    done = subprocess.run(
        [str(board_python), "-m", "dpukit.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "needs Python >= 3.11" in done.stderr
    assert "python3 -m dpukit.board_scripts.run_images" in done.stderr


@pytest.mark.parametrize(
    "model, backend",
    [("digits", "golden"), ("digits", "rtl"), ("residual_block", "rtl")],
)
def test_models_through_the_board_script_on_python310(
    model: str, backend: str, board_python: Path, digits_qdq: Path, quantized_zoo, tmp_path: Path
) -> None:
    """Compiled here (3.11), run there (3.10, numpy < 2, no onnx) on a folder of JPEGs: the
    predictions of the golden backend on this side, image for image. The rtl backend there
    is the board driver on the virtual board, with the library built on this side (that
    environment has no Verilator)."""
    images = tmp_path / "images"
    if model == "digits":
        program = compile_digits(digits_qdq, tmp_path / "digits.dpu")
        pixels, labels = digits_pictures()
        write_folder(images, pixels, labels, style="kaggle", ext=".jpg")
    else:  # a zoo model on colour pictures of noise: predictions, not accuracy, compared
        program = tmp_path / f"{model}.dpu"
        preprocess = {"size": [16, 16], "color": "rgb", "scale": 1 / 255, "mean": 0.5}
        qdq = quantized_zoo(model, True, "int8")
        compile_model(qdq, "pynq-z2", preprocess=preprocess).save(program)
        rng = np.random.default_rng(5)
        pixels, labels = rng.integers(0, 256, (12, 16, 16), np.uint8), np.arange(12) % 2
        write_folder(images, pixels, labels, color=True, ext=".jpg")
    env = dict(os.environ)
    if backend == "rtl":
        env[virtual_board.LIB_ENV] = str(virtual_board.build(load_config("pynq-z2")))
    there, here = tmp_path / "board.json", tmp_path / "laptop.json"
    argv = [program, images, "--backend", backend, "--out", there]
    _run(
        [board_python, "-m", "dpukit.board_scripts.run_images", *argv], "the board script", env=env
    )
    assert run_images([str(program), str(images), "--out", str(here)]) == 0
    board, laptop = json.loads(there.read_text()), json.loads(here.read_text())
    assert board["python"].startswith("3.10.") and board["numpy"].startswith("1.")
    assert board["images"] == laptop["images"] == len(pixels)
    assert board["accuracy"] == laptop["accuracy"]
    if model == "digits":
        assert laptop["accuracy"] > 0.9
    assert board["per_image"] == laptop["per_image"]


@pytest.mark.parametrize("backend", ["golden", "rtl"])
def test_dpu_pynq_example_on_python310(
    backend: str, board_python: Path, digits_qdq: Path, tmp_path: Path
) -> None:
    """The DPU-PYNQ-style example (docs/examples/dpu_pynq_classify.py: DpuOverlay, float32
    buffers, execute_async/wait) on the board's Python, without onnx: the same top-1 per
    image as on this side's golden model, and the digits CNN's accuracy."""
    example = REPO / "docs" / "examples" / "dpu_pynq_classify.py"
    program = compile_digits(digits_qdq, tmp_path / "digits.dpu")
    pixels, labels = digits_pictures(per_class=3)
    names = write_folder(tmp_path / "images", pixels, labels, upscale=2)
    argv = [example, program, tmp_path / "images", "--resize-shorter", "8"]
    env = dict(os.environ, DPUKIT_BACKEND=backend)
    if backend == "rtl":
        env[virtual_board.LIB_ENV] = str(virtual_board.build(load_config("pynq-z2")))
    there = _run([board_python, *argv], "the example on the board's Python", env=env).stdout
    here = _run(
        [sys.executable, *argv], "the example here", env=dict(os.environ, DPUKIT_BACKEND="golden")
    ).stdout
    assert there == here
    top1 = dict(line.rsplit(" ", 1) for line in here.splitlines()[:-1])
    truth = dict(zip(names, labels, strict=True))
    assert sorted(top1) == sorted(names)
    assert np.mean([int(top1[n]) == truth[n] for n in names]) > 0.9
