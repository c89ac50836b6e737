"""Bad run inputs end in one `error:` line naming the file or input (tests/bad_inputs.py):
`dpukit run --input FILE` and `--json FILE` and `--config`, and `Runner.run` from Python.

Inputs that are unusual but fine (a list, a strided or Fortran-ordered array, another float
width or byte order) must just work, with the same outputs as the plain array.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import api, assert_user_error, cli

from dpukit.cli import main
from dpukit.compiler.compile import compile_model
from dpukit.host.runner import Runner, create_runner
from dpukit.models import zoo

SHAPE = (1, 64)  # the mlp's input, batch 1


@pytest.fixture(scope="module")
def dpu(quantized_zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mlp compiled for sim-small: one float32 input 'input' of [N, 64]."""
    path = tmp_path_factory.mktemp("run_inputs") / "mlp.dpu"
    compile_model(quantized_zoo("mlp", True, "int8"), "sim-small").save(path)
    return path


@pytest.fixture(scope="module")
def runner(dpu: Path) -> Runner:
    return create_runner(dpu)


def _x(n: int = 2) -> np.ndarray:
    return zoo.calibration_data(SHAPE, n=n, seed=5)


# --- input files: dpukit run --input FILE ---------------------------------------------------


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _npy(array: np.ndarray) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "x.npy"
        np.save(path, array, allow_pickle=True)
        return path

    return make


def _npz(**arrays: np.ndarray) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "x.npz"
        np.savez(path, **arrays)
        return path

    return make


def _truncated_npz(tmp: Path) -> Path:
    path = _npz(input=_x(8))(tmp)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _npy_claiming_1e12(tmp: Path) -> Path:
    """A header claiming 10**12 float32 elements in front of 256 bytes of data."""
    path = tmp / "huge.npy"
    path.write_bytes(_npy_header((15_625_000_000, 64)) + bytes(256))
    return path


def _npz_member_claiming_1e12(tmp: Path) -> Path:
    path = tmp / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input.npy", _npy_header((15_625_000_000, 64)) + bytes(256))
    return path


def _text(tmp: Path) -> Path:
    path = tmp / "x.npy"
    path.write_text("0.1, 0.2, 0.3\n")
    return path


def _directory(tmp: Path) -> Path:
    path = tmp / "x.npy"
    path.mkdir()
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "x.npy"
    os.mkfifo(path)  # opening it would wait for a writer forever
    return path


def _unreadable(tmp: Path) -> Path:
    """Reading /proc/self/mem at offset 0 fails with EIO, even for root."""
    path = tmp / "x.npy"
    path.symlink_to("/proc/self/mem")
    return path


def _with(x: np.ndarray, index: tuple[int, int], value: float) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


INPUT_FILES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("truncated-npz", _truncated_npz, ("not a readable",)),
    ("npz-object-array", _npz(input=np.array([[1, "a"]], dtype=object)), ("Python objects",)),
    ("npy-object-array", _npy(np.array([[1, "a"]], dtype=object)), ("Python objects",)),
    ("npy-header-claims-1e12", _npy_claiming_1e12, ("15625000000", "truncated")),
    ("npz-header-claims-1e12", _npz_member_claiming_1e12, ("'input'", "truncated")),
    ("not-numpy", _text, ("not a readable",)),
    ("directory", _directory, ("not a regular file",)),
    ("fifo", _fifo, ("not a regular file",)),
    ("unreadable", _unreadable, ("Input/output error",)),
    ("wrong-shape", _npy(np.zeros((2, 63), np.float32)), ("63", "[N, 64]")),
    ("empty-batch", _npy(np.zeros((0, 64), np.float32)), ("empty batch",)),
    ("int64", _npy(np.zeros((2, 64), np.int64)), ("float32", "int64")),
    ("complex", _npy(np.zeros((2, 64), np.complex64)), ("float32", "complex64")),
    ("bool", _npy(np.zeros((2, 64), bool)), ("float32", "bool")),
    ("strings", _npy(np.full((2, 64), "0.5")), ("float32", "<U3")),
    ("nan", _npy(_with(_x(), (1, 7), np.nan)), ("'input'", "nan", "[1, 7]")),
    ("inf", _npy(_with(_x(), (0, 3), -np.inf)), ("'input'", "-inf", "[0, 3]")),
    ("float64-overflow", _npy(_with(_x().astype(np.float64), (0, 0), 1e300)), ("float64",)),
    ("npz-extra-array", _npz(input=_x(), labels=np.arange(2)), ("labels",)),
    ("npz-without-the-input", _npz(), ("no array named 'input'",)),
]


