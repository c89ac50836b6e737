"""Bit-packing in the energy model (seed 002's convention): the packing arithmetic by hand,
weight-memory energy scaling with the packed words at both levels while MAC energy stays,
the bench's AlexNet sweep (bench/energy_sweep.py) on a small program, and the AlexNet
builder against seed 001's CaffeNet row.

Expected values are hand arithmetic, counts read from the models and the cycle model's
activity, or the seed's published figures; never outputs of the code under test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

from dpukit.compiler import energy
from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.program import Program
from dpukit.models import zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # run.py's import path
import energy_sweep  # noqa: E402

BITS = (2, 4, 6, 8, 16)
H45 = energy.load_table("horowitz45")  # 32-bit words


@pytest.mark.parametrize(
    ("n", "bits", "word", "words"),
    [
        (10, 6, 64, 1),  # 10 six-bit elements fit one 64-bit word (4 bits left over)
        (11, 6, 64, 2),
        (256, 4, 32, 32),  # 8 a word
        (256, 6, 32, 52),  # 5 a word (2 bits left over, never split): ceil(256 / 5)
        (256, 8, 32, 64),
        (7, 16, 32, 4),  # 2 a word: ceil(7 / 2)
        (9, 2, 16, 2),  # 8 a word
        (3, 16, 8, 6),  # wider than a word: 2 words each
        (5, 8, 8, 5),
        (0, 4, 32, 0),
    ],
)
def test_packed_words_by_hand(n: int, bits: int, word: int, words: int) -> None:
    assert energy.packed_words(n, bits, word) == words
    assert energy.packed_bits(n, bits, word) == words * word


# -- network level ---------------------------------------------------------------------------


def test_network_level_weight_memory_scales_with_packed_words() -> None:
    """conv_variants (float): per layer, DRAM + SRAM weight energy at b bits is the 8-bit
    figure x words(n, b) / words(n, 8) for its n weights (read from the model), 32-bit words;
    MAC and activation energy do not change; the total grows with the bits."""
    model, _ = zoo.conv_variants()
    weights = [
        numpy_helper.to_array(t).size for t in model.graph.initializer if t.name.startswith("w")
    ]
    assert weights == [5 * 3 * 9, 7 * 5 * 25, 13 * 7 * 9, 20 * 13 * 9, 7 * 20]  # zoo's layers
    reports = {b: energy.network_energy(model, H45, weight_bits=b) for b in BITS}
    convs8 = [la for la in reports[8].layers if la.kind == "Conv"]
    for b, r in reports.items():
        convs = [la for la in r.layers if la.kind == "Conv"]
        for n, la, la8 in zip(weights, convs, convs8, strict=True):
            ratio = energy.packed_words(n, b, 32) / energy.packed_words(n, 8, 32)
            memory, memory8 = (x.energy.dram + x.energy.sram_weights for x in (la, la8))
            assert memory == pytest.approx(memory8 * ratio, rel=1e-12)
            assert memory8 == pytest.approx(-(-n // 4) * 32 * (20 + 0.15625) * 1e-12)
        assert r.total.mac == reports[8].total.mac
        assert r.total.sram_activations == reports[8].total.sram_activations
    totals = [reports[b].total.total for b in BITS]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


# -- DPU level -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Program:
    from dpukit.quantize import quantize_model

    model, shape = zoo.conv_variants()
    root = tmp_path_factory.mktemp("packing")
    qdq = quantize_model(model, root / "cv.onnx", zoo.calibration_data(shape, n=4))
    return compile_model(qdq, "pynq-z2")


def test_dpu_level_weight_memories_scale_with_packed_words(program: Program) -> None:
    """pynq-z2 (16x16 int8 array, 64-bit bus), horowitz45 (32-bit words). From the cycle
    model's activity: a WGT entry holds 256 weights, 2048 bits at 8 bits and
    words(256, b, 32) x 32 bits at b bits; the nw = 256 x (WGT entries loaded) weights come
    over the bus floor(64 / b) to a 64-bit word, 64 / floor(64 / b) bits each (counted per
    element, so layers add up to their program) instead of 8. Everything else, MACs and
    activations included, stays."""
    cfg = program.hwconfig()
    (act,) = [
        GoldenDPU(cfg).prepare(sg.payload, program.dram_size).activity
        for sg in program.subgraphs
        if sg.device == "DPU"
    ]
    wgt_entries = act.buffer_reads["wgt"] + act.buffer_writes["wgt"]  # read + written: same pJ
    nw = 256 * act.buffer_writes["wgt"]
    sram_pj, dram_pj = 0.15625e-12, 20e-12
    base = energy.program_energy(program, H45).total
    assert energy.program_energy(program, H45, weight_bits=8).total == base  # the default
    totals = []
    for b in BITS:
        e = energy.program_energy(program, H45, weight_bits=b).total
        wgt_bits = energy.packed_words(256, b, 32) * 32
        assert e.sram_weights - base.sram_weights == pytest.approx(
            wgt_entries * (wgt_bits - 2048) * sram_pj, rel=1e-12, abs=1e-20
        )
        assert wgt_bits / 2048 == energy.packed_words(256, b, 32) / energy.packed_words(256, 8, 32)
        assert e.dram - base.dram == pytest.approx(
            nw * (64 / (64 // b) - 8) * dram_pj, rel=1e-12, abs=1e-20
        )
        assert (e.mac, e.sram_activations, e.logic, e.static) == (
            base.mac,
            base.sram_activations,
            base.logic,
            base.static,
        )
        totals.append(e.total)
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


def test_bench_sweep_agrees_with_program_energy(program: Program) -> None:
    """bench/energy_sweep.py prices activities counted once: per width its total is what
    program_energy gives, its 16-bit breakdown adds up to that total, and its weight
    memories are the DRAM weight and parameter loads plus the WGT/PAR buffers."""
    out = energy_sweep.dpu_sweep(program, H45)
    rows = {r["weight_bits"]: r for r in out["rows"]}
    (sg,) = [sg for sg in program.subgraphs if sg.device == "DPU"]
    # instructions no layer holds (the END): fetched over the bus, 256 bits each, nothing else
    outside = len(sg.payload) // 32 - sum(la["num_instrs"] for la in sg.layers)
    for b in BITS:
        report = energy.program_energy(program, H45, weight_bits=b)
        e = report.total
        assert rows[b]["total_j"] == pytest.approx(e.total, rel=1e-12)
        assert rows[b]["saving_vs_16"] == pytest.approx(1 - e.total / rows[16]["total_j"], abs=1e-4)
        parts = rows[b]["conv_layers"]["total_j"] + rows[b]["fc_layers"]["total_j"]
        layers = sum(la.energy.total for la in report.layers if la.kind != "-")
        assert parts == pytest.approx(layers, rel=1e-12)
        if b != 6:  # 6-bit weights, 10 to a bus word, pack per layer into more words than
            # all layers' weights packed as one stream, which the whole program is charged
            assert parts + outside * 256 * 20e-12 == pytest.approx(e.total, rel=1e-9)
    assert sum(out["breakdown_at_16_j"].values()) == pytest.approx(rows[16]["total_j"])
    cfg = program.hwconfig()
    (act,) = energy_sweep.layer_activities(program)[1]
    loads = act.buffer_writes["wgt"] * 256 * 16 + act.buffer_writes["par"] * 16 * 3 * 32
    assert out["breakdown_at_16_j"]["dram_weights_and_params"] == pytest.approx(loads * 20e-12)
    assert cfg.par_entry_bytes * 8 == 16 * 3 * 32  # PAR: 16 x (bias, multiplier, shift)
    assert out["weight_share_at_16"] == pytest.approx(
        rows[16]["weight_memory_j"] / rows[16]["total_j"], abs=1e-4
    )


# -- AlexNet ---------------------------------------------------------------------------------


@pytest.mark.slow  # ~9 s: 61 M random weights, shape inference on a 244 MB model
def test_alexnet_reproduces_seed001_caffenet_row() -> None:
    """zoo.alexnet has CaffeNet's layer shapes (seed 001's table: 11x11x3x96, 5x5x48x256,
    3x3x256x384, 3x3x192x384, 3x3x192x256, 6x6x256x4096, 4096x4096, 4096x1000), and the
    network-level model on it gives seed 001's "CaffeNet (Original)" row: MAC 3.33 mJ,
    SRAM weights 0.30 mJ, SRAM activations 4.16 uJ, DRAM 39.01 mJ, total 42.64 mJ."""
    model, shape = zoo.alexnet()
    assert shape == (1, 3, 227, 227)
    weights = [
        tuple(t.dims) for t in model.graph.initializer if t.name.startswith("w")
    ]  # Conv [out, in/group, k, k], Gemm [out, in]
    assert weights == [
        (96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3),
        (256, 192, 3, 3), (4096, 9216), (4096, 4096), (1000, 4096),
    ]  # fmt: skip
    n = sum(int(np.prod(d)) for d in weights)
    assert n == 60_954_656  # seed 001: "#Parm 61M"
    r = energy.network_energy(model, H45)
    assert sum(la.macs for la in r.layers) == 724_406_816  # seed 001: "#Edgs 724M"
    assert r.total.mac == pytest.approx(3.33e-3, rel=2e-3)
    assert r.total.sram_weights == pytest.approx(0.30e-3, rel=2e-2)
    assert r.total.sram_activations == pytest.approx(4.16e-6, rel=2e-3)
    assert r.total.dram == pytest.approx(39.01e-3, rel=2e-4)
    assert r.total.total == pytest.approx(42.64e-3, rel=5e-4)
