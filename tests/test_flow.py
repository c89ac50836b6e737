"""The optimization flow (dpukit.optimize.flow, `dpukit flow`): its stages, report files,
cache, labels, measured power, data loading and bad inputs."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from board_images import digits_pictures, write_folder
from onnx import TensorProto, helper, numpy_helper
from power_trees import hwmon_chip
from verified import assert_dpu_stage_within_ties

from dpukit.cli import main
from dpukit.compiler.program import Program
from dpukit.models.digits import load_digits_split
from dpukit.optimize.data import Split, load_dataset
from dpukit.optimize.flow import Flow, FlowOptions
from dpukit.optimize.report import CSV_COLUMNS, PLOTS, TABLE_KEYS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def _reference_top1(model: Path, split: Split) -> float:
    """Top-1 of onnxruntime on the graph as written, independently of dpukit's helpers."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: split.x})[0]
    return float((scores.argmax(axis=1) == split.y).mean())


def _digits_macs(model: Path) -> int:
    """MACs of a digits CNN from its weights' shapes: 3x3 convs on 8x8, 8x8, then 4x4."""
    weights = {t.name: tuple(t.dims) for t in onnx.load(str(model)).graph.initializer}
    convs = [d for d in weights.values() if len(d) == 4]
    fc = next(d for d in weights.values() if len(d) == 2)
    positions = (64, 64, 16)
    convs_macs = sum(p * o * i * 9 for p, (o, i, _, _) in zip(positions, convs, strict=True))
    return convs_macs + math.prod(fc)


@pytest.fixture(scope="module")
def eliminated(digits_float: Path, tmp_path_factory: pytest.TempPathFactory):
    """The digits CNN: float -> conv3 cut to 16 channels -> quantized -> golden DPU."""
    out = tmp_path_factory.mktemp("flow")
    options = FlowOptions(eliminate=(("conv3", 16),))
    flow = Flow(digits_float, "digits", report_dir=out, options=options)
    results = {r["stage"]: r for r in flow.run()}
    return flow, results, out


def test_stages_and_their_figures(eliminated, digits_float: Path) -> None:
    flow, results, out = eliminated
    assert list(results) == ["float", "eliminate conv3:16", "quantized", "dpu"]
    assert flow.computed == ["float", "elimination curves", *list(results)[1:]]
    test = flow.data.test
    float_, cut, quantized, dpu = results.values()
    # accuracy: onnxruntime on each stage's model; the DPU's equal to the quantized model's
    for r in (float_, cut, quantized):
        assert r["accuracy"] == _reference_top1(out / r["model"], test)
    # the DPU's within what rounding ties allow of the quantized model's (DESIGN principle 2)
    assert_dpu_stage_within_ties(out, quantized, dpu, test)
    # MACs from the weights' shapes; conv3 16 of 32 channels halves it and the fc's inputs
    assert float_["macs"] == _digits_macs(digits_float) == 456_704
    assert cut["macs"] == _digits_macs(out / cut["model"]) == 456_704 - 73_728 - 2_560
    assert quantized["macs"] == dpu["macs"] == cut["macs"]
    assert cut["params"] == float_["params"] - 16 * 32 * 9 - 16 - 16 * 16 * 10
    assert quantized["param_bytes"] < cut["param_bytes"] / 3  # int8 weights, int32 biases
    for level in ("energy_network_modeled",):
        assert cut[level]["total"] < float_[level]["total"]
    assert cut["dpu_modeled"]["energy"]["total"] < float_["dpu_modeled"]["energy"]["total"]
    assert dpu["dpu_modeled"]["energy"]["total"] == pytest.approx(
        quantized["dpu_modeled"]["energy"]["total"]
    )
    assert dpu["cycles_per_image"] == dpu["cycles_per_image_modeled"]  # golden: the cycle model
    assert dpu["latency_ms"] == pytest.approx(dpu["cycles_per_image"] / 100e3)  # 100 MHz
    program = Program.load(out / dpu["model"])
    assert program.preprocess is None  # digits: no image preprocessing to store
    # the curve of conv3 (validation split) reaches the unreduced model at full width
    curve = flow.curves["conv3"]
    assert curve[0]["keep"] == 32 and [p["keep"] for p in curve] == sorted(
        (p["keep"] for p in curve), reverse=True
    )


