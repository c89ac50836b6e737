"""Calibration from measurement (compiler/energy.py `calibrate`): synthetic measurements of
real programs, made here from a known table (plus seeded noise), must give that table back,
with standard errors that say how well each entry is determined.

The activity mixes are those of real programs compiled for pynq-z2, chosen to differ: convs
(mixed, 1x1 with no reduction to accumulate, 3x3 with 9x input reuse), a residual block and
an Add chain (the ALU), a MaxPool chain (reads two entries per entry written), and two FC
models (DRAM-bound). Even so they are alike: every MAC comes with SRAM traffic in nearly
fixed proportion, and every bit written to a buffer is read about once, so SRAM reads and
writes are told apart only by input reuse, pooling and the ALU.
Whatever the expected errors are, they are derived here from the activity matrix (the
textbook least-squares covariance), not taken from the code under test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dpukit.compiler import energy
from dpukit.compiler.compile import compile_model
from dpukit.errors import EnergyTableError
from dpukit.models import zoo
from dpukit.quantize import quantize_model

FITTED = energy.FITTED  # mac_int8, sram_read, sram_write, dram, logic
PJ = 1e-12
NOISE = 0.01  # one standard deviation of a measurement, relative to its energy
PART = "xc7z020"  # pynq-z2's part: its table is the prior, and the truth is near it


def _chain(op: str, n: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A 1x1 Conv 16->16 on 16x16, then `n` MaxPool 3x3 (stride 1, pad 1) or `n` Adds of the
    conv's output to the running sum: work for the DPU's ALU, next to few MACs."""
    rng = np.random.default_rng(0)
    shape = (1, 16, 16, 16)
    w = numpy_helper.from_array((rng.standard_normal((16, 16, 1, 1)) / 4).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["t0"], kernel_shape=[1, 1])]
    x = "t0"
    for i in range(1, n + 1):
        if op == "MaxPool":
            node = helper.make_node(
                "MaxPool", [x], [f"t{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
            )
        else:
            node = helper.make_node("Add", [x, "t0"], [f"t{i}"])
        nodes.append(node)
        x = f"t{i}"
    graph = helper.make_graph(
        nodes,
        f"{op.lower()}_chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, list(shape))],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, shape


def _fc(cin: int, cout: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(
        (rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w"], ["y"], transB=1)],
        "fc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, cin])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, (1, cin)


PROGRAMS = {
    "conv_variants": lambda: zoo.conv_variants(),
    "residual_block": lambda: zoo.residual_block(),
    "pools_concat": lambda: zoo.pools_concat(),
    "mlp": lambda: zoo.mlp(),
    "conv1x1_16_16_32": lambda: zoo.single_conv(32, 16, 16, 1),
    "conv3x3_64_64_16": lambda: zoo.single_conv(16, 64, 64, 3, pad=1),
    "maxpool_chain": lambda: _chain("MaxPool", 3),
    "add_chain": lambda: _chain("Add", 4),
    "fc_512_256": lambda: _fc(512, 256),
}
ZOO_FIVE = ["conv_variants", "residual_block", "pools_concat", "mlp", "depthwise_separable"]


@pytest.fixture(scope="module")
def mixes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """{program: {table entry: count}} for one inference of each program on pynq-z2: the
    DPU-level events of its layers (program_energy), summed."""
    root = tmp_path_factory.mktemp("calibration")
    out = {}
    for name, build in {**PROGRAMS, "depthwise_separable": zoo.depthwise_separable}.items():
        model, shape = build()
        qdq = quantize_model(model, root / f"{name}.onnx", zoo.calibration_data(shape, n=4))
        report = energy.program_energy(compile_model(qdq, "pynq-z2"), PART)
        events = energy.Events()
        for layer in report.layers:
            events.merge(layer.events)
        out[name] = events.by_entry()
    return out


def _truth() -> dict[str, float]:
    """The 'true' table, in each entry's unit: pynq-z2's part's estimates x seeded factors
    in [0.5, 2] (a board is not its estimate)."""
    prior = energy.load_table(PART)
    factors = np.random.default_rng(2024).uniform(0.5, 2.0, len(FITTED))
    return {k: prior.entries[k].value * f for k, f in zip(FITTED, factors, strict=True)}


def _matrix(mixes, names) -> np.ndarray:
    return np.array([[mixes[n].get(k, 0.0) for k in FITTED] for n in names])


def _dynamic_j(a: np.ndarray, true: dict[str, float]) -> np.ndarray:
    """Dynamic energy (J) of each row of counts: every entry here is per pJ (per MAC, bit,
    cycle), so counts x values x 1e-12."""
    return a @ np.array([true[k] for k in FITTED]) * PJ


def _expected_sigma(a: np.ndarray, b: np.ndarray, true: dict[str, float]) -> np.ndarray:
    """Relative standard error of each entry when measurement i has noise NOISE x b_i and
    the fit minimises relative residuals: with A_w = A / b (rows), the estimate's
    covariance is NOISE^2 (A_w^T A_w)^-1 = NOISE^2 pinv(A_w) pinv(A_w)^T."""
    p = np.linalg.pinv(a / b[:, None])
    return NOISE * np.sqrt(np.sum(p**2, axis=1)) / (np.array([true[k] for k in FITTED]) * PJ)


def _fitted(cal: energy.Calibration) -> np.ndarray:
    return np.array([cal.table.entries[k].value for k in FITTED])


# -- exact and noisy measurements ------------------------------------------------------------


def test_noise_free_measurements_give_the_table_back(mixes, tmp_path: Path) -> None:
    true = _truth()
    a = _matrix(mixes, PROGRAMS)
    b = _dynamic_j(a, true)
    prior = energy.load_table(PART)
    cal = energy.calibrate(prior, [mixes[n] for n in PROGRAMS], b, name="board-a", static_w=0.25)
    assert cal.fitted == FITTED and cal.kept == ()
    np.testing.assert_allclose(_fitted(cal), [true[k] for k in FITTED], rtol=1e-6)
    assert cal.relative_rms < 1e-9
    assert np.all(np.abs(cal.residuals_j) < 1e-9 * b)
    assert all(cal.relative_error(k) < 1e-6 for k in FITTED) and cal.poorly_determined() == []
    # the calibrated table prices each program's events at what was measured
    for name, measured in zip(PROGRAMS, b, strict=True):
        dynamic = sum(n * cal.table.joules(k) for k, n in mixes[name].items() if k != "static")
        assert dynamic == pytest.approx(measured, rel=1e-6)
    # written and read back: the same values, calibrated, the static power given
    path = tmp_path / "board-a.toml"
    energy.write_table(cal.table, path)
    back = energy.load_table(path)
    assert back.calibrated and back.name == "board-a" and back.word_bits == prior.word_bits
    assert {k: e.value for k, e in back.entries.items()} == {
        **{k: e.value for k, e in prior.entries.items()},
        **{k: cal.table.entries[k].value for k in FITTED},
        "static": 0.25,
    }
    assert all(back.entries[k].source.startswith("calibrated: NNLS fit to 9") for k in FITTED)
    assert back.entries["mac_fp32"] == prior.entries["mac_fp32"]  # not fitted: the prior's
    assert back.label == "board-a, calibrated"


def test_noisy_measurements_land_within_their_standard_errors(mixes) -> None:
    """Each program measured 100 times with 1 % Gaussian noise (seeded): every fitted entry
    lies within 4 of its standard errors, derived here from the activity matrix, of the
    truth; the standard errors calibrate reports agree with those derived here; the
    relative rms residual is the noise drawn. (When this was written the derived standard
    errors were 0.2 % (DRAM), 0.8 % (logic), 1.6 % (MAC), 5 % (SRAM writes) and 9 % (SRAM
    reads); measured once each instead of 100 times, ten times those.)"""
    true = _truth()
    names = [n for n in PROGRAMS for _ in range(100)]
    a = _matrix(mixes, names)
    b_true = _dynamic_j(a, true)
    noise = NOISE * np.random.default_rng(7).standard_normal(len(b_true))
    b = b_true * (1 + noise)
    cal = energy.calibrate(energy.load_table(PART), [mixes[n] for n in names], b)
    sigma = _expected_sigma(a, b_true, true)
    err = _fitted(cal) / np.array([true[k] for k in FITTED]) - 1
    assert np.all(np.abs(err) <= 4 * sigma), (err, sigma)
    reported = np.array([cal.relative_error(k) for k in FITTED])
    np.testing.assert_allclose(reported, sigma, rtol=0.15)
    # 900 residuals, 5 entries fitted: the residuals are the noise, less a 5/900 part
    assert cal.relative_rms == pytest.approx(np.sqrt(np.mean(noise**2)), rel=0.02)
    assert cal.poorly_determined(limit=0.2) == []


def test_reported_standard_errors_match_the_spread_of_repeated_fits(mixes) -> None:
    """200 fits to independent noise draws (seeded), each program measured 50 times: the
    fits scatter about the truth as the reported standard errors say (the spread of 200
    draws is known to ~5 %), and their mean is the truth (no bias beyond 4 sigma / sqrt(200))."""
    true = _truth()
    names = [n for n in PROGRAMS for _ in range(50)]
    a = _matrix(mixes, names)
    b_true = _dynamic_j(a, true)
    events = [mixes[n] for n in names]
    prior = energy.load_table(PART)
    rng = np.random.default_rng(11)
    fits, reported = [], []
    for _ in range(200):
        b = b_true * (1 + NOISE * rng.standard_normal(len(b_true)))
        cal = energy.calibrate(prior, events, b)
        fits.append(_fitted(cal))
        reported.append([cal.relative_error(k) for k in FITTED])
    rel = np.array(fits) / np.array([true[k] for k in FITTED]) - 1
    sigma = _expected_sigma(a, b_true, true)
    assert sigma.max() < 0.2  # no fit near 0, where non-negativity would clip the spread
    np.testing.assert_allclose(rel.std(axis=0), sigma, rtol=0.25)
    np.testing.assert_allclose(np.median(reported, axis=0), sigma, rtol=0.1)
    assert np.all(np.abs(rel.mean(axis=0)) <= 4 * sigma / math.sqrt(200))


def test_the_zoo_alone_cannot_calibrate(mixes) -> None:
    """The compiler-test zoo's five models, measured once each at 1 % noise: as many
    measurements as unknowns, and mixes far more alike than the nine programs above.
    calibrate reports the weighted, column-scaled activity matrix's condition number
    (computed here too), cannot tell the noise (standard errors unknown: every entry poorly
    determined). Derived here: at 1 % noise the SRAM entries would be off by more than
    their own size, DRAM (most of the energy) by far less."""
    true = _truth()
    a = _matrix(mixes, ZOO_FIVE)
    b = _dynamic_j(a, true) * (1 + NOISE * np.random.default_rng(3).standard_normal(5))
    cal = energy.calibrate(energy.load_table(PART), [mixes[n] for n in ZOO_FIVE], b)
    w = a / b[:, None]
    assert cal.condition == pytest.approx(np.linalg.cond(w / np.linalg.norm(w, axis=0)))
    nine = _matrix(mixes, PROGRAMS) / _dynamic_j(_matrix(mixes, PROGRAMS), true)[:, None]
    assert cal.condition > 3 * np.linalg.cond(nine / np.linalg.norm(nine, axis=0))
    assert all(math.isnan(cal.std_error[k]) for k in FITTED)
    assert cal.poorly_determined() == list(FITTED)
    doc = cal.as_dict()
    assert doc["std_error"] == dict.fromkeys(FITTED) and json.loads(json.dumps(doc)) == doc
    sigma = dict(zip(FITTED, _expected_sigma(a, _dynamic_j(a, true), true), strict=True))
    assert sigma["sram_read"] > 1 and sigma["sram_write"] > 1 and sigma["dram"] < 0.5


def test_entries_no_program_exercises_keep_the_prior() -> None:
    """Events that count only MACs and DRAM bits fit those two; the rest stay the prior's."""
    prior = energy.load_table(PART)
    events = [{"mac_int8": 1e6, "dram": 1e4}, {"mac_int8": 1e5, "dram": 2e5}, {"dram": 1e3}]
    b = [(m * 0.5 + d * 30) * PJ for m, d in ((1e6, 1e4), (1e5, 2e5), (0, 1e3))]
    cal = energy.calibrate(prior, events, b)
    assert cal.fitted == ("mac_int8", "dram") and cal.kept == ("sram_read", "sram_write", "logic")
    assert cal.table.entries["mac_int8"].value == pytest.approx(0.5)
    assert cal.table.entries["dram"].value == pytest.approx(30)
    assert cal.table.entries["logic"] == prior.entries["logic"]


# -- what calibrate refuses --------------------------------------------------------------------


def test_fewer_measurements_than_unknowns(mixes) -> None:
    names = list(PROGRAMS)[:4]
    b = _dynamic_j(_matrix(mixes, names), _truth())
    with pytest.raises(EnergyTableError, match="4 measurements cannot determine 5 energies"):
        energy.calibrate(energy.load_table(PART), [mixes[n] for n in names], b)


def test_collinear_mixes(mixes) -> None:
    """Nine measurements, but one program is the same program twice over (its counts x2)
    and three more are measured twice: five distinct mixes, four independent."""
    first = mixes["conv_variants"]
    names = ["residual_block", "mlp", "maxpool_chain"]
    events = [first, {k: 2 * n for k, n in first.items()}] + [mixes[n] for n in names] * 2
    b = _dynamic_j(_matrix({"x": first}, ["x"]), _truth())[0]
    others = _dynamic_j(_matrix(mixes, names), _truth())
    measured = [b, 2 * b, *others, *others]
    with pytest.raises(EnergyTableError, match="not independent"):
        energy.calibrate(energy.load_table(PART), events, measured)


@pytest.mark.parametrize(
    ("measured", "message"),
    [
        ([1e-6, -1e-7, 1e-6, 1e-6, 1e-6, 1e-6], r"measurement 1 is -1e-07 J: .* finite and > 0"),
        ([1e-6, 1e-6, math.nan, 1e-6, 1e-6, 1e-6], "measurement 2 is nan J"),
        ([1e-6, 1e-6, 1e-6, 1e-6, 1e-6, math.inf], "measurement 5 is inf J"),
        ([1e-6, 0.0, 1e-6, 1e-6, 1e-6, 1e-6], "measurement 1 is 0 J"),
        ([1e-6] * 5, "6 activity records but 5 measurements"),
    ],
)
def test_bad_measurements(mixes, measured, message: str) -> None:
    events = [mixes[n] for n in list(PROGRAMS)[:6]]
    with pytest.raises(EnergyTableError, match=message):
        energy.calibrate(energy.load_table(PART), events, measured)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        # a 16-bit DPU's MACs: not an entry the fit determines, so not silently dropped
        ([{"mac_int16": 5.0, "dram": 3.0}] * 2, "record 0 counts mac_int16, which the fit"),
        ([{"dram": 3.0}, {"sram_reads": 1.0, "dram": 1.0}], "record 1 counts sram_reads"),
        # only static time: nothing to fit (scipy's nnls aborted the process on this)
        ([{"static": 1e-3}] * 3, "no activity record counts any of mac_int8"),
        ([{"dram": 3.0}, {"dram": -1.0}], "record 1: event counts must be finite and >= 0"),
    ],
)
def test_bad_activity_records(events, message: str) -> None:
    with pytest.raises(EnergyTableError, match=message):
        energy.calibrate(energy.load_table(PART), events, [1e-9] * len(events))


def test_bad_static_power(mixes) -> None:
    names = list(PROGRAMS)
    b = _dynamic_j(_matrix(mixes, names), _truth())
    with pytest.raises(EnergyTableError, match="static power nan W"):
        energy.calibrate(energy.load_table(PART), [mixes[n] for n in names], b, static_w=math.nan)
