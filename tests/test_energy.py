"""The energy model (compiler/energy.py): seed 001's LeNet-5 table reproduced, hand-computed
network- and DPU-level cases, the shipped tables, and `dpukit energy` / `dpukit run`.

Expected values come from the seed's published table or from arithmetic written out here,
never from the model under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dpukit.cli import main
from dpukit.compiler import energy
from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import Activity, GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.errors import EnergyTableError, ModelError
from dpukit.models import zoo
from dpukit.quantize import quantize_model

UJ, NJ, PJ = 1e-6, 1e-9, 1e-12


# -- models --------------------------------------------------------------------------------


def _float_model(nodes, inits, x_shape, y_shape, name="m") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    tensors = [
        numpy_helper.from_array(
            v if isinstance(v, np.ndarray) else rng.standard_normal(v).astype(np.float32), k
        )
        for k, v in inits.items()
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def caffe_lenet5() -> onnx.ModelProto:
    """Caffe's LeNet-5 on 28x28 MNIST, with the layer shapes seed 001 lists: CS1 5x5x1x20,
    CS2 5x5x20x50 (each followed by 2x2 max pooling), FC1 4x4x50x500 (ReLU), FC2 500x10."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[5, 5]),
        n("MaxPool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[5, 5]),
        n("MaxPool", ["c2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["p2"], ["f"]),
        n("Gemm", ["f", "w3", "b3"], ["g1"]),
        n("Relu", ["g1"], ["r1"]),
        n("Gemm", ["r1", "w4", "b4"], ["y"]),
    ]
    shapes = {
        "w1": (20, 1, 5, 5), "b1": (20,), "w2": (50, 20, 5, 5), "b2": (50,),
        "w3": (800, 500), "b3": (500,), "w4": (500, 10), "b4": (10,),
    }  # fmt: skip
    return _float_model(nodes, shapes, [1, 1, 28, 28], [1, 10], "lenet5")


def lenet_300_100() -> onnx.ModelProto:
    n = helper.make_node
    nodes = [
        n("Gemm", ["x", "w1", "b1"], ["h1"]),
        n("Relu", ["h1"], ["r1"]),
        n("Gemm", ["r1", "w2", "b2"], ["h2"]),
        n("Relu", ["h2"], ["r2"]),
        n("Gemm", ["r2", "w3", "b3"], ["y"]),
    ]
    shapes = {
        "w1": (784, 300), "b1": (300,), "w2": (300, 100), "b2": (100,),
        "w3": (100, 10), "b3": (10,),
    }  # fmt: skip
    return _float_model(nodes, shapes, [1, 784], [1, 10], "lenet300100")


def two_layer() -> onnx.ModelProto:
    """Conv 1->2 channels, 3x3, on 4x4 (out 2x2x2), ReLU, Flatten (8), Gemm 8->3."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "wc", "bc"], ["c"], kernel_shape=[3, 3]),
        n("Relu", ["c"], ["r"]),
        n("Flatten", ["r"], ["f"]),
        n("Gemm", ["f", "wg", "bg"], ["y"]),
    ]
    inits = {"wc": (2, 1, 3, 3), "bc": (2,), "wg": (8, 3), "bg": (3,)}
    return _float_model(nodes, inits, [1, 1, 4, 4], [1, 3], "two_layer")


def _table(tmp_path: Path, **values: float) -> energy.EnergyTable:
    """A table with round numbers, written and read back through the loader."""
    units = energy.ENTRY_UNITS
    text = 'name = "hand"\ntitle = "round numbers"\ncalibrated = false\nword_bits = 32\n'
    for key, unit in units.items():
        text += f'\n[energy.{key}]\nvalue = {values.get(key, 0.0)}\nunit = "{unit}"\n'
        text += 'source = "test"\n'
    path = tmp_path / "hand.toml"
    path.write_text(text)
    return energy.load_table(path)


# -- seed 001 ------------------------------------------------------------------------------


def test_seed001_lenet5_original_row() -> None:
    """Seed 001's "Energy Comparison" table, LeNet5 (Original): MAC 10.55 uJ, SRAM weights
    2.15 uJ, SRAM activations 49.74 nJ, DRAM 275.52 uJ, total 288.27 uJ; each within 1 %."""
    r = energy.network_energy(caffe_lenet5(), "horowitz45")
    seed = {
        "mac": 10.55 * UJ,
        "sram_weights": 2.15 * UJ,
        "sram_activations": 49.74 * NJ,
        "dram": 275.52 * UJ,
    }
    for category, want in seed.items():
        assert getattr(r.total, category) == pytest.approx(want, rel=0.01), category
    assert r.total.total == pytest.approx(288.27 * UJ, rel=0.01)
    assert r.total.logic == r.total.static == 0
    # and the seed's "#Edgs 2293K": the MACs
    assert sum(la.macs for la in r.layers) == 2_293_000


def test_seed001_lenet300_100_row() -> None:
    """The same convention on the seed's second network, LeNet300-100 (Original): MAC
    1.22 uJ, SRAM weights 1.33 uJ, SRAM activations 11.94 nJ, DRAM 170.51 uJ. Ours gives
    170.37 uJ of DRAM (266,200 weights x 640 pJ): 0.08 % below the seed, within 1 %."""
    r = energy.network_energy(lenet_300_100(), "horowitz45")
    assert r.total.mac == pytest.approx(1.22 * UJ, rel=0.01)
    assert r.total.sram_weights == pytest.approx(1.33 * UJ, rel=0.01)
    assert r.total.sram_activations == pytest.approx(11.94 * NJ, rel=0.01)
    assert r.total.dram == pytest.approx(170.51 * UJ, rel=0.01)
    assert r.total.total == pytest.approx(172.56 * UJ, rel=0.01)


# -- network level by hand -----------------------------------------------------------------


def test_network_level_two_layers_by_hand(tmp_path: Path) -> None:
    t = _table(tmp_path, mac_fp32=2, mac_int8=0.5, sram_read=0.25, sram_write=0.5, dram=10)
    r = energy.network_energy(two_layer(), t)
    conv, gemm, out = r.layers
    # conv: 2x2x2 outputs x 9 taps = 72 MACs x 2 pJ; 18 float weights = 576 bits read once
    # from SRAM (x 0.25) and DRAM (x 10); its input, 16 floats = 512 bits, written (x 0.5)
    # and read (x 0.25) once. Biases are not charged.
    assert (conv.macs, conv.kind) == (72, "Conv")
    assert conv.energy.mac == pytest.approx(144 * PJ)
    assert conv.energy.sram_weights == pytest.approx(144 * PJ)
    assert conv.energy.dram == pytest.approx(5760 * PJ)
    assert conv.energy.sram_activations == pytest.approx(384 * PJ)
    # gemm: 8 x 3 = 24 MACs, 24 weights = 768 bits, input 8 floats = 256 bits
    assert gemm.macs == 24
    assert gemm.energy.mac == pytest.approx(48 * PJ)
    assert gemm.energy.sram_weights == pytest.approx(192 * PJ)
    assert gemm.energy.dram == pytest.approx(7680 * PJ)
    assert gemm.energy.sram_activations == pytest.approx(192 * PJ)
    # the network's output, 3 floats = 96 bits, written and read once
    assert out.energy.total == pytest.approx(72 * PJ)
    assert r.total.total == pytest.approx((192 + 336 + 648 + 13440) * PJ)
    # units: the JSON is in joules and its layers add up to its total
    doc = r.as_dict()
    assert doc["kind"] == "modeled" and doc["unit"] == "J per inference"
    assert sum(la["total"] for la in doc["layers"]) == pytest.approx(doc["total"]["total"])
    assert doc["total"]["total"] == pytest.approx(14616e-12)


def test_network_level_bit_packing_by_hand(tmp_path: Path) -> None:
    """4-bit weights, 8 to a 32-bit word: conv 18 -> 3 words, gemm 24 -> 3 words; MACs and
    activations unchanged."""
    t = _table(tmp_path, mac_fp32=2, sram_read=0.25, sram_write=0.5, dram=10)
    full = energy.network_energy(two_layer(), t)
    r = energy.network_energy(two_layer(), t, weight_bits=4)
    conv, gemm, _ = r.layers
    assert conv.energy.sram_weights == pytest.approx(3 * 32 * 0.25 * PJ)
    assert conv.energy.dram == pytest.approx(3 * 32 * 10 * PJ)
    assert gemm.energy.dram == pytest.approx(3 * 32 * 10 * PJ)
    assert r.total.mac == full.total.mac
    assert r.total.sram_activations == full.total.sram_activations
    with pytest.raises(EnergyTableError, match="2, 4, 6, 8, 16"):
        energy.network_energy(two_layer(), t, weight_bits=3)


def test_network_level_qdq_model_is_int8(tmp_path: Path) -> None:
    """A QDQ model's weights and activations are stored as int8 (read through its
    DequantizeLinear nodes), four to a 32-bit word, and its MACs are int8 MACs."""
    t = _table(tmp_path, mac_fp32=2, mac_int8=0.5, sram_read=0.25, dram=10)
    model = two_layer()
    qdq = quantize_model(model, tmp_path / "q.onnx", zoo.calibration_data((1, 1, 4, 4)))
    r = energy.network_energy(qdq, t)
    conv, gemm = (la for la in r.layers if la.kind != "output")
    assert conv.energy.mac == pytest.approx(72 * 0.5 * PJ)
    # 18 int8 weights -> 5 words; 24 -> 6 words
    assert conv.energy.dram == pytest.approx(5 * 32 * 10 * PJ)
    assert gemm.energy.dram == pytest.approx(6 * 32 * 10 * PJ)


def test_network_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        energy.network_energy(tmp_path / "nope.onnx")
    n = helper.make_node
    relu_only = _float_model([n("Relu", ["x"], ["y"])], {}, [1, 4], [1, 4])
    with pytest.raises(EnergyTableError, match="nothing the network-level model charges"):
        energy.network_energy(relu_only)


# -- DPU level by hand ---------------------------------------------------------------------


def test_dpu_level_by_hand(tmp_path: Path) -> None:
    cfg = load_config("pynq-z2")  # 16x16 array, 64-bit bus, 100 MHz
    t = _table(
        tmp_path, mac_int8=0.5, sram_read=0.25, sram_write=0.5, dram=10, logic=100, static=0.2
    )
    act = Activity(
        cycles=1000,
        macs=25_600,
        dram_read_beats=50,
        dram_write_beats=10,
        buffer_reads={"inp": 100, "wgt": 4, "acc": 0, "out": 20, "par": 2},
        buffer_writes={"inp": 100, "wgt": 4, "acc": 100, "out": 20, "par": 2},
        instructions={"LOAD": 3, "GEMM": 4, "POST": 1, "STORE": 1, "END": 1},
    )
    e = energy.activity_energy(act, cfg, t)
    assert e.mac == pytest.approx(25_600 * 0.5 * PJ)
    # WGT entries are 16x16 int8 = 2048 bits, PAR entries 16 x 3 int32 = 1536 bits
    assert e.sram_weights == pytest.approx(
        (4 * 2048 * 0.25 + 2 * 1536 * 0.25 + 4 * 2048 * 0.5 + 2 * 1536 * 0.5) * PJ
    )
    # INP 128-bit, ACC 16 x int32 = 512-bit, OUT 128-bit entries; the RTL writes each ACC
    # entry into both of its copies (one per read port)
    reads = 100 * 128 + 20 * 128
    writes = 100 * 128 + 2 * 100 * 512 + 20 * 128
    assert e.sram_activations == pytest.approx((reads * 0.25 + writes * 0.5) * PJ)
    # 60 beats of 64 bits, and 10 instructions of 256 bits fetched
    assert e.dram == pytest.approx((60 * 64 + 10 * 256) * 10 * PJ)
    assert e.logic == pytest.approx(1000 * 100 * PJ)
    assert e.static == pytest.approx(0.2 * 1000 / 100e6)  # 10 us at 0.2 W
    # 4-bit weights: a WGT entry's 256 4-bit lanes take 32 words of 32 bits = 1024 bits,
    # and the 4 x 256 weights loaded from DRAM take 1024 / 16 = 64 words of 64 bits instead
    # of 4 x 256 x 8 bits
    e4 = energy.activity_energy(act, cfg, t, weight_bits=4)
    assert e4.sram_weights == pytest.approx(
        (4 * 1024 * 0.25 + 2 * 1536 * 0.25 + 4 * 1024 * 0.5 + 2 * 1536 * 0.5) * PJ
    )
    assert e4.dram == pytest.approx((60 * 64 + 10 * 256 - 4 * 256 * 8 + 64 * 64) * 10 * PJ)
    assert (e4.mac, e4.sram_activations) == (e.mac, e.sram_activations)
    assert energy.activity_energy(act, cfg, t, weight_bits=8) == e


@pytest.fixture(scope="module")
def mlp_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, shape = zoo.MODELS["mlp"]()
    root = tmp_path_factory.mktemp("energy_mlp")
    qdq = quantize_model(model, root / "mlp.qdq.onnx", zoo.calibration_data(shape))
    path = root / "mlp.dpu"
    compile_model(qdq, "pynq-z2").save(path)
    return path


def test_program_layers_add_up_to_the_run(mlp_program: Path) -> None:
    """Per-layer rows add up to the program's total, which is the energy of the activity
    the golden model reports for a run of one image."""
    from dpukit.host.runner import create_runner

    r = energy.program_energy(mlp_program)
    runner = create_runner(mlp_program, "golden")
    cfg = runner.cfg
    assert r.table.name == energy.table_for_part(cfg.fpga_part)
    x = np.zeros(runner.program.inputs[0].shape, np.float32)
    act = runner.run({runner.program.inputs[0].name: x}).activity
    run_energy = energy.activity_energy(act, cfg, r.table)
    summed = energy.Energy()
    for la in r.layers:
        summed.add(la.energy)
    for c in energy.CATEGORIES:
        assert getattr(summed, c) == pytest.approx(getattr(r.total, c))
        assert getattr(r.total, c) == pytest.approx(getattr(run_energy, c))
    assert r.seconds == pytest.approx(act.cycles / (cfg.clock_mhz * 1e6))


# -- tables --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", energy.available_tables())
def test_shipped_tables_load_with_sources(name: str) -> None:
    t = energy.load_table(name)
    assert t.name == name and set(t.entries) == set(energy.ENTRY_UNITS)
    assert all(len(e.source) > 10 for e in t.entries.values())
    assert not t.calibrated  # shipped tables are estimates until a board calibrates them


def test_shipped_configs_have_their_part_table() -> None:
    for name in ("pynq-z2", "ultra96v2"):
        part = load_config(name).fpga_part
        assert part.startswith(energy.table_for_part(part)), part


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('unit = "pJ/bit"', 'unit = "nJ/bit"', 1), "unit must be 'pJ/bit'"),
        (lambda s: s.replace("value = 10", "value = -10", 1), "finite number >= 0"),
        (lambda s: s + "\n[energy.mac_int3]\nvalue=1\nunit='pJ'\nsource='x'\n", "unknown entries"),
        (lambda s: s.replace("[energy.logic]", "[energy.logic_]"), "no [energy.logic] entry"),
        (lambda s: s.replace("word_bits = 32", "word_bits = 3"), "word_bits"),
        (lambda s: s.replace('source = "test"', 'source = ""', 1), "needs a source"),
        (lambda s: "speed = 3\n" + s, "unknown keys"),
        (lambda s: s[: len(s) // 2] + "[[[", "not a readable TOML"),
    ],
)
def test_bad_table_is_refused(tmp_path: Path, edit, message: str) -> None:
    good = _table(tmp_path, dram=10).origin
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(Path(good).read_text()))
    with pytest.raises(EnergyTableError, match=message.replace("[", r"\[")):
        energy.load_table(bad)


def test_unknown_table_names_the_available() -> None:
    with pytest.raises(EnergyTableError, match="horowitz45"):
        energy.load_table("no-such-table")
    with pytest.raises(EnergyTableError, match="no such energy table file"):
        energy.load_table("/nonexistent/t.toml")


def test_write_table_round_trip(tmp_path: Path) -> None:
    t = energy.load_table("horowitz45")
    energy.write_table(t, tmp_path / "copy.toml")
    back = energy.load_table(tmp_path / "copy.toml")
    assert back.entries == t.entries and back.word_bits == t.word_bits


# -- CLI -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_cli_energy_program(mlp_program: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "e.json"
    assert main(["energy", str(mlp_program), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "modeled energy of one inference, DPU level" in text
    doc = json.loads(out.read_text())
    want = energy.program_energy(mlp_program).total.total
    assert doc["kind"] == "modeled" and doc["total"]["total"] == pytest.approx(want)
    # SI prefixes in the text: the total as the table prints it
    assert "J" in text and "modeled energy per inference" in text


def test_cli_energy_onnx_model_and_bits(tmp_path: Path, capsys) -> None:
    path = tmp_path / "lenet.onnx"
    onnx.save(caffe_lenet5(), path)
    assert main(["energy", str(path)]) == 0
    text = capsys.readouterr().out
    assert "288.3 µJ" in text and "275.5 µJ" in text and "49.74 nJ" in text
    assert (
        main(["energy", str(path), "--weight-bits", "4", "--json", str(tmp_path / "e.json")]) == 0
    )
    doc = json.loads((tmp_path / "e.json").read_text())
    # 4-bit weights, 8 to a 32-bit word, each tensor in whole words: ceil(500 / 8) = 63,
    # 25,000 / 8, 400,000 / 8 and 5,000 / 8 words, 640 pJ each
    words = 63 + 3125 + 50_000 + 625
    assert doc["weight_bits"] == 4 and doc["total"]["dram"] == pytest.approx(words * 640 * PJ)


def test_cli_run_shows_modeled_energy(mlp_program: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.json"
    assert main(["run", str(mlp_program), "--random", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "energy per inference, modeled" in text
    doc = json.loads(out.read_text())["energy_per_image_modeled"]
    assert doc["kind"] == "modeled"
    assert doc["total"] == pytest.approx(energy.program_energy(mlp_program).total.total)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["energy", "model.txt"], "give a .dpu program or an .onnx model"),
        (["energy", "missing.onnx"], "no such file"),
        (["energy", "missing.dpu"], "missing.dpu"),
        (["energy", "{lenet}", "--table", "nope"], "unknown energy table 'nope'"),
        (["energy", "{lenet}", "--weight-bits", "5"], "bit-packing is modeled for"),
        (["energy", "{prog}", "--input-shape", "x=1x4"], "--input-shape is for an ONNX model"),
    ],
)
def test_cli_energy_errors(
    argv: list[str], message: str, mlp_program: Path, tmp_path: Path, capsys
) -> None:
    lenet = tmp_path / "lenet.onnx"
    onnx.save(caffe_lenet5(), lenet)
    argv = [a.format(lenet=lenet, prog=mlp_program) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_dpu_level_of_a_real_program_by_its_events(mlp_program: Path) -> None:
    """The DPU level charges what the golden model's activity counts: check one program's
    MAC and DRAM energy against its activity, counted independently here."""
    from dpukit.compiler.program import Program

    program = Program.load(mlp_program)
    cfg = program.hwconfig()
    t = energy.load_table("horowitz45")
    acts = [
        GoldenDPU(cfg).prepare(sg.payload, program.dram_size).activity
        for sg in program.subgraphs
        if sg.device == "DPU"
    ]
    r = energy.program_energy(program, t)
    macs = sum(a.macs for a in acts)
    assert r.total.mac == pytest.approx(macs * 0.3 * PJ)  # horowitz45's int8 MAC
    beats = sum(a.dram_read_beats + a.dram_write_beats for a in acts)
    fetched = sum(sum(a.instructions.values()) for a in acts)
    assert r.total.dram == pytest.approx((beats * 64 + fetched * 256) * 20 * PJ)


def test_network_level_operand_computed_at_run_time(tmp_path: Path) -> None:
    """x @ transpose(x): no weights; both operands are activations, written and read once."""
    t = _table(tmp_path, mac_fp32=2, sram_read=0.25, sram_write=0.5, dram=10)
    n = helper.make_node
    nodes = [n("Transpose", ["x"], ["xt"], perm=[0, 2, 1]), n("MatMul", ["x", "xt"], ["y"])]
    r = energy.network_energy(_float_model(nodes, {}, [1, 2, 3], [1, 2, 2]), t)
    matmul, out = r.layers
    assert matmul.macs == 2 * 2 * 3  # 4 outputs of 3 products each
    assert matmul.energy.mac == pytest.approx(12 * 2 * PJ)
    assert matmul.energy.sram_weights == matmul.energy.dram == 0
    # x and its transpose, 6 floats each: 12 x 32 bits written (0.5) and read (0.25)
    assert matmul.energy.sram_activations == pytest.approx(12 * 32 * 0.75 * PJ)
    assert out.energy.sram_activations == pytest.approx(4 * 32 * 0.75 * PJ)