def test_report_files_are_well_formed(eliminated) -> None:
    flow, results, out = eliminated
    with (out / "stages.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["stage"] for r in rows] == list(results)
    assert float(rows[-1]["accuracy_pct"]) == pytest.approx(100 * results["dpu"]["accuracy"])
    doc = json.loads((out / "report.json").read_text())
    assert {"table", "stages", "labels", "pareto_front", "elimination_curves",
            "elimination_choice", "model", "data", "config", "backend"} <= set(doc)  # fmt: skip
    assert [tuple(r) for r in doc["table"]] == [TABLE_KEYS] * 4
    assert [r["stage"] for r in doc["table"]] == list(results)
    assert doc["elimination_curves"]["conv3"] == flow.curves["conv3"]
    assert doc["elimination_choice"]["layer"] == "conv3"
    # the cheapest stage on the front: nothing is both cheaper and as accurate
    assert "dpu" in doc["pareto_front"]["stages"] or "quantized" in doc["pareto_front"]["stages"]
    page = (out / "report.html").read_text()
    for name in PLOTS:
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG)
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert "<table>" in page and "eliminate conv3:16" in page


def test_every_figure_says_modeled_or_measured(eliminated) -> None:
    _, results, out = eliminated
    doc = json.loads((out / "report.json").read_text())
    for row in doc["table"]:
        for key in ("power_kind", "latency_kind", "energy_kind"):
            assert re.match(r"(modeled|measured) ", row[key]), (key, row[key])
    assert doc["table"][0]["latency_kind"].startswith("measured (this host's CPU")
    assert doc["table"][-1]["latency_kind"].startswith("modeled (cycle model)")
    for r in results.values():
        assert r["energy_network_modeled"]["kind"] == "modeled"
        assert r["dpu_modeled"]["kind"] == "modeled"
        assert r["measured"] is None  # no sensors
    with (out / "stages.csv").open() as f:
        header = next(csv.reader(f))
    energy = [c for c in header if "energy" in c or "power" in c or "cycles" in c]
    assert energy and all("modeled" in c or "measured" in c for c in energy)


def test_second_run_recomputes_nothing_and_a_changed_option_only_what_follows(
    eliminated, digits_float: Path, tmp_path: Path
) -> None:
    flow, results, shared = eliminated
    out = tmp_path / "report"  # a copy: the module's report stays as the other tests read it
    shutil.copytree(shared, out)
    entries = {p.name: json.loads(p.read_text()) for p in (out / "cache").glob("*.json")}
    again = Flow(digits_float, "digits", report_dir=out, options=flow.options)
    assert [r["computed_unix"] for r in again.run()] == [
        r["computed_unix"] for r in results.values()
    ]
    assert again.computed == []
    assert {p.name: json.loads(p.read_text()) for p in (out / "cache").glob("*.json")} == entries
    changed = Flow(digits_float, "digits", report_dir=out,
                   options=FlowOptions(eliminate=(("conv3", 12),)))  # fmt: skip
    changed.run()
    assert changed.computed == ["eliminate conv3:12", "quantized", "dpu"]
    assert changed.results["float"] == results["float"]
    assert changed.results["dpu"]["macs"] < results["dpu"]["macs"]


def test_a_notebook_runs_stages_one_by_one(digits_float: Path, tmp_path: Path) -> None:
    with Flow(digits_float, "digits", report_dir=tmp_path) as flow:
        assert [s.name for s in flow.stages] == ["float", "quantized", "dpu"]
        quantized = flow.run_stage("quantized")  # runs the float stage first
        assert list(flow.results) == ["float", "quantized"] == flow.computed
        files = flow.write_report()
    assert quantized["model"] == "models/01_quantized.onnx"
    doc = json.loads(files["report.json"].read_text())
    assert [r["stage"] for r in doc["table"]] == ["float", "quantized"]
    assert files["report.html"].read_text().count("data:image/png;base64,") == 3