@pytest.mark.parametrize(
    "make, mentions", [c[1:] for c in INPUT_FILES], ids=[c[0] for c in INPUT_FILES]
)
def test_bad_input_file(
    dpu: Path, tmp_path: Path, make: Callable[[Path], Path], mentions: tuple[str, ...]
) -> None:
    if make is _unreadable and not Path("/proc/self/mem").exists():
        pytest.skip("no /proc/self/mem on this system")
    path = make(tmp_path)
    assert_user_error(cli("run", dpu, "--input", path), path, *mentions)


def test_input_file_without_read_permission(dpu: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode (the /proc/self/mem case covers it)")
    path = _npy(_x())(tmp_path)
    path.chmod(0)
    assert_user_error(cli("run", dpu, "--input", path), path, "Permission denied")


# --- the output file: dpukit run --json FILE ------------------------------------------------


def _output_dir(tmp: Path) -> Path:
    return tmp


def _under_a_file(tmp: Path) -> Path:
    (tmp / "report.txt").write_text("a file, not a folder\n")
    return tmp / "report.txt" / "run.json"


OUTPUTS: list[tuple[str, Callable[[Path], Path], str]] = [
    # refused before the run (dpukit/outfiles.py), in these words
    ("a-directory", _output_dir, "is a folder"),
    ("under-a-file", _under_a_file, "report.txt is not a folder"),
    ("full-device", lambda tmp: Path("/dev/full"), "No space left on device"),
]


@pytest.mark.parametrize("where, mention", [c[1:] for c in OUTPUTS], ids=[c[0] for c in OUTPUTS])
def test_bad_json_output_path(
    dpu: Path, tmp_path: Path, where: Callable[[Path], Path], mention: str
) -> None:
    path = where(tmp_path)
    if path == Path("/dev/full") and not path.is_char_device():  # a system without it
        pytest.skip(f"no {path}")
    assert_user_error(cli("run", dpu, "--random", "1", "--json", path), path, mention)


# --- --config on run and inspect -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, mentions",
    [
        (["run", "--config", "pynq-z2"], ("sim-small", "pynq-z2", "fingerprint")),
        (["inspect", "--config", "ultra96v2"], ("sim-small", "ultra96v2")),
        (["run", "--config", "nowhere.toml"], ("nowhere.toml", "not found")),
        (["inspect", "--config", "../../sim-small"], ("../../sim-small", "not found")),
    ],
    ids=["run-other-config", "inspect-other-config", "missing-toml", "name-with-a-path"],
)
def test_config_option(dpu: Path, argv: list[str], mentions: tuple[str, ...]) -> None:
    command, *options = argv
    assert_user_error(cli(command, dpu, *options), *mentions)


# --- Runner.run and execute_async from Python --------------------------------------------------

