"""Neuron elimination (seed 001): known-answer cases of exact rank, the LeNet-300-100
acceptance on digits, and bad inputs. References: onnxruntime on the original model, and
layers built with a known number of independent neurons."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.testing import assert_allclose
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from dpukit.errors import ExecutionError, ModelError
from dpukit.models.digits import load_digits_split
from dpukit.optimize.eliminate import (
    choose,
    eliminable_layers,
    eliminate,
    reconstruction,
    select_neurons,
    sweep,
)


def _assert_same_outputs(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float32 rounding: the re-solved weights are float64 least squares stored
    as float32, and the sums of float32 products they enter round at about 1e-7 of the
    largest output (measured: 1.1e-7 for the MLPs, 1.5e-7 for the convolutions)."""
    assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


@dataclass
class Split:  # what sweep() reads of dpukit.optimize.data.Split
    x: np.ndarray
    y: np.ndarray


def _model(nodes, inits: dict[str, np.ndarray], x_dims, out: str, out_dims) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "eliminate_test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_dims])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", *out_dims])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0]


def _init(model: onnx.ModelProto, node_name: str, index: int) -> np.ndarray:
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return inits[node.input[index]]


def _redundant(rng, base: int, total: int):
    """Each of `total` neurons copies base neuron (j % base) scaled by a positive factor, so
    relu/max-pool (positively homogeneous) keep the activations at rank `base` exactly."""
    source = np.arange(total) % base
    scale = rng.uniform(0.5, 2.0, total)
    scale[:base] = 1.0
    return source, scale


# -- 1. known answer: activations of exact rank r ------------------------------------------


def _rank_r_mlp(layout: str, seed: int = 0):
    """x[8] -> 7 hidden (ReLU) -> 4, the hidden activations of rank 3."""
    rng = np.random.default_rng(seed)
    d, r, hidden, out = 8, 3, 7, 4
    source, scale = _redundant(rng, r, hidden)
    w1 = rng.normal(size=(d, r))[:, source] * scale
    b1 = (rng.normal(size=r) * 0.3)[source] * scale
    w2, b2 = rng.normal(size=(hidden, out)), rng.normal(size=out)
    if layout == "gemm":  # fc2 stores its weight transposed, as torch exports Linear
        nodes = [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["a"], name="relu1"),
            helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="fc2", transB=1),
        ]
        inits = {"w1": w1, "b1": b1, "w2": w2.T, "b2": b2}
    else:  # MatMul + Add bias; a next MatMul with a bias Add, or without (one is added)
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
            helper.make_node("Add", ["h0", "b1"], ["h"], name="bias1"),
            helper.make_node("Relu", ["h"], ["a"], name="relu1"),
            helper.make_node(
                "MatMul", ["a", "w2"], ["y0" if layout == "matmul_add" else "y"], name="fc2"
            ),
        ]
        inits = {"w1": w1, "b1": b1, "w2": w2}
        if layout == "matmul_add":
            nodes.append(helper.make_node("Add", ["b2", "y0"], ["y"], name="bias2"))
            inits["b2"] = b2
    return _model(nodes, inits, [d], "y", [out]), source, rng


@pytest.mark.parametrize("layout", ["gemm", "matmul", "matmul_add"])
def test_rank_r_layer_is_reduced_to_r_neurons_without_changing_the_output(layout):
    model, source, rng = _rank_r_mlp(layout)
    calib = rng.normal(size=(64, 8)).astype(np.float32)
    assert eliminable_layers(model) == ["fc1"]
    assert np.linalg.matrix_rank(np.maximum(_run_hidden(model, calib), 0)) == 3

    smaller = eliminate(model, "fc1", 3, calib)

    weight = _init(smaller, "fc1", 1)
    assert weight.shape == (8, 3)
    if layout != "matmul":  # a next bias (Gemm's C, the Add after a MatMul) takes the shift
        assert [n.op_type for n in smaller.graph.node] == [n.op_type for n in model.graph.node]
    # One neuron of each group of copies is kept: the three independent directions.
    kept = [
        int(np.argmin(np.abs(_init(model, "fc1", 1) - col[:, None]).sum(0))) for col in weight.T
    ]
    assert sorted(source[kept]) == [0, 1, 2]
    fresh = rng.normal(size=(200, 8)).astype(np.float32)  # not the calibration data
    _assert_same_outputs(_run(smaller, fresh), _run(model, fresh))
    # One neuron fewer than the rank cannot be exact: the case is not trivially passed.
    assert np.abs(_run(eliminate(model, "fc1", 2, calib), fresh) - _run(model, fresh)).max() > 0.1
    assert model.graph.node[0].name == "fc1" and _init(model, "fc1", 1).shape == (8, 7)  # untouched