def test_measured_power_with_a_hwmon_sensor(digits_float: Path, tmp_path: Path) -> None:
    hwmon_chip(tmp_path, 0, {"name": "ina226", "power1_input": 2000000, "power1_label": "VSYS"})
    options = FlowOptions(idle_s=0.2, measure_s=0.3, latency_images=50)
    flow = Flow(digits_float, "digits", report_dir=tmp_path / "report", options=options,
                sensors="hwmon:ina226/VSYS", sysfs=str(tmp_path))  # fmt: skip
    results = flow.run()
    assert [r["stage"] for r in results] == ["float", "quantized", "dpu"]
    for r in results:
        m = r["measured"]
        assert m["kind"] == "measured" and m["complete"]
        assert m["label"].startswith("measured (hwmon:ina226/VSYS), of this host running")
        assert m["avg_power_w"] == pytest.approx(2.0)
        assert m["energy_j"] * m["inferences"] == pytest.approx(2.0 * m["duration_s"])
        assert (flow.report_dir / m["trace"]).read_text().startswith("t_s,phase,hwmon:")
    # each phase ran its images whole, as often as it took to last 0.3 s
    runs = [r["measured"]["inferences"] / n for r, n in zip(results, (50, 50, 450), strict=True)]
    assert all(k == int(k) >= 1 for k in runs)
    assert all(r["measured"]["duration_s"] >= 0.3 for r in results)
    doc = json.loads((flow.report_dir / "report.json").read_text())
    assert all(row["power_kind"].startswith("measured (hwmon:ina226/VSYS)") for row in doc["table"])
    assert all(row["power_w"] == pytest.approx(2.0) for row in doc["table"])
    with (flow.report_dir / "stages.csv").open() as f:
        assert all(float(r["power_measured_w"]) == pytest.approx(2.0) for r in csv.DictReader(f))
    assert (flow.report_dir / "plots" / "accuracy_vs_energy.png").read_bytes().startswith(PNG)


# -- data --------------------------------------------------------------------------------------


def test_digits_keep_the_kits_test_split() -> None:
    data = load_dataset("digits")
    x_train, y_train, x_test, y_test = load_digits_split()
    assert np.array_equal(data.test.x, x_test) and np.array_equal(data.test.y, y_test)
    assert len(data.train) + len(data.val) == len(x_train)
    assert len(data.val) == pytest.approx(0.15 / 0.85 * len(x_train), abs=10)
    assert set(np.unique(data.val.y)) == set(range(10))
    flat = load_dataset("digits", input_shape=("N", 64))
    assert flat.test.x.shape == (len(x_test), 64)


