"""The benchmark's ResNet-18 layer shapes and its SCALE-Sim peer (bench/)."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dpukit.models import zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # run.py's import path
import resnet18_layers as r18  # noqa: E402
import scalesim_peer as peer  # noqa: E402


def _conv_shapes(model: onnx.ModelProto) -> Counter:
    """(in_hw, pad, k, cin, cout, stride, out_hw) of every Conv, from ONNX shape inference."""
    model = onnx.shape_inference.infer_shapes(model)
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    shapes = Counter()
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        cout, cin, k, _ = weights[n.input[1]]
        x, y = dims[n.input[0]], dims[n.output[0]]
        shapes[(x[2], a["pads"][0], k, cin, cout, a["strides"][0], y[2])] += 1
    return shapes


@pytest.mark.parametrize("input_hw", [224, 64])
def test_layers_are_the_distinct_convs_of_resnet18(input_hw: int) -> None:
    layers = r18.resnet18_layers(input_hw)
    convs = [la for la in layers if la.name != "fc"]
    ours = Counter()
    for la in convs:
        ours[(la.in_h, la.pad, la.k, la.cin, la.cout, la.stride, la.out_h)] += la.count
    assert ours == _conv_shapes(zoo.resnet18(input_hw)[0])
    assert len(ours) == len(convs)  # distinct
    fc = layers[-1]
    assert (fc.name, fc.in_h, fc.out_h, fc.cin, fc.cout) == ("fc", 1, 1, 512, 1000)


def test_resnet18_macs() -> None:
    """The layers' MACs, weighted by count, are the network's: 1.81 G at 224x224."""
    total = sum(la.macs * la.count for la in r18.resnet18_layers())
    convs = _conv_shapes(zoo.resnet18()[0])
    expected = sum(n * o * o * k * k * ci * co for (_, _, k, ci, co, _, o), n in convs.items())
    assert total == expected + 512 * 1000
    assert abs(total / 1.81e9 - 1) < 0.005  # torchvision's figure for resnet18


def test_layer_model_is_one_quantized_conv(tmp_path: Path) -> None:
    layer = r18.ConvLayer("t", 9, 9, 1, 3, 5, 7, 2)
    path = r18.build_layer_model(layer, tmp_path)
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 1 and "QuantizeLinear" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = zoo.calibration_data((1, 5, 9, 9), n=1)
    (y,) = session.run(None, {"input": x})
    assert y.shape == (1, 7, layer.out_h, layer.out_w) == (1, 7, 5, 5) and (y >= 0).all()


def test_model_cycles_cover_the_ideal_array(tmp_path: Path) -> None:
    """Our model streams every fold's pixels at least once: never below folds x pixels (it
    may be below SCALE-Sim's closed form, which also counts each fold's preload and drain
    in turn), and within that closed form for this small layer."""
    layer = r18.ConvLayer("t", 12, 12, 1, 3, 32, 40, 1)
    folds = math.ceil(layer.k * layer.k * layer.cin / 16) * math.ceil(layer.cout / 16)
    ours = peer.model_cycles(layer, "pynq-z2", tmp_path)
    assert folds * layer.out_h * layer.out_w <= ours <= peer.closed_form_cycles(layer, 16, 16)


def test_grouped_layers_are_left_out() -> None:
    dw = r18.ConvLayer("dw", 8, 8, 1, 3, 16, 16, 1, groups=16)
    assert peer.scalesim_cycles([dw], 16, 16) == {}


def test_missing_registry_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline = tmp_path / "python"  # stands in for the venv and pip steps, without network
    offline.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n")
    offline.chmod(0o755)
    monkeypatch.setattr(peer, "VENV", tmp_path / "venv")
    monkeypatch.setattr(sys, "executable", str(offline))
    with pytest.raises(peer.ScaleSimError, match="No matching distribution.*by hand run"):
        peer.ensure_venv()
    assert not (tmp_path / "venv" / ".installed").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rows,cols", [(16, 16), (16, 32), (4, 4)])
def test_scalesim_matches_the_closed_form(
    rows: int, cols: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCALE-Sim (stall-free, weight stationary) = our GEMM fold count, minus the one cycle it
    drops by reporting the last cycle's index; stride 2 and a window that does not reach the
    padded edge check the topology's trimmed input."""
    layers = [
        r18.ConvLayer("s1", 10, 10, 1, 3, 24, 20, 1),
        r18.ConvLayer("s2_edge", 16, 16, 1, 3, 16, 16, 2),  # 18 padded, 17 read
        r18.ConvLayer("k7s2", 11, 11, 3, 7, 3, 16, 2),
        r18.ConvLayer("pw_s2", 8, 8, 0, 1, 40, 24, 2),
    ]
    monkeypatch.setattr(peer, "CACHE", tmp_path / "cycles.json")  # really run SCALE-Sim
    got = peer.scalesim_cycles(layers, rows, cols)
    assert peer.scalesim_cycles(layers, rows, cols) == got  # cached now
    for la in layers:
        s_r, s_c = la.k * la.k * la.cin, la.cout
        folds = math.ceil(s_r / rows) * math.ceil(s_c / cols)
        r = got[la.name]
        assert r["total_cycles"] == peer.closed_form_cycles(la, rows, cols) - 1, la.name
        assert r["stall_cycles"] == 0
        assert np.isclose(r["mapping_efficiency_pct"], 100 * s_r * s_c / (folds * rows * cols))
        assert np.isclose(r["overall_util_pct"], 100 * la.macs / (r["total_cycles"] * rows * cols))
