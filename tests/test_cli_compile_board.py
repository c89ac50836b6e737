"""`dpukit compile --board` and `--preprocess`: what a program for a board must hold, checked
when it is compiled rather than on the board."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from bad_inputs import error_line
from onnx import helper
from test_cpu_ops import _conv_model

from dpukit.cli import main
from dpukit.compiler.program import Program


def test_preprocess_is_stored_from_json_or_a_file(
    digits_qdq: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    given = {"size": [8, 8], "color": "gray", "scale": 1 / 16, "labels": list("0123456789")}
    inline, from_file = tmp_path / "inline.dpu", tmp_path / "file.dpu"
    assert (
        main(["compile", str(digits_qdq), "-o", str(inline), "--preprocess", json.dumps(given)])
        == 0
    )
    (tmp_path / "pre.json").write_text(json.dumps(given))
    args = [
        "compile",
        str(digits_qdq),
        "-o",
        str(from_file),
        "--preprocess",
        str(tmp_path / "pre.json"),
    ]
    assert main(args) == 0
    assert Program.load(inline).preprocess == Program.load(from_file).preprocess == given


@pytest.mark.parametrize(
    "text, status, why",
    [
        ('{"sise": [8, 8]}', 1, "unknown preprocess key(s) sise"),
        ('{"color": "cmyk"}', 1, "preprocess 'color'"),
        ('{"size": [8, 8]', 1, "--preprocess: not valid JSON"),
        ("missing.json", 1, "--preprocess missing.json: cannot read it"),
    ],
)
def test_bad_preprocess_is_one_error(
    digits_qdq: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    text: str,
    status: int,
    why: str,
) -> None:
    out = tmp_path / "p.dpu"
    assert main(["compile", str(digits_qdq), "-o", str(out), "--preprocess", text]) == status
    assert why in error_line(capsys)
    assert not out.exists()


def test_board_refuses_a_cpu_op_the_executor_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = tmp_path / "erf.onnx"
    onnx.save(
        _conv_model(tail=[helper.make_node("Erf", ["yf"], ["out"], name="erf")], out="out"), model
    )
    out = tmp_path / "erf.dpu"
    assert main(["compile", str(model), "--config", "sim-small", "-o", str(out), "--board"]) == 1
    err = error_line(capsys)
    assert "Erf" in err and "'erf'" in err and not out.exists()
    # without --board the program is written: it runs where onnxruntime is (a laptop)
    assert main(["compile", str(model), "--config", "sim-small", "-o", str(out)]) == 0
    assert Program.load(out).subgraphs[-1].kind == "onnx"
    out = capsys.readouterr().out
    assert "Erf (node 'erf')" in out and "laptop" in out and "--board" in out