@pytest.mark.parametrize("style", ["folders", "kaggle"])
def test_folder_of_jpegs_decodes_as_opencv_does(tmp_path: Path, style: str) -> None:
    pixels, labels = digits_pictures(per_class=20)
    names = write_folder(tmp_path, pixels, labels, style=style, ext=".jpg", upscale=2)
    data = load_dataset(tmp_path, input_shape=("N", 1, 8, 8), seed=3)
    assert data.classes == [str(d) for d in range(10)]
    assert [len(s) for s in (data.train, data.val, data.test)] == [140, 30, 30]
    for split in (data.train, data.val, data.test):
        assert np.array_equal(np.bincount(split.y, minlength=10), np.full(10, len(split) // 10))
    # every sample is its JPEG as OpenCV decodes it, shrunk 16x16 -> 8x8 (area), x 1/255
    expected = []
    for name in names:
        image = cv2.imread(str(tmp_path / name), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(image, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32)
        expected.append((small * np.float32(1 / 255)).tobytes())
    got = np.concatenate([data.train.x, data.val.x, data.test.x])[:, 0]
    assert sorted(a.tobytes() for a in got) == sorted(expected)  # the same, as multisets
    assert data.preprocess["color"] == "gray" and data.preprocess["size"] == [8, 8]


def test_both_namings_give_the_same_dataset(tmp_path: Path) -> None:
    pixels, labels = digits_pictures(per_class=5)
    write_folder(tmp_path / "a", pixels, labels, style="folders", ext=".jpg")
    write_folder(tmp_path / "b", pixels, labels, style="kaggle", ext=".jpg")
    a = load_dataset(tmp_path / "a", size=(8, 8), preprocess={"color": "gray"})
    b = load_dataset(tmp_path / "b", size=(8, 8), preprocess={"color": "gray"})
    assert a.fingerprint() == b.fingerprint()
    few = load_dataset(tmp_path / "a", size=(8, 8), limit=30, preprocess={"color": "gray"})
    assert [len(s) for s in (few.train, few.val, few.test)] == [10, 10, 10]


def test_cli_flow_on_a_folder_stores_its_preprocessing(
    digits_float: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pixels, labels = digits_pictures(per_class=8)
    write_folder(tmp_path / "images", pixels, labels, ext=".jpg")
    out = tmp_path / "report"
    argv = ["flow", str(digits_float), "--data", str(tmp_path / "images"), "-o", str(out)]
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    for stage in ("float", "quantized", "dpu"):
        assert re.search(rf"{stage} computed +[\d.]+ s top-1", text)
    # power, top-1, latency (cycle model), DPU latency modeled, energy, no measured energy
    cells = [r"[\d.]+ mW modeled", r"[\d.]+ %", r"[\d.]+ ms modeled", r"[\d.]+ ms",
             r"[\d.]+ µJ modeled", "-"]  # fmt: skip
    assert re.search(r"│ dpu │ " + " │ ".join(cells) + " │", text)
    assert "modeled (cycle model), at 100 MHz" in text
    assert f"report: {out / 'report.html'} (self-contained)" in text
    doc = json.loads((out / "report.json").read_text())
    program = Program.load(out / doc["stages"][-1]["model"])
    assert program.preprocess["size"] == [8, 8] and program.preprocess["color"] == "gray"
    assert program.preprocess["labels"] == [str(d) for d in range(10)]
    assert main(argv) == 0
    assert len(re.findall(r" cached ", capsys.readouterr().out)) == 3


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--data", "no/such/dir"], "error: no/such/dir: no such image folder"),
        (["--eliminate", "conv3"], "error: --eliminate conv3: give LAYER:P"),
        (["--eliminate", "conv3:0"], "error: --eliminate conv3:0: give LAYER:P"),
        (["--eliminate", "conv3:many"], "error: --eliminate conv3:many: give LAYER:P"),
        (
            ["--eliminate", "fc9:4"],
            "no layer 'fc9' to eliminate neurons of; the eliminable layers: conv1, conv2, conv3",
        ),
        (["--prune-steps", "2"], "pruning with fine-tuning needs a PyTorch model"),
        (["--size", "8"], "error: --size 8: give the height and width"),
        (["--importance", "l7"], "error: --importance l7: one of l1, l2, lamp, taylor"),
        (["--eliminate", "fc:4"], "layer 'fc' is not one whose neurons can be eliminated"),
        (["--eliminate", "conv3:40"], "keep 40 neurons of layer 'conv3': give a whole number"),
        (["--limit", "5"], "error: a limit is for a folder of images"),
        (["--backend", "golden", "-o", "/dev/null"], "error: /dev/null: cannot write the report"),
    ],
)
def test_bad_input_is_one_error_line(
    digits_float: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra, error
) -> None:
    argv = ["flow", str(digits_float), "--data", "digits", "-o", str(tmp_path / "r"), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and error in err, err


# -- neuron elimination on an MLP ----------------------------------------------------------------


def _digits_mlp() -> onnx.ModelProto:
    """A 64-32-16-10 MLP trained on the digits (sklearn), as Gemm-Relu-Gemm-Relu-Gemm."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    data = load_dataset("digits", input_shape=("N", 64))
    # float64 and one BLAS thread: the same weights on any CPU and run (sklearn trains in
    # the input's dtype)
    with threadpool_limits(limits=1):
        mlp = MLPClassifier((32, 16), random_state=0, max_iter=300).fit(
            data.train.x.astype(np.float64), data.train.y
        )
    nodes, inits, x = [], [], "input"
    for k, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        name = f"fc{k + 1}"
        inits += [numpy_helper.from_array(w.T.astype(np.float32), f"{name}.w"),
                  numpy_helper.from_array(b.astype(np.float32), f"{name}.b")]  # fmt: skip
        nodes.append(helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [f"{name}_out"],
                                      name=name, transB=1))  # fmt: skip
        x = f"{name}_out"
        if k < 2:
            nodes.append(helper.make_node("Relu", [x], [f"{name}_relu"], name=f"{name}_relu"))
            x = f"{name}_relu"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_elimination_stages_on_an_mlp_shrink_macs_and_energy(tmp_path: Path) -> None:
    model = _digits_mlp()
    options = FlowOptions(eliminate=(("fc1", 16), ("fc2", 8)), sweep_all=True)
    flow = Flow(model, "digits", report_dir=tmp_path, options=options)
    results = flow.run()
    assert [r["stage"] for r in results] == [
        "float", "eliminate fc1:16", "eliminate fc2:8", "quantized", "dpu"
    ]  # fmt: skip
    # MACs of a 64-a-b-10 MLP: 64a + ab + 10b
    assert [r["macs"] for r in results[:3]] == [
        64 * 32 + 32 * 16 + 16 * 10, 64 * 16 + 16 * 16 + 16 * 10, 64 * 16 + 16 * 8 + 8 * 10
    ]  # fmt: skip
    for key in ("energy_network_modeled",):
        totals = [r[key]["total"] for r in results[:3]]
        assert totals[0] > totals[1] > totals[2]
    dpu_energy = [r["dpu_modeled"]["energy"]["total"] for r in results[:3]]
    assert dpu_energy[0] > dpu_energy[1] > dpu_energy[2]
    assert set(flow.curves) == {"fc1", "fc2"}  # every eliminable layer (fc3 is the output)
    assert_dpu_stage_within_ties(tmp_path, results[-2], results[-1], flow.data.test)
    assert results[0]["accuracy"] > 0.9  # a trained model, so the curves mean something
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4


# -- pruning with fine-tuning (PyTorch) ----------------------------------------------------------


def test_prune_flow_on_the_digits_torch_twin(digits_float: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="pruning needs torch (pip install 'dpukit[train]')")
    pytest.importorskip("torch_pruning", reason="pruning needs torch-pruning")
    from dpukit.models.digits_torch import digits_torch_from_onnx

    twin = digits_torch_from_onnx(digits_float)
    options = FlowOptions(prune_steps=2, prune_ratio=0.25, finetune_epochs=1)
    flow = Flow(twin, "digits", report_dir=tmp_path, options=options)
    results = flow.run()
    assert [r["stage"] for r in results] == ["float", "prune1", "prune2", "quantized", "dpu"]
    macs = [r["macs"] for r in results[:3]]
    assert macs == [_digits_macs(tmp_path / r["model"]) for r in results[:3]]
    assert macs[0] == 456_704 and macs[0] > macs[1] > macs[2]
    energy = [r["dpu_modeled"]["energy"]["total"] for r in results[:3]]
    assert energy[0] > energy[1] > energy[2]
    # the twin holds the numpy model's weights: its export scores as that model does (to
    # float32 rounding, which could move one near-tie)
    test = flow.data.test
    assert results[0]["accuracy"] == pytest.approx(
        _reference_top1(digits_float, test), abs=1.5 / len(test)
    )
    assert_dpu_stage_within_ties(tmp_path, results[-2], results[-1], test)
    again = Flow(twin, "digits", report_dir=tmp_path, options=options)
    again.run()
    assert again.computed == []
