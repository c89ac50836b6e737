"""Bad `.dpu` files end in one `error:` line naming the file and the culprit (tests/bad_inputs.py).

The checksum detects corruption, not nonsense: most cases here rewrite the JSON header of a
real compiled program (the mlp on sim-small) and recompute the checksum, so only the
header's validation can catch them; others replace a subgraph's payload through `Program`
(valid file, wrong contents), or make the file itself unreadable.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import assert_user_error, cli

from dpukit.compiler.compile import compile_model
from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.program import FORMAT_VERSION, MAGIC, Program
from dpukit.host import cpu_ops


@pytest.fixture(scope="module")
def program(quantized_zoo) -> Program:
    """The mlp on sim-small: a CPU subgraph (quantize), a DPU subgraph, a CPU one (dequantize)."""
    return compile_model(quantized_zoo("mlp", True, "int8"), "sim-small")


@pytest.fixture(scope="module")
def blob(program: Program) -> bytes:
    return program.to_bytes()


def _split(blob: bytes) -> tuple[dict, bytes]:
    """The header and the payload of a `.dpu` file."""
    head_len = struct.unpack_from("<I", blob, 12)[0]
    return json.loads(blob[16 : 16 + head_len]), blob[16 + head_len : -32]


def _assemble(head: bytes, payload: bytes, head_len: int | None = None) -> bytes:
    """A `.dpu` file with this header text and payload and a valid checksum."""
    size = len(head) if head_len is None else head_len
    body = MAGIC + struct.pack("<II", FORMAT_VERSION, size) + head + payload
    return body + hashlib.sha256(body).digest()


def test_reassembling_changes_nothing(blob: bytes) -> None:
    """The crafting helpers below rewrite only what a case edits."""
    header, payload = _split(blob)
    assert _assemble(json.dumps(header, sort_keys=True).encode(), payload) == blob


# --- crafted headers: each edit mutates the parsed header of the real program ---------------


def _dpu(h: dict) -> dict:
    return next(s for s in h["subgraphs"] if s["device"] == "DPU")


def _last_tensor(h: dict) -> str:
    return max(h["dram_offsets"], key=h["dram_offsets"].get)


def _refingerprint(h: dict) -> None:
    """Make the header's fingerprint that of its (edited) config, so only the config's own
    validation can object."""
    h["fingerprint"] = HwConfig(**h["config"]).fingerprint


def _set_config(key: str, value: object) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        h["config"][key] = value
        _refingerprint(h)

    return edit


def _locate(h: dict, path: str) -> tuple[dict | list, str | int]:
    """The container and key of a field by its dotted path (`sections.const`); a `{dpu}` step
    is the DPU subgraph, `{last}` the last tensor in DRAM."""
    *steps, key = path.split(".")

    def index(node: dict | list, step: str) -> str | int:
        if step == "{last}":
            return _last_tensor(h)
        return int(step) if isinstance(node, list) else step

    node = h
    for step in steps:
        node = _dpu(h) if step == "{dpu}" else node[index(node, step)]
    return node, index(node, key)


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        node, key = _locate(h, path)
        node[key] = value

    return edit


def _delete(path: str) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        node, key = _locate(h, path)
        del node[key]

    return edit


def _const_base(delta: int) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        h["const_base"] += delta

    return edit


def _section_past_payload(h: dict) -> None:
    h["sections"]["subgraph.2"][0] = 10**12


def _offset_into_constants(h: dict) -> None:
    h["dram_offsets"][_last_tensor(h)] = h["const_base"]


def _window_past_address_space(h: dict) -> None:
    """A tensor high enough that the (consistent) constants lie beyond 2**32."""
    last = _last_tensor(h)
    h["dram_offsets"][last] = 1 << 32
    h["const_base"] = (1 << 32) + 64 + 64  # its 10 bytes and SLACK, aligned


def _window_of_exabytes(h: dict) -> None:
    """Consistent for a 64-bit bus, and more memory than any host has."""
    h["config"]["axi_addr_bits"] = 64
    _refingerprint(h)
    h["dram_offsets"][_last_tensor(h)] = 1 << 62
    h["const_base"] = (1 << 62) + 128


def _reads_unknown(h: dict) -> None:
    _dpu(h)["inputs"] = ["no_such_tensor"]


def _reads_later_output(h: dict) -> None:
    """The DPU subgraph reads what the CPU subgraph after it writes."""
    _dpu(h)["inputs"] = [h["subgraphs"][2]["outputs"][0]]


def _swap_sections(h: dict) -> None:
    """The CPU and DPU subgraphs swap payloads: the CPU one reads instructions as its graph."""
    cpu, dpu = h["subgraphs"][0], _dpu(h)
    cpu["section"], dpu["section"] = dpu["section"], cpu["section"]


def _shared_section(h: dict) -> None:
    h["subgraphs"][2]["section"] = h["subgraphs"][0]["section"]


def _overlapping_sections(h: dict) -> None:
    h["sections"][_dpu(h)["section"]][0] -= 8


def _unknown_key(h: dict) -> None:
    h["tensors"][_last_tensor(h)]["strides"] = [1, 1]


def _output_type(h: dict) -> None:
    h["outputs"][0]["shape"] = [1, 11]


def _output_dtype_of_dpu_tensor(h: dict) -> None:
    """The graph output (float32) is declared to be the DPU's output tensor (int8)."""
    h["outputs"][0]["name"] = _dpu(h)["outputs"][0]


