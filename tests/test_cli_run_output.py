"""`dpukit run --output FILE.npz`: the outputs by name, equal to `Runner.run`'s; a path that
cannot be written is refused before the run."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from dpukit.cli import main
from dpukit.cli.run import npz_bytes
from dpukit.compiler.compile import compile_model
from dpukit.host.runner import create_runner
from dpukit.models.digits import load_digits_split


@pytest.fixture(scope="module")
def digits_dpu(digits_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run_output") / "digits.dpu"
    compile_model(digits_qdq, "pynq-z2").save(path)
    return path


def test_outputs_saved_by_name(digits_dpu: Path, tmp_path: Path) -> None:
    x = load_digits_split()[2][:5]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "sub" / "out.npz"
    argv = ["run", str(digits_dpu), "--input", str(tmp_path / "x.npy"), "--output", str(out)]
    assert main(argv) == 0
    with create_runner(digits_dpu, "golden") as runner:
        expected = runner.run({"input": x}).outputs
    with np.load(out) as saved:
        assert sorted(saved.files) == sorted(expected) == ["logits"]
        np.testing.assert_array_equal(saved["logits"], expected["logits"])
        assert saved["logits"].dtype == expected["logits"].dtype


def test_any_output_name_is_kept() -> None:
    """numpy.savez(file, **arrays) would take these names for its own parameters."""
    arrays = {"file": np.arange(3), "allow_pickle": np.ones((2, 2), np.float32)}
    with np.load(io.BytesIO(npz_bytes(arrays))) as saved:
        for name, array in arrays.items():
            np.testing.assert_array_equal(saved[name], array)


def test_unwritable_output_is_refused_before_running(
    digits_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be")
    for output, why in [
        (tmp_path / "out.npy", "the outputs are saved as .npz"),
        (tmp_path / "taken" / "out.npz", "is not a folder"),
        (tmp_path / "folder.npz", "is a folder"),
    ]:
        (tmp_path / "folder.npz").mkdir(exist_ok=True)
        assert main(["run", str(digits_dpu), "--digits", "--output", str(output)]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith("error: --output") and why in captured.err, captured
        assert "running" not in captured.out
