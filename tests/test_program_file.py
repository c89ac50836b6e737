"""The `.dpu` program file: round trip, layout on disk, versioning.

Layout (compiler/program.py): 8-byte magic | format version u32 LE | header length u32 LE |
JSON header | payload sections | SHA-256 of everything before it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from dpukit.cli import main
from dpukit.compiler.compile import compile_model
from dpukit.compiler.hwconfig import config_dir, load_config
from dpukit.compiler.program import Program
from dpukit.errors import CompileError, ProgramError
from dpukit.host.runner import create_runner
from dpukit.models import zoo


@pytest.fixture(scope="module")
def program(quantized_zoo) -> Program:
    """pools_concat on sim-small: CPU and DPU subgraphs, views, constants."""
    return compile_model(quantized_zoo("pools_concat", True, "uint8"), "sim-small")


@pytest.fixture(scope="module")
def saved(program: Program, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("program") / "pools_concat.dpu"
    program.save(path)
    return path


def _split(blob: bytes) -> tuple[bytes, int, dict, bytes]:
    magic = blob[:8]
    version, head_len = struct.unpack_from("<II", blob, 8)
    header = json.loads(blob[16 : 16 + head_len])
    return magic, version, header, blob[-32:]


def test_round_trip_preserves_everything(program: Program, saved: Path) -> None:
    loaded = Program.load(saved)
    assert [sg.device for sg in program.subgraphs].count("DPU") >= 1
    assert [sg.device for sg in program.subgraphs].count("CPU") >= 1
    assert len(loaded.subgraphs) == len(program.subgraphs)
    for a, b in zip(loaded.subgraphs, program.subgraphs, strict=True):
        assert (a.name, a.device, a.inputs, a.outputs) == (b.name, b.device, b.inputs, b.outputs)
        assert a.payload == b.payload and len(a.payload) > 0
        assert a.layers == b.layers
    assert loaded.tensors == program.tensors and len(program.tensors) > 3
    assert loaded.dram_offsets == program.dram_offsets
    assert loaded.const_base == program.const_base and loaded.const == program.const
    assert loaded.fingerprint == program.fingerprint and loaded.config == program.config
    assert loaded.inputs == program.inputs and loaded.outputs == program.outputs
    assert loaded.source == program.source
    assert loaded == program  # and nothing else was forgotten


def test_preprocess_is_stored_as_given(quantized_zoo, tmp_path: Path) -> None:
    """What a board script does to images travels with the program (tuples as lists)."""
    preprocess = {"size": (16, 16), "mean": [0.5, 0.25, 0.0], "color": "bgr", "labels": ["a"]}
    program = compile_model(quantized_zoo("mlp"), "sim-small", preprocess=preprocess)
    path = tmp_path / "preprocess.dpu"
    program.save(path)
    loaded = Program.load(path)
    assert loaded.preprocess == {**preprocess, "size": [16, 16]} and loaded == program


@pytest.mark.parametrize(
    "preprocess, mention",
    [([0.5], "object"), ({"mean": [[0.5]]}, "'mean'"), ({"scale": float("nan")}, "'scale'")],
)
def test_preprocess_that_is_no_json_object_is_refused(quantized_zoo, preprocess, mention):
    with pytest.raises(CompileError) as exc:
        compile_model(quantized_zoo("mlp"), "sim-small", preprocess=preprocess)
    assert "preprocess" in str(exc.value) and mention in str(exc.value), exc.value


def test_loaded_program_runs_like_the_original(program: Program, saved: Path) -> None:
    x = zoo.calibration_data((1, 3, 16, 16), n=2, seed=3)
    a = create_runner(program).run({"input": x})
    b = create_runner(saved).run({"input": x})
    for name, value in a.outputs.items():
        np.testing.assert_array_equal(b.outputs[name], value)
    assert b.activity.cycles == a.activity.cycles > 0


def test_saving_is_deterministic(program: Program, saved: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.dpu"
    Program.load(saved).save(again)
    assert again.read_bytes() == saved.read_bytes()


def test_file_has_magic_version_and_checksum(saved: Path) -> None:
    blob = saved.read_bytes()
    magic, version, header, digest = _split(blob)
    assert magic.startswith(b"DPUKIT") and len(magic) == 8
    assert version >= 1 and header["format_version"] == version
    assert header["config"]["name"] == "sim-small"
    assert digest == hashlib.sha256(blob[:-32]).digest()


def _with_version(blob: bytes, version: int) -> bytes:
    """The same file claiming another format version (fixed part and header), re-checksummed."""
    _, old, _, _ = _split(blob)
    head_len = struct.unpack_from("<I", blob, 12)[0]
    head = blob[16 : 16 + head_len].replace(
        f'"format_version": {old}'.encode(), f'"format_version": {version}'.encode()
    )
    body = blob[:8] + struct.pack("<II", version, len(head)) + head + blob[16 + head_len : -32]
    return body + hashlib.sha256(body).digest()


def test_version_rewrite_changes_nothing_else(saved: Path) -> None:
    blob = saved.read_bytes()
    assert _with_version(blob, _split(blob)[1]) == blob


def test_newer_format_version_is_refused(saved: Path, tmp_path: Path) -> None:
    blob = saved.read_bytes()
    version = _split(blob)[1]
    bumped = tmp_path / "future.dpu"
    bumped.write_bytes(_with_version(blob, version + 1))
    assert _split(bumped.read_bytes())[2]["format_version"] == version + 1
    with pytest.raises(ProgramError) as exc:
        Program.load(bumped)
    msg = str(exc.value)
    assert "version" in msg and str(version + 1) in msg and "recompile" in msg, msg


def test_bad_magic_is_refused(saved: Path, tmp_path: Path) -> None:
    blob = bytearray(saved.read_bytes())
    blob[:6] = b"ONNXRT"
    bad = tmp_path / "magic.dpu"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ProgramError) as exc:
        Program.load(bad)
    assert "magic" in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProgramError) as exc:
        Program.load(tmp_path / "nowhere.dpu")
    assert "nowhere.dpu" in str(exc.value)


def test_file_is_to_bytes(program: Program, saved: Path) -> None:
    assert saved.read_bytes() == program.to_bytes()


def test_loaded_program_knows_its_file_and_config(saved: Path) -> None:
    loaded = Program.load(saved)
    assert loaded.origin == str(saved) and loaded.label == str(saved)
    assert loaded.hwconfig() == load_config("sim-small")


def test_carried_config_is_validated(program: Program) -> None:
    """The config a program carries is checked as a config file is, never used as a path."""
    config = {**program.config, "name": "../../../x"}
    forged = dataclasses.replace(program, config=config)
    with pytest.raises(ProgramError) as exc:
        forged.hwconfig()
    msg = str(exc.value)
    assert "program compiled from" in msg and "name must be" in msg, msg


@pytest.fixture(scope="module")
def custom_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sim-small's hardware as a board that is not installed."""
    text = (config_dir() / "sim-small.toml").read_text()
    path = tmp_path_factory.mktemp("board") / "my-board.toml"
    path.write_text(text.replace('name = "sim-small"', 'name = "my-board"'))
    assert load_config(path).name == "my-board"
    return path