def _duplicate_writer(h: dict) -> None:
    h["subgraphs"][2]["outputs"] = list(h["subgraphs"][0]["outputs"])


def _fingerprint_of_other_config(h: dict) -> None:
    h["config"]["rows"] = 8  # the fingerprint still claims the 4x4 array


HEADER_CASES: list[tuple[str, Callable[[dict], None], tuple[str, ...]]] = [
    # missing keys, wrong types
    ("no-const-base", _delete("const_base"), ("const_base",)),
    ("no-tensors", _delete("tensors"), ("tensors",)),
    ("no-layer-kind", _delete("subgraphs.{dpu}.layers.0.kind"), ("layers[0]", "kind")),
    ("const-base-string", _set("const_base", "576"), ("const_base",)),
    ("inputs-not-list", _set("inputs", {"input": [1, 64]}), ("inputs",)),
    ("tensor-not-object", _set("tensors.{last}", 7), ("tensors.",)),
    ("layer-macs-string", _set("subgraphs.{dpu}.layers.0.macs", "many"), ("macs",)),
    (
        "instructions-not-counts",
        _set("subgraphs.{dpu}.layers.0.instructions", {"GEMM": -1}),
        ("instructions",),
    ),
    ("device-gpu", _set("subgraphs.1.device", "GPU"), ("subgraphs[1].device",)),
    ("spec-dtype-object", _set("inputs.0.dtype", "object"), ("inputs[0].dtype",)),
    ("spec-dtype-garbage", _set("inputs.0.dtype", "float99"), ("inputs[0].dtype",)),
    ("unknown-key", _unknown_key, ("strides",)),
    ("format-version", _set("format_version", 3), ("format_version",)),
    ("kind-unknown", _set("subgraphs.0.kind", "tflite"), ("subgraphs[0].kind",)),
    ("kind-of-the-other-device", _set("subgraphs.1.kind", "numpy"), ("subgraphs[1].kind",)),
    ("cpu-ops-empty", _set("subgraphs.0.ops", []), ("subgraphs[0].ops",)),
    ("cpu-ops-not-its-graphs", _set("subgraphs.2.ops", ["Softmax"]), ("subgraph_2_cpu", "Softmax")),
    ("numpy-kind-unsupported", _set("subgraphs.0.unsupported", ["Erf"]), ("unsupported",)),
    ("preprocess-a-list", _set("preprocess", [0.5]), ("preprocess",)),
    ("preprocess-nested", _set("preprocess", {"mean": [[0.5]]}), ("preprocess", "mean")),
    # negative or huge numbers
    ("const-base-negative", _set("const_base", -64), ("const_base",)),
    ("const-base-huge", _set("const_base", 1 << 40), ("const_base",)),
    ("offset-negative", _set("dram_offsets.{last}", -64), ("dram_offsets.",)),
    ("offset-unaligned", _set("dram_offsets.{last}", 449), ("multiple of 64",)),
    ("shape-negative", _set("inputs.0.shape", [1, -64]), ("inputs[0].shape[1]",)),
    ("shape-zero-dims", _set("outputs.0.shape", []), ("outputs[0].shape",)),
    ("scale-nan", _set("tensors.{last}.scale", float("nan")), ("scale",)),
    ("scale-negative", _set("tensors.{last}.scale", -0.5), ("scale",)),
    ("zero-point-300", _set("tensors.{last}.zero_point", 300), ("zero_point",)),
    ("onnx-dtype-float", _set("tensors.{last}.onnx_dtype", "float32"), ("onnx_dtype",)),
    ("hwc-of-other-size", _set("tensors.{last}.hwc", [1, 1, 1 << 40]), ("differ in size",)),
    ("first-instr-past-stream", _set("subgraphs.{dpu}.layers.2.first_instr", 10**6), ("gemm_13",)),
    ("num-instrs-negative", _set("subgraphs.{dpu}.layers.0.num_instrs", -1), ("num_instrs",)),
    ("section-past-payload", _section_past_payload, ("subgraph.2",)),
    # inconsistent: window, sections, names, types
    ("const-base-moved-up", _const_base(+64), ("const_base",)),
    ("const-base-moved-down", _const_base(-64), ("const_base",)),
    ("tensor-in-constants", _offset_into_constants, ("below the constants",)),
    ("window-past-address-space", _window_past_address_space, ("data window", "32-bit")),
    ("window-of-exabytes", _window_of_exabytes, ("data window", "does not fit")),
    ("overlapping-sections", _overlapping_sections, ("overlaps",)),
    ("swapped-sections", _swap_sections, ("subgraph_0_cpu", "numpy graph")),
    ("shared-section", _shared_section, ("subgraph_2_cpu", "section")),
    ("reads-unknown-tensor", _reads_unknown, ("no_such_tensor",)),
    ("reads-a-later-output", _reads_later_output, ("subgraph_1_dpu", "gemm_13")),
    ("writes-twice", _duplicate_writer, ("subgraph_2_cpu", "already written")),
    ("output-unknown", _set("outputs.0.name", "nope"), ("nope",)),
    ("output-shape-not-the-cpu-models", _output_type, ("subgraph_2_cpu", "gemm_13")),
    (
        "output-typed-twice",
        _output_dtype_of_dpu_tensor,
        ("gemm_13_QuantizeLinear_Output", "float32"),
    ),
    # the config: validated as a config file is, and its fingerprint re-derived
    ("config-rows-string", _set_config("rows", "4"), ("config", "rows")),
    ("config-rows-huge", _set_config("rows", 10**9), ("config", "rows")),
    ("config-name-traversal", _set_config("name", "../../../x"), ("config", "name")),
    ("config-unknown-field", _set("config.secret", 1), ("config", "secret")),
    ("config-not-object", _set("config", "pynq-z2"), ("config",)),
    ("config-of-other-fingerprint", _fingerprint_of_other_config, ("fingerprint",)),
    ("fingerprint-wrong", _set("fingerprint", "0123456789abcdef"), ("fingerprint",)),
]


