"""Convolutions the DPU reads rearranged, and the conv tiling's token protocol.

- frontend `_stack_kernel_rows`: a few-channel input the host writes (an image) reaches its
  conv with the kernel rows stacked, built by ONNX nodes on the host;
- codegen `_conv_geoms`: a virtual pixel holds a whole kernel row's window (kernel columns
  packed into the array's rows), and strided 1x1 convs load only the pixels they use;
- `load_order` and the stream order the golden model relies on.

References are independent of the code under test: onnxruntime on the QDQ model (each layer
bit-exact except at rounding ties: dpukit.verify, as tests/verified.py applies it) and the closed
form of a stall-free weight-stationary array, which SCALE-Sim reports minus one cycle
(bench/scalesim_peer.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from verified import assert_verified

from dpukit.compiler import isa
from dpukit.compiler.codegen import load_order
from dpukit.compiler.compile import compile_model
from dpukit.compiler.frontend import lower
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.ir import QConv
from dpukit.compiler.isa import Buffer, Engine, Opcode
from dpukit.compiler.timing import token_queues
from dpukit.host import cpu_ops
from dpukit.models import zoo
from dpukit.quantize import quantize_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import resnet18_layers as r18  # noqa: E402
import scalesim_peer as peer  # noqa: E402


def _quantized(model: onnx.ModelProto, shape, tmp_path: Path, activation_type: str) -> Path:
    path = tmp_path / f"{model.graph.name}_{activation_type}.onnx"
    return quantize_model(model, path, zoo.calibration_data(shape), activation_type=activation_type)


def _layers(program) -> list[dict]:
    return [layer for sg in program.subgraphs if sg.device == "DPU" for layer in sg.layers]


def _cpu_ops(program) -> list[str]:
    return [
        n.op_type
        for sg in program.subgraphs
        if sg.device == "CPU"
        for n in cpu_ops.decode(sg.payload).nodes
    ]


def _dpu_streams(program) -> list[list[isa.Instr]]:
    return [isa.from_bytes(sg.payload) for sg in program.subgraphs if sg.device == "DPU"]


def _assert_program_order_keeps_tokens(stream: list[isa.Instr]) -> None:
    """The k-th pop of every token FIFO comes after its k-th push in program order: the
    golden model runs program order, so it only matches the hardware on such streams."""
    col = isa.decode_array(isa.to_bytes(stream))
    pushed: dict[str, list[int]] = {}
    popped: dict[str, list[int]] = {}
    for i, ins in enumerate(stream[:-1]):
        engine = ins.engine if ins.engine is not None else Engine.COMPUTE
        pops, pushes = token_queues(engine, col, i)
        for q in pops:
            popped.setdefault(q, []).append(i)
        for q in pushes:
            pushed.setdefault(q, []).append(i)
    for q, pops in popped.items():
        for k, i in enumerate(pops):
            assert pushed[q][k] < i, f"{q}: pop {k} at {i} precedes its push {pushed[q][k]}"


# --- the input stacked on the host, kernel columns packed ------------------------------------


STACKED = [  # (input shape, first conv's kwargs)
    ((1, 3, 23, 23), {"cout": 20, "k": 7, "stride": 2, "pads": [3, 3, 3, 3]}),  # ResNet's conv1
    ((1, 1, 12, 12), {"cout": 6, "k": 3}),  # a gray image, 'same' padding
    ((1, 4, 11, 13), {"cout": 40, "k": 5, "stride": 2, "pads": [1, 2, 0, 3]}),
]


@pytest.mark.parametrize("activation_type", ["int8", "uint8"])
@pytest.mark.parametrize("config", ["sim-small", "pynq-z2"])
@pytest.mark.parametrize("case", range(len(STACKED)))
def test_few_channel_image_is_stacked_and_exact(
    case: int, config: str, activation_type: str, tmp_path: Path
) -> None:
    shape, first = STACKED[case]
    g = zoo._GraphBuilder(seed=case)
    first = dict(first)
    cout = first.pop("cout")
    x = g.relu(g.conv("input", shape[1], cout, first.pop("k"), **first))
    x = g.relu(g.conv(x, cout, 8, 1))  # two more layers: the check goes layer by layer
    x = g.relu(g.conv(x, 8, 8, 3))
    path = _quantized(g.model(f"stacked{case}", shape, x), shape, tmp_path, activation_type)
    program = compile_model(path, config)
    assert {"Pad", "Slice", "Concat"} <= set(_cpu_ops(program))
    tile = _layers(program)[0]["tile"]
    if config == "pynq-z2":  # (on sim-small's 4 rows packing saves no fold in cases 1, 2)
        assert "kernel columns packed" in tile, tile
    for stream in _dpu_streams(program):
        _assert_program_order_keeps_tokens(stream)
    assert_verified(path, zoo.calibration_data(shape, n=2, seed=11), config)


def test_image_read_by_two_convs(tmp_path: Path) -> None:
    """Each conv gets its own stacked copy (3 and 5 kernel rows), both from one host part."""
    shape = (1, 3, 10, 10)
    g = zoo._GraphBuilder(seed=6)
    a = g.relu(g.conv("input", 3, 8, 3))
    b = g.relu(g.conv("input", 3, 8, 5))
    x = g.relu(g.conv(g.node("Concat", [a, b], axis=1), 16, 8, 1))
    path = _quantized(g.model("two", shape, x), shape, tmp_path, "uint8")
    program = compile_model(path, "pynq-z2")
    assert _cpu_ops(program).count("Pad") == 2
    assert [sg.device for sg in program.subgraphs][:2] == ["CPU", "DPU"]
    assert_verified(path, zoo.calibration_data(shape, n=2, seed=11), "pynq-z2")


def test_resnet18_conv1_folds_fill_the_array(tmp_path: Path) -> None:
    """ResNet-18's first conv (7x7, 3 -> 64 channels): 147 weights per output channel in
    ceil(147/16) = 10 folds of the pynq-z2 array's 16 rows, not one per kernel position."""
    (layer,) = [la for la in r18.resnet18_layers(224) if la.name == "conv1"]
    program = compile_model(r18.build_layer_model(layer, tmp_path), "pynq-z2")
    (stats,) = _layers(program)
    assert "7 kernel columns packed" in stats["tile"]
    assert stats["weight_bytes"] == 4 * 10 * 16 * 16  # 4 output channel blocks


