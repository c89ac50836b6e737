"""The `dpukit` command line, run in-process: compile, inspect, run, quantize, demo, and its
error contract (one red `error:` line and exit code 1, never a traceback; usage errors exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from bad_inputs import error_line
from verified import assert_dpu_stage_within_ties

from dpukit.cli import main
from dpukit.compiler.hwconfig import available_configs, load_config
from dpukit.compiler.program import Program
from dpukit.models import zoo
from dpukit.quantize import quantize_model


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as they like, so cells are never truncated in the captured text."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="module")
def mlp_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _ = zoo.MODELS["mlp"]()
    path = tmp_path_factory.mktemp("cli_float") / "mlp.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def mlp_qdq(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, shape = zoo.MODELS["mlp"]()
    path = tmp_path_factory.mktemp("cli_qdq") / "mlp.qdq.onnx"
    return quantize_model(model, path, zoo.calibration_data(shape), per_channel=True)


@pytest.fixture(scope="module")
def mlp_dpu(mlp_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli_dpu") / "mlp.dpu"
    assert main(["compile", str(mlp_qdq), "-o", str(out)]) == 0
    return out


def test_compile_summary(mlp_qdq: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "prog.dpu"
    assert main(["compile", str(mlp_qdq), "-o", str(out), "--config", "pynq-z2"]) == 0
    text = capsys.readouterr().out
    program = Program.load(out)
    assert program.fingerprint == load_config("pynq-z2").fingerprint
    for sg in program.subgraphs:
        assert sg.name in text
    assert "DPU" in text and "instructions" in text and "data window" in text
    assert "compiled for pynq-z2" in text


def test_compile_default_output(mlp_qdq: Path, tmp_path: Path) -> None:
    model = tmp_path / "net.qdq.onnx"
    shutil.copy(mlp_qdq, model)
    assert main(["compile", str(model)]) == 0
    assert (tmp_path / "net.dpu").is_file()


def test_inspect_lists_layers(mlp_dpu: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(mlp_dpu)]) == 0
    text = capsys.readouterr().out
    program = Program.load(mlp_dpu)
    assert program.config["name"] in text and program.fingerprint in text
    layers = [layer for sg in program.subgraphs for layer in sg.layers]
    assert layers
    for layer in layers:
        assert layer["name"] in text
        for op in layer["instructions"]:
            assert op in text
    for spec in (*program.inputs, *program.outputs):
        assert spec.name in text


def test_run_json_is_consistent(
    mlp_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = tmp_path / "run.json"
    argv = ["run", str(mlp_dpu), "--random", "3", "--batch", "2", "--json", str(report)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "modeled (cycle model)" in text and "PE utilization" in text
    doc = json.loads(report.read_text())
    act = doc["activity"]
    assert doc["images"] == 3
    assert act["cycles"] > 0 and act["dram_read_bytes"] > 0 and act["dram_write_bytes"] > 0
    assert act["macs"] > 0 and 0 < act["mac_cycles"] <= act["cycles"]
    assert doc["cycles_per_image"] * 3 == pytest.approx(act["cycles"])
    assert doc["latency_ms_per_image"] == pytest.approx(
        doc["cycles_per_image"] / (doc["clock_mhz"] * 1e3)
    )
    assert doc["pe_utilization"] == pytest.approx(act["mac_cycles"] / act["cycles"])
    assert act["macs"] >= 3 * doc["model_macs_per_image"] > 0  # the array also multiplies padding
    # every image runs the same program: the first image's subgraphs add up to one third
    assert sum(s["cycles"] for s in doc["per_subgraph_first_image"]) * 3 == act["cycles"]
    (out,) = doc["outputs"].values()
    assert out["shape"] == [3, 10] and len(out["argmax"]) == 3


def test_run_input_file(mlp_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np

    x = tmp_path / "x.npy"
    np.save(x, zoo.calibration_data((1, 64), n=1)[0])  # one sample without the batch dim
    assert main(["run", str(mlp_dpu), "--input", str(x)]) == 0
    assert "[1, 10]" in capsys.readouterr().out


def test_quantize_command(mlp_float: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(mlp_float), "-o", str(out), "--calib-random", "4"]) == 0
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert str(out) in capsys.readouterr().out


def test_configs_lists_shipped(capsys: pytest.CaptureFixture) -> None:
    assert main(["configs"]) == 0
    text = capsys.readouterr().out
    for name in available_configs():
        assert name in text
        assert load_config(name).fpga_part in text


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_missing_program(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([command, str(tmp_path / "nope.dpu")]) == 1
    assert "nope.dpu" in error_line(capsys)


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_garbage_program(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.dpu"
    bad.write_bytes(b"this is not a program\n" * 10)
    assert main([command, str(bad)]) == 1
    assert "not a dpukit program" in error_line(capsys)


def test_truncated_program(mlp_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "cut.dpu"
    bad.write_bytes(mlp_dpu.read_bytes()[:-100])
    assert main(["run", str(bad)]) == 1
    assert "checksum" in error_line(capsys)


def test_compile_float_model(mlp_float: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compile", str(mlp_float)]) == 1
    assert "not quantized" in error_line(capsys)


def test_compile_unknown_config(mlp_qdq: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compile", str(mlp_qdq), "--config", "no-such-board"]) == 1
    err = error_line(capsys)
    assert "no-such-board" in err and "pynq-z2" in err  # names the available ones


def test_digits_options_on_wrong_model(
    mlp_float: Path, mlp_dpu: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["quantize", str(mlp_float), "--calib-digits"]) == 1
    assert "--calib-digits" in error_line(capsys)
    assert main(["run", str(mlp_dpu), "--digits"]) == 1
    assert "--digits" in error_line(capsys)


def test_missing_input_file(mlp_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(mlp_dpu), "--input", str(tmp_path / "x.npy")]) == 1
    error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [[], ["run"], ["compile", "m.onnx", "--bogus"], ["run", "p.dpu", "--batch", "0"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.slow
def test_demo(digits_float: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The whole flow. The golden model must mean what the QDQ model means, as far as the
    hardware guarantees it: every layer equal to onnxruntime except rounding ties, the
    logits within what ties explain, the top class equal wherever ties cannot reach it.
    How many outputs are bit-identical depends on the ties a training run makes: the demo
    reports it, nothing asserts it."""
    work = tmp_path / "demo"
    work.mkdir()
    shutil.copy(digits_float, work / "digits_cnn.onnx")  # skip training: it is cached
    assert main(["demo", "--workdir", str(work), "--rtl-images", "2"]) == 0
    text = capsys.readouterr().out
    assert "golden DPU model" in text and "modeled (cycle model)" in text
    doc = json.loads((work / "demo.json").read_text())
    # step 6: the first images on the RTL, bit-identical to the golden model
    assert doc["rtl"]["images"] == 2 and doc["rtl"]["bit_identical"] == 2
    assert doc["rtl"]["cycles_per_image"] > 0
    assert doc["accuracy"]["float model (onnxruntime)"] > 0.9
    assert doc["cycles_per_image"] > 0 and doc["latency_ms_per_image"] > 0
    v = doc["verify"]
    assert v["ok"] and v["away_from_ties"] == 0 and v["layer_elements"] > 0
    assert v["logits_max_lsb"] <= v["logits_tie_bound_lsb"]
    assert v["top1_agree"] >= doc["images"] - v["top1_within_reach_of_ties"]
    ref = doc["golden_vs_onnxruntime"]["QDQ reference (graph optimizations off)"]
    assert ref["max_lsb"] == v["logits_max_lsb"]  # the demo's table and verify agree
    assert doc["accuracy"]["golden DPU model"] > 0.9
    # energy per image, modeled, at each stage: the DPU's is the program's DPU-level energy
    from dpukit.compiler.energy import program_energy

    e = doc["energy_per_image_modeled"]
    assert e["kind"] == "modeled" and e["dpu"]["kind"] == "modeled"
    want = program_energy(work / "digits_cnn.dpu").total.total
    assert e["dpu"]["total"] == pytest.approx(want)
    # int8 weights and activations move a quarter of float32's bits (seed 001's model)
    assert e["qdq_network_level"]["dram"] == pytest.approx(
        e["float_network_level"]["dram"] / 4, rel=0.01
    )
    # step 7: a short optimization flow, its report where it says
    assert "7 flow: " in text
    flow_doc = json.loads((work / "flow" / "report.json").read_text())
    assert flow_doc["table"][-1]["stage"] == "dpu"
    # the golden DPU against onnxruntime's QDQ reference: apart only where ties reach
    from dpukit.optimize.data import load_dataset

    quantized, dpu = flow_doc["stages"][-2:]
    assert_dpu_stage_within_ties(work / "flow", quantized, dpu, load_dataset("digits").test)
    assert (work / "flow" / "report.html").is_file()