def _write(
    tmp_path: Path, header: dict | bytes, payload: bytes, head_len: int | None = None
) -> Path:
    head = header if isinstance(header, bytes) else json.dumps(header, sort_keys=True).encode()
    path = tmp_path / "crafted.dpu"
    path.write_bytes(_assemble(head, payload, head_len))
    return path


@pytest.mark.parametrize(
    "edit, mentions", [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES]
)
def test_crafted_header(
    blob: bytes, tmp_path: Path, edit: Callable[[dict], None], mentions: tuple[str, ...]
) -> None:
    header, payload = _split(blob)
    edit(header)
    bad = _write(tmp_path, header, payload)
    assert_user_error(cli("run", bad), bad, *mentions)


def _huge_int(head: bytes) -> bytes:
    return re.sub(rb'"const_base": \d+', b'"const_base": ' + b"9" * 5000, head)


RAW_HEADERS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("deep-nesting", lambda head: b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ("cut-in-half", lambda head: head[: len(head) // 2], "not valid JSON"),
    ("not-utf8", lambda head: head.replace(b'"sim-small"', b'"sim-\xff"'), "not valid JSON"),
    ("int-of-5000-digits", _huge_int, "not valid JSON"),
    ("a-list", lambda head: b"[]", "the header must be an object"),
]


@pytest.mark.parametrize(
    "rewrite, mention", [c[1:] for c in RAW_HEADERS], ids=[c[0] for c in RAW_HEADERS]
)
def test_malformed_header_text(
    blob: bytes, tmp_path: Path, rewrite: Callable[[bytes], bytes], mention: str
) -> None:
    header, payload = _split(blob)
    head = rewrite(json.dumps(header, sort_keys=True).encode())
    bad = _write(tmp_path, head, payload)
    assert_user_error(cli("inspect", bad), bad, mention)


@pytest.mark.parametrize("head_len", [1 << 31, 0])
def test_header_length_field(blob: bytes, tmp_path: Path, head_len: int) -> None:
    """A header length past the file, or one that cuts the header off."""
    header, payload = _split(blob)
    bad = _write(tmp_path, header, payload, head_len)
    assert_user_error(cli("inspect", bad), bad, "header")


# --- valid files whose subgraph payloads are wrong ----------------------------------------


def _cpu_graph(program: Program, k: int) -> cpu_ops.CpuGraph:
    return cpu_ops.decode(program.subgraphs[k].payload)


def _garbage(program: Program, k: int) -> bytes:
    return np.random.default_rng(k).bytes(len(program.subgraphs[k].payload))


def _unknown_op(program: Program, k: int) -> bytes:
    graph = _cpu_graph(program, k)
    graph.nodes[0].op_type = "FooBar"
    return cpu_ops.encode(graph)


def _renamed_input(program: Program, k: int) -> bytes:
    graph = _cpu_graph(program, k)
    graph.inputs[0] = dataclasses.replace(graph.inputs[0], name="image")
    graph.nodes[0].inputs[0] = "image"
    return cpu_ops.encode(graph)


def _uint8_output(program: Program, k: int) -> bytes:
    """QuantizeLinear to uint8, where the DPU tensor it feeds is int8."""
    graph = _cpu_graph(program, k)
    zp = next(name for name in graph.constants if name.endswith("zero_point"))
    graph.constants[zp] = graph.constants[zp].astype(np.uint8)
    graph.outputs[0] = dataclasses.replace(graph.outputs[0], dtype="uint8")
    return cpu_ops.encode(graph)


def _gather_out_of_range(program: Program, k: int) -> bytes:
    """Loads and type-checks, but fails on every run: it gathers column 1000 of 64."""
    graph = _cpu_graph(program, k)
    x = graph.inputs[0].name
    idx = np.arange(64)
    idx[5] = 1000
    graph.constants["idx"] = idx
    for node in graph.nodes:
        node.inputs[:] = ["gathered" if i == x else i for i in node.inputs]
    graph.nodes.insert(0, cpu_ops.Node("Gather", "gather", [x, "idx"], ["gathered"], {"axis": 1}))
    return cpu_ops.encode(graph)


PAYLOADS: list[tuple[str, int, Callable[[Program, int], bytes], tuple[str, ...]]] = [
    ("cpu-garbage", 0, _garbage, ("subgraph_0_cpu", "numpy graph")),
    ("cpu-unknown-op", 0, _unknown_op, ("subgraph_0_cpu", "FooBar")),
    ("cpu-other-input-name", 0, _renamed_input, ("subgraph_0_cpu", "image")),
    ("cpu-other-output-dtype", 0, _uint8_output, ("subgraph_0_cpu", "uint8", "int8")),
    ("cpu-fails-when-run", 0, _gather_out_of_range, ("subgraph_0_cpu",)),
    ("dpu-garbage", 1, _garbage, ("subgraph_1_dpu", "instruction")),
    ("dpu-cut-mid-instruction", 1, lambda p, k: p.subgraphs[k].payload[:-3], ("subgraph_1_dpu",)),
]


@pytest.mark.parametrize(
    "k, payload, mentions", [c[1:] for c in PAYLOADS], ids=[c[0] for c in PAYLOADS]
)
def test_wrong_subgraph_payload(
    program: Program,
    tmp_path: Path,
    k: int,
    payload: Callable[[Program, int], bytes],
    mentions: tuple[str, ...],
) -> None:
    bad_program = copy.deepcopy(program)
    bad_program.subgraphs[k].payload = payload(program, k)
    if payload is _gather_out_of_range:
        bad_program.subgraphs[k].ops.insert(0, "Gather")
    bad = tmp_path / "payload.dpu"
    bad_program.save(bad)
    assert_user_error(cli("run", bad), bad, *mentions)


def test_inspect_of_a_cpu_subgraph_that_is_damaged(program: Program, tmp_path: Path) -> None:
    bad_program = copy.deepcopy(program)
    bad_program.subgraphs[0].payload = _garbage(program, 0)
    bad = tmp_path / "garbage_cpu.dpu"
    bad_program.save(bad)
    assert_user_error(cli("inspect", bad), bad, "subgraph_0_cpu", "numpy graph")


def _as_onnx_kind(program: Program, k: int, payload: bytes) -> Program:
    """The program with CPU subgraph k kept as ONNX (an op the executor lacks)."""
    crafted = copy.deepcopy(program)
    sg = crafted.subgraphs[k]
    sg.kind, sg.payload, sg.unsupported = "onnx", payload, ["Erf: an op the executor lacks"]
    return crafted


@pytest.mark.parametrize("command, mention", [("run", "onnxruntime"), ("inspect", "not an ONNX")])
def test_onnx_subgraph_that_is_no_onnx(program: Program, tmp_path: Path, command, mention) -> None:
    bad = tmp_path / "garbage_onnx.dpu"
    _as_onnx_kind(program, 2, _garbage(program, 2)).save(bad)
    assert_user_error(cli(command, bad), bad, "subgraph_2_cpu", mention)


# --- the file itself ----------------------------------------------------------------------


def _directory(path: Path) -> None:
    path.mkdir()


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opening it would wait for a writer forever


def _proc_mem(path: Path) -> None:
    """Reading /proc/self/mem at offset 0 fails with EIO, even for root."""
    path.symlink_to("/proc/self/mem")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


FILES: list[tuple[str, Callable[[Path], None], str]] = [
    ("directory", _directory, "not a regular file"),
    ("fifo", _fifo, "not a regular file"),
    ("unreadable", _proc_mem, "cannot read"),
    ("empty", _empty, "not a dpukit program"),
    ("dangling-symlink", lambda path: path.symlink_to(path.with_name("gone.dpu")), "no such"),
]


@pytest.mark.parametrize("command", ["run", "inspect"])
@pytest.mark.parametrize("make, mention", [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_program_file_itself(
    tmp_path: Path, command: str, make: Callable[[Path], None], mention: str
) -> None:
    if make is _proc_mem and not Path("/proc/self/mem").exists():
        pytest.skip("no /proc/self/mem on this system")
    path = tmp_path / "x.dpu"
    make(path)
    assert_user_error(cli(command, path), path, mention)


def test_program_without_read_permission(blob: bytes, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode (the /proc/self/mem case covers it)")
    path = tmp_path / "locked.dpu"
    path.write_bytes(blob)
    path.chmod(0)
    assert_user_error(cli("run", path), path, "Permission denied")


def test_cpu_subgraph_whose_output_shape_depends_on_the_data(
    program: Program, tmp_path: Path
) -> None:
    """A valid ONNX model in the last CPU subgraph that keeps the logits from 1 + |the
    largest quantized value| on: it loads (its output dim is unknown until it runs), and
    what it makes must then be the header's shape, or the run stops naming it."""
    from onnx import TensorProto, helper, numpy_helper

    crafted = copy.deepcopy(program)
    last = crafted.subgraphs[-1]
    (x,), (y,) = last.inputs, last.outputs
    consts = {
        "s": np.array(0.05, np.float32),
        "zp": np.array(0, np.int8),
        "ends": np.array([10], np.int64),
        "axes": np.array([1], np.int64),
        "shape": np.array([1], np.int64),
        "one": np.array(1, np.int64),
    }
    nodes = [
        helper.make_node("DequantizeLinear", [x, "s", "zp"], ["d"]),
        helper.make_node("ReduceMax", [x], ["top"], keepdims=0),
        helper.make_node("Cast", ["top"], ["top64"], to=TensorProto.INT64),
        helper.make_node("Abs", ["top64"], ["size"]),
        helper.make_node("Add", ["size", "one"], ["start"]),  # >= 1: never the whole row
        helper.make_node("Reshape", ["start", "shape"], ["starts"]),
        helper.make_node("Slice", ["d", "starts", "ends", "axes"], [y]),
    ]
    graph = helper.make_graph(
        nodes,
        "data_dependent",
        [helper.make_tensor_value_info(x, TensorProto.INT8, [1, 10])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, "n"])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    crafted = _as_onnx_kind(crafted, len(crafted.subgraphs) - 1, model.SerializeToString())
    crafted.subgraphs[-1].ops = list(dict.fromkeys(n.op_type for n in nodes))
    path = tmp_path / "data_dependent.dpu"
    crafted.save(path)
    assert_user_error(cli("run", path, "--random", "2"), path, last.name, y)