API_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("empty-batch", "runner.run({'input': np.zeros((0, 64), np.float32)})", ("empty batch",)),
    ("0-d-array", "runner.run({'input': np.float32(0.5)})", ("'input'", "shape []")),
    ("one-sample-no-batch", "runner.run({'input': np.zeros(64, np.float32)})", ("[N, 64]",)),
    ("int64", "runner.run({'input': np.zeros((1, 64), np.int64)})", ("float32", "int64")),
    ("complex", "runner.run({'input': np.zeros((1, 64), complex)})", ("complex128",)),
    ("bool", "runner.run({'input': np.zeros((1, 64), bool)})", ("float32", "bool")),
    ("strings", "runner.run({'input': np.full((1, 64), 'x')})", ("float32", "<U1")),
    ("objects", "runner.run({'input': np.array([[None] * 64])})", ("float32", "object")),
    ("nan", "runner.run({'input': np.full((1, 64), np.nan, np.float32)})", ("'input'", "NaN")),
    ("inf", "runner.run({'input': np.full((2, 64), np.inf)})", ("'input'", "inf", "float64")),
    ("ragged-list", "runner.run({'input': [[0.5] * 64, [0.5] * 3]})", ("'input'", "not an array")),
    ("extra-name", "runner.run({'input': x, 'labels': x})", ("labels", "'input'")),
    ("missing-input", "runner.run({'image': x})", ("image",)),
    ("not-a-dict", "runner.run([x])", ("dict", "list")),
    ("execute-async", "runner.execute_async({'input': x.astype(np.int8)})", ("int8",)),
    ("wait-unknown-job", "runner.wait(7)", ("no job 7",)),
    ("config-of-another-fingerprint", "create_runner(PATH, config='pynq-z2')", ("pynq-z2",)),
]


@pytest.mark.parametrize(
    "call, mentions", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_bad_runner_call(dpu: Path, call: str, mentions: tuple[str, ...]) -> None:
    code = f"""
        import numpy as np
        from dpukit.host.runner import create_runner
        PATH = {str(dpu)!r}
        runner = create_runner(PATH)
        x = np.zeros((1, 64), np.float32)
        {call}
    """
    assert_user_error(api(code), *mentions)


def test_inputs_of_different_batch_sizes() -> None:
    """The mlp has one input; the check itself takes the program's input specs."""
    code = """
        import numpy as np
        from dpukit.compiler.program import TensorSpec
        from dpukit.host.runner import check_inputs
        specs = [TensorSpec("a", [1, 4], "float32"), TensorSpec("b", [1, 4], "float32")]
        check_inputs(specs, {"a": np.zeros((2, 4)), "b": np.zeros((3, 4))})
    """
    assert_user_error(api(code), "'a' 2", "'b' 3")


# --- unusual but fine: same outputs as the plain float32 array --------------------------------


VARIANTS: list[tuple[str, Callable, Callable]] = [
    ("list", lambda x: x.tolist(), lambda v: isinstance(v, list)),
    ("strided", lambda x: np.repeat(x, 2, axis=1)[:, ::2], lambda v: not v.flags.c_contiguous),
    ("fortran", np.asfortranarray, lambda v: v.flags.f_contiguous and not v.flags.c_contiguous),
    ("big-endian", lambda x: x.astype(">f4"), lambda v: v.dtype.byteorder == ">"),
    ("float64", lambda x: x.astype(np.float64), lambda v: v.dtype == np.float64),
]


@pytest.mark.parametrize(
    "variant, is_unusual", [c[1:] for c in VARIANTS], ids=[c[0] for c in VARIANTS]
)
def test_unusual_arrays_just_work(runner: Runner, variant: Callable, is_unusual: Callable) -> None:
    x = _x(3)
    value = variant(x)
    assert is_unusual(value)
    want = runner.run({"input": x}).outputs
    got = runner.run({"input": value}).outputs
    for name, out in want.items():
        np.testing.assert_array_equal(got[name], out)


def test_fortran_ordered_file_runs(dpu: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "fortran.npy"
    np.save(path, np.asfortranarray(_x(3)))
    assert main(["run", str(dpu), "--input", str(path)]) == 0
    assert "[3, 10]" in capsys.readouterr().out


def test_job_ids_are_not_reused(runner: Runner) -> None:
    out = runner.program.outputs[0].name
    first = runner.execute_async({"input": _x(1)})
    second = runner.execute_async({"input": _x(2)})
    runner.wait(first)
    third = runner.execute_async({"input": _x(3)})
    assert len({first, second, third}) == 3
    assert len(runner.wait(second).outputs[out]) == 2
    assert len(runner.wait(third).outputs[out]) == 3