@pytest.mark.parametrize(
    "why,channels,build",
    [
        ("many channels", 5, lambda g: g.conv("input", 5, 8, 3)),
        ("grouped", 4, lambda g: g.conv("input", 4, 8, 3, group=2)),
        ("dilated", 3, lambda g: g.conv("input", 3, 8, 3, dilation=2)),
        ("one kernel row", 3, lambda g: g.conv("input", 3, 8, 1)),
        ("made on the DPU", 5, lambda g: g.conv(g.relu(g.conv("input", 5, 3, 1)), 3, 8, 3)),
    ],
)
def test_stacking_left_out(why: str, channels: int, build, tmp_path: Path) -> None:
    shape = (1, channels, 9, 9)
    g = zoo._GraphBuilder(seed=2)
    model = g.model("plain", shape, g.relu(build(g)))
    low = lower(_quantized(model, shape, tmp_path, "int8"))
    nodes = [op.op_type for dev, op in low.items if dev == "cpu"]
    assert "Pad" not in nodes, why
    assert all(op.source is None for _, op in low.items if isinstance(op, QConv)), why


# --- the conv as the DPU reads it -----------------------------------------------------------


@pytest.mark.parametrize("config", ["sim-small", "pynq-z2"])
def test_packed_columns_over_a_dpu_tensor(config: str, tmp_path: Path) -> None:
    """3 channels made by the DPU, then a 5x5 conv padded only vertically: its kernel columns
    are packed (the windows never reach horizontal padding), padding rows come from LOAD."""
    shape = (1, 6, 12, 16)
    g = zoo._GraphBuilder(seed=4)
    x = g.relu(g.conv("input", 6, 3, 1))
    x = g.relu(g.conv(x, 3, 10, 5, pads=[2, 0, 2, 0]))
    x = g.relu(g.conv(x, 10, 4, 1))
    path = _quantized(g.model("packed", shape, x), shape, tmp_path, "int8")
    program = compile_model(path, config)
    tiles = [layer["tile"] for layer in _layers(program)]
    assert "kernel columns packed" in tiles[1], tiles
    assert_verified(path, zoo.calibration_data(shape, n=2, seed=11), config)