def test_program_for_a_custom_config_runs_anywhere(
    quantized_zoo, program: Program, custom_toml: Path, tmp_path: Path
) -> None:
    """The Runner takes the config the program carries, not an installed file of its name."""
    custom = compile_model(quantized_zoo("pools_concat", True, "uint8"), load_config(custom_toml))
    path = tmp_path / "custom.dpu"
    custom.save(path)
    x = zoo.calibration_data((1, 3, 16, 16), n=2, seed=4)
    got = create_runner(path).run({"input": x})
    want = create_runner(program).run({"input": x})  # the same hardware, named sim-small
    for name, value in want.outputs.items():
        np.testing.assert_array_equal(got.outputs[name], value)
    assert create_runner(path, config=custom_toml).cfg.name == "my-board"
    with pytest.raises(ProgramError, match="my-board.*sim-small"):
        create_runner(path, config="sim-small")


def test_cli_config_option_checks_the_fingerprint(
    saved: Path, custom_toml: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(saved), "--config", "sim-small"]) == 0
    assert "matches     --config sim-small" in capsys.readouterr().out
    assert main(["run", str(saved), "--config", str(config_dir() / "sim-small.toml")]) == 0
    capsys.readouterr()
    assert main(["run", str(saved), "--config", str(custom_toml)]) == 1
    err = capsys.readouterr().err
    assert "sim-small" in err and "my-board" in err, err