def _run_hidden(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["h"], {"x": x})[0]


def test_the_constant_term_carries_an_affine_copy():
    # Neuron 2 is 3 x neuron 0 + 5: exact from the kept neurons 0 and 1 and the constant.
    rng = np.random.default_rng(2)
    z = rng.normal(size=(40, 2))
    a = np.hstack([z, 3 * z[:, :1] + 5])
    t = reconstruction(a, np.array([0, 1]))
    assert_allclose(t, [[1, 0, 3], [0, 1, 0], [0, 0, 5]], atol=1e-12)


def test_select_neurons_picks_independent_columns():
    # Columns 2 and 3 repeat 0 and 1: any two kept must span both directions.
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 2))
    a = np.hstack([base, 2 * base[:, :1], -base[:, 1:]])
    kept = select_neurons(a, 2)
    assert np.linalg.matrix_rank(a[:, kept]) == 2


# -- 2. convolutions: Conv -> Conv, Conv -> BN -> pool -> Flatten -> Gemm ------------------


def _conv_model(kind: str, seed: int = 0):
    """x[2, 6, 6] -> Conv 3x3 (6 channels, 3 independent) -> ... -> next layer."""
    rng = np.random.default_rng(seed)
    base, channels = 3, 6
    source, scale = _redundant(rng, base, channels)
    w = rng.normal(size=(base, 2, 3, 3))
    b = rng.normal(size=base) * 0.3
    conv1 = helper.make_node(
        "Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4
    )
    if kind == "conv":  # a scaled copy of a channel through Relu, into a padded Conv
        inits = {"w1": w[source] * scale[:, None, None, None], "b1": b[source] * scale}
        inits |= {"w2": rng.normal(size=(4, channels, 3, 3)), "b2": rng.normal(size=4)}
        nodes = [
            conv1,
            helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
            helper.make_node(
                "Conv", ["a1", "w2", "b2"], ["y"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4
            ),
        ]
        return _model(nodes, inits, [2, 6, 6], "y", [4, 6, 6]), rng
    # duplicate conv channels, scaled by BatchNormalization's gamma and beta
    mean, var = rng.normal(size=base) * 0.1, rng.uniform(0.5, 1.5, base)
    gamma, beta = rng.uniform(0.5, 1.5, base), rng.normal(size=base) * 0.2
    inits = {"w1": w[source], "b1": b[source], "gamma": gamma[source] * scale}
    inits |= {"beta": beta[source] * scale, "mean": mean[source], "var": var[source]}
    inits |= {"w2": rng.normal(size=(5, channels * 9)), "b2": rng.normal(size=5)}
    nodes = [
        conv1,
        helper.make_node(
            "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn1"
        ),
        helper.make_node("Relu", ["n1"], ["a1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["a1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Flatten", ["p1"], ["f1"], name="flat", axis=1),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, inits, [2, 6, 6], "y", [5]), rng


@pytest.mark.parametrize("kind", ["conv", "flatten_gemm"])
def test_redundant_channels_are_removed_without_changing_the_output(kind):
    model, rng = _conv_model(kind)
    calib = rng.normal(size=(16, 2, 6, 6)).astype(np.float32)
    assert eliminable_layers(model)[0] == "conv1"

    smaller = eliminate(model, "conv1", 3, calib)

    assert _init(smaller, "conv1", 1).shape == (3, 2, 3, 3)
    if kind == "flatten_gemm":
        assert _init(smaller, "fc", 1).shape == (5, 3 * 9)
        assert _init(smaller, "bn1", 1).shape == (3,)
    else:
        assert _init(smaller, "conv2", 1).shape == (4, 3, 3, 3)
    fresh = rng.normal(size=(8, 2, 6, 6)).astype(np.float32)
    _assert_same_outputs(_run(smaller, fresh), _run(model, fresh))


# -- 3. acceptance: LeNet-300-100 on digits ------------------------------------------------


def _lenet_300_100():
    """64 -> 300 -> 100 -> 10 (ReLU) trained on digits by scikit-learn, written as ONNX."""
    x_train, y_train, x_test, y_test = load_digits_split()
    x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    mlp = MLPClassifier((300, 100), random_state=0, max_iter=40, batch_size=64)
    # one BLAS thread: the same float64 sums on every run (and no contention on 2 cores)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x_train.astype(np.float64), y_train)  # sklearn trains in the input's dtype
    nodes, inits, x = [], {}, "x"
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True), start=1):
        nodes.append(
            helper.make_node("Gemm", [x, f"fc{i}.w", f"fc{i}.b"], [f"z{i}"], name=f"fc{i}")
        )
        inits |= {f"fc{i}.w": w, f"fc{i}.b": b}
        x = f"z{i}"
        if i < 3:
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"], name=f"relu{i}"))
            x = f"a{i}"
    model = _model(nodes, inits, [64], x, [10])
    return model, mlp, (x_train, y_train), Split(x_test, y_test)


def test_lenet_300_100_sweep_halves_a_layer_within_two_points():
    model, mlp, (x_train, _), test = _lenet_300_100()
    original = float((_run(model, test.x).argmax(1) == test.y).mean())
    assert (_run(model, test.x).argmax(1) == mlp.predict(test.x)).mean() >= 0.99  # the export
    assert original > 0.95
    assert eliminable_layers(model) == ["fc1", "fc2"]

    curves = {
        "fc1": sweep(model, "fc1", [300, 200, 150, 100, 50, 25], x_train, test),
        "fc2": sweep(model, "fc2", [100, 75, 50, 25, 10], x_train, test),
    }

    for layer, curve in curves.items():
        assert curve[0]["keep"] == curve[0]["neurons"]  # all neurons: the original model
        assert curve[0]["accuracy"] == pytest.approx(original)
        keeps = [p["keep"] for p in curve]
        assert keeps == sorted(keeps, reverse=True)
        for key in ("energy_j_modeled", "macs", "params", "layer_params"):
            values = [p[key] for p in curve]
            assert values == sorted(set(values), reverse=True), (layer, key, values)
    # A reduction that cuts its layer's parameters >= 2x within 2 points of accuracy.
    good = [
        (layer, p)
        for layer, curve in curves.items()
        for p in curve
        if p["layer_params"] * 2 <= curve[0]["layer_params"] and p["accuracy"] >= original - 0.02
    ]
    assert good, {layer: [(p["keep"], p["accuracy"]) for p in c] for layer, c in curves.items()}
    layer, keep = choose(curves, original - 0.02)
    chosen = next(p for p in curves[layer] if p["keep"] == keep)
    assert chosen["accuracy"] >= original - 0.02
    assert chosen["energy_j_modeled"] == min(p["energy_j_modeled"] for _, p in good)
    assert chosen["energy_j_modeled"] < curves[layer][0]["energy_j_modeled"]
    assert set(chosen["energy_breakdown_j_modeled"]) == {
        "mac", "sram_weights", "sram_activations", "dram"
    }  # fmt: skip


def test_sweep_starts_at_the_rank_and_stops_below_the_threshold():
    # Seed 001's Algorithm 1 on the rank-3 MLP, labels its own predictions: exact down to
    # p = 3, then it stops after the first p below the threshold.
    model, _, rng = _rank_r_mlp("gemm")
    calib, x = rng.normal(size=(64, 8)), rng.normal(size=(300, 8))
    labels = _run(model, x).argmax(1)
    curve = sweep(model, "fc1", None, calib, Split(x, labels), min_accuracy=0.999)
    assert [p["keep"] for p in curve] == [7, 5, 4, 3, 2]  # default grid with the rank, 3
    assert [p["accuracy"] for p in curve[:-1]] == [1.0] * 4 and curve[-1]["accuracy"] < 0.999
    assert {p["activation_rank"] for p in curve} == {3}


# -- 4. bad inputs -------------------------------------------------------------------------


def test_bad_layer_names_and_non_eliminable_layers_say_why():
    model, _, rng = _rank_r_mlp("gemm")
    calib = rng.normal(size=(16, 8)).astype(np.float32)
    with pytest.raises(ModelError, match=r"no node named 'fc9'.*eliminated: fc1"):
        eliminate(model, "fc9", 2, calib)
    with pytest.raises(ModelError, match=r"'fc2' \(Gemm\) cannot be eliminated: .*graph output"):
        eliminate(model, "fc2", 2, calib)
    with pytest.raises(ModelError, match=r"'relu1' \(Relu\).*not a Gemm, MatMul or Conv"):
        eliminate(model, "relu1", 2, calib)

    branched = onnx.ModelProto()
    branched.CopyFrom(model)  # the hidden activation also goes straight to an output
    branched.graph.node.append(helper.make_node("Identity", ["a"], ["a_copy"], name="tap"))
    branched.graph.output.append(
        helper.make_tensor_value_info("a_copy", TensorProto.FLOAT, ["N", 7])
    )
    with pytest.raises(ModelError, match=r"'fc1'.*read by 2 nodes"):
        eliminate(branched, "fc1", 2, calib)
    assert eliminable_layers(branched) == []


def test_keep_out_of_range():
    model, _, rng = _rank_r_mlp("gemm")
    calib = rng.normal(size=(16, 8)).astype(np.float32)
    for keep in (0, 8, -1, 2.5, True):
        with pytest.raises(ModelError, match=r"whole number from 1 to its 7 neurons"):
            eliminate(model, "fc1", keep, calib)
    assert _init(eliminate(model, "fc1", 7, calib), "fc1", 1).shape == (8, 7)


def test_calibration_and_evaluation_data_that_do_not_fit():
    model, _, rng = _rank_r_mlp("gemm")
    for bad, why in [
        (np.zeros((16, 7)), r"shape \[16, 7\]; the model's input 'x' is \[N, 8\]"),
        (np.zeros((16, 8, 1)), r"shape \[16, 8, 1\]"),
        (np.zeros((0, 8)), "no samples"),
        (np.full((4, 8), np.nan), "NaN"),
        (np.array([["a"] * 8]), "numbers are needed"),
    ]:
        with pytest.raises(ExecutionError, match=why):
            eliminate(model, "fc1", 3, bad)
    calib = rng.normal(size=(16, 8))
    with pytest.raises(ExecutionError, match=r"eval_split.y has shape \[3\]"):
        sweep(model, "fc1", [3], calib, Split(calib, np.zeros(3, np.int64)))


def test_choose_refuses_an_unreachable_or_misscaled_target():
    curves = {"fc1": [{"keep": 4, "accuracy": 0.9, "energy_j_modeled": 1.0}]}
    assert choose(curves, 0.85) == ("fc1", 4)
    with pytest.raises(ModelError, match=r"no elimination reaches accuracy 0.9500.*0.9000"):
        choose(curves, 0.95)
    with pytest.raises(ModelError, match="fraction from 0 to 1"):
        choose(curves, 95)


def test_weights_that_are_not_constants_are_refused():
    model, _, rng = _rank_r_mlp("matmul")
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "w1"))
    model.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, [8, 7]))
    with pytest.raises(ModelError, match=r"weight 'w1' .* not an initializer"):
        eliminate(model, "fc1", 3, np.zeros((4, 8)))