@pytest.mark.parametrize("config", ["sim-small", "pynq-z2"])
def test_strided_pointwise_conv_loads_only_used_pixels(config: str, tmp_path: Path) -> None:
    """A 1x1 stride-2 conv: its INP loads step two rows and two columns at a time, and read
    a quarter of the input."""
    shape = (1, 8, 14, 14)
    g = zoo._GraphBuilder(seed=5)
    x = g.relu(g.conv("input", 8, 24, 1))
    x = g.relu(g.conv(x, 24, 20, 1, stride=2))
    x = g.relu(g.conv(x, 20, 6, 1))
    path = _quantized(g.model("pw_s2", shape, x), shape, tmp_path, "int8")
    program = compile_model(path, config)
    layers = _layers(program)
    assert "rows subsampled, columns subsampled" in layers[1]["tile"]
    (stream,) = _dpu_streams(program)
    layer = layers[1]
    body = stream[layer["first_instr"] : layer["first_instr"] + layer["num_instrs"]]
    inp = [i for i in body if i.op == Opcode.LOAD and i.buffer == Buffer.INP]
    read = sum(i.z_size * i.y_size * i.x_size for i in inp)
    blocks = -(-24 // load_config(config).rows)
    assert read == 7 * 7 * blocks  # every used pixel's channel blocks, once
    assert_verified(path, zoo.calibration_data(shape, n=2, seed=11), config)


def test_zoo_streams_keep_program_order(quantized_zoo) -> None:
    for name in sorted(zoo.MODELS):
        for config in ("sim-small", "pynq-z2"):
            program = compile_model(quantized_zoo(name), config)
            for stream in _dpu_streams(program):
                _assert_program_order_keeps_tokens(stream)


# --- load order ------------------------------------------------------------------------------


def test_load_order_lets_loads_into_long_free_halves_go_first() -> None:
    keys = [("wgt", 0), ("inp", 1), ("par", 0)]
    # step 5: WGT half 0 was read by step 3, INP half 1 by step 2, PAR half 0 never
    order, wait = load_order(5, keys, {("wgt", 0): 3, ("inp", 1): 2})
    assert order == [1, 2, 0] and wait == 2  # INP and PAR first; WGT pops c2l
    # every load early: the last one still pops the token step 3's compute pushed
    order, wait = load_order(5, keys, {})
    assert order == [0, 1, 2] and wait == 2
    # the first two steps keep their order (step 0 pops the barrier with its first load)
    assert load_order(1, keys, {}) == ([0, 1, 2], 0)


# --- cycles against the stall-free closed form (SCALE-Sim's count plus one) -----------------


@pytest.mark.parametrize("name", [la.name for la in r18.resnet18_layers(224)])
def test_resnet18_layer_cycles_near_the_closed_form(name: str, tmp_path) -> None:
    """Each ResNet-18 layer shape compiled on its own: no faster than the array's MAC floor,
    and within 1.2x of SCALE-Sim's closed form for the same array (the bench's target)."""
    (layer,) = [la for la in r18.resnet18_layers(224) if la.name == name]
    ours = peer.model_cycles(layer, "pynq-z2", tmp_path)
    floor = layer.macs / (16 * 16)
    closed = peer.closed_form_cycles(layer, 16, 16)
    assert floor <= ours <= 1.2 * closed, (name, ours, floor, closed, round(ours / closed, 3))
