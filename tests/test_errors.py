"""Every way an input can be bad ends in dpukit's own error type, with a message naming why."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from stream_helpers import instr

from dpukit.compiler import isa
from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Buffer, Opcode
from dpukit.errors import ExecutionError, IsaError, ModelError, ProgramError
from dpukit.host.runner import create_runner
from dpukit.models import zoo

MODEL = "mlp"  # small and quick to compile


@pytest.fixture(scope="module")
def qdq_path(quantized_zoo) -> Path:
    return quantized_zoo(MODEL, False, "int8")


@pytest.fixture(scope="module")
def dpu_file(qdq_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model compiled for sim-small, saved as a .dpu file."""
    path = tmp_path_factory.mktemp("programs") / f"{MODEL}.sim-small.dpu"
    compile_model(qdq_path, "sim-small").save(path)
    return path


# --- models -------------------------------------------------------------------------------------


def test_truncated_onnx_file(qdq_path: Path, tmp_path: Path) -> None:
    blob = qdq_path.read_bytes()
    bad = tmp_path / "half.onnx"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelError) as exc:
        compile_model(bad, "sim-small")
    assert "half.onnx" in str(exc.value) and "truncated" in str(exc.value).lower()


def test_garbage_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "noise.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError) as exc:
        compile_model(bad, "sim-small")
    assert "noise.onnx" in str(exc.value) and "onnx" in str(exc.value).lower()


def test_float_model_asks_to_quantize(tmp_path: Path) -> None:
    model, _ = zoo.mlp()
    path = tmp_path / "float.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError) as exc:
        compile_model(path, "sim-small")
    assert "not quantized" in str(exc.value).lower() and "quantize" in str(exc.value)


def _with_unknown_op(qdq_path: Path, domain: str) -> onnx.ModelProto:
    """The QDQ model with a node `FooBar` (in `domain`) appended after its output."""
    model = onnx.load(qdq_path)
    out = model.graph.output[0]
    model.graph.node.append(
        onnx.helper.make_node("FooBar", [out.name], ["foo"], name="my_foobar", domain=domain)
    )
    out.name = "foo"
    if domain:
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return model


@pytest.mark.parametrize("domain", ["com.example", ""], ids=["custom-domain", "default-domain"])
def test_op_neither_dpu_nor_cpu_can_run(qdq_path: Path, tmp_path: Path, domain: str) -> None:
    path = tmp_path / "foobar.onnx"
    onnx.save(_with_unknown_op(qdq_path, domain), path)
    with pytest.raises(ModelError) as exc:
        compile_model(path, "sim-small")
    msg = str(exc.value)
    assert "my_foobar" in msg and "FooBar" in msg, msg
    if domain:
        assert domain in msg, msg


# --- program files ------------------------------------------------------------------------------


def test_corrupted_program_file(dpu_file: Path, tmp_path: Path) -> None:
    blob = bytearray(dpu_file.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad = tmp_path / "flipped.dpu"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ProgramError) as exc:
        create_runner(bad)
    assert "checksum" in str(exc.value).lower()


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_program_file(dpu_file: Path, tmp_path: Path, keep: float) -> None:
    blob = dpu_file.read_bytes()
    bad = tmp_path / "cut.dpu"
    bad.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(ProgramError) as exc:
        create_runner(bad)
    assert "cut.dpu" in str(exc.value)
    assert re.search(r"truncated|corrupt|checksum|magic", str(exc.value).lower())


def test_program_for_another_config(dpu_file: Path) -> None:
    with pytest.raises(ProgramError) as exc:
        create_runner(dpu_file, config="pynq-z2")
    msg = str(exc.value)
    assert "sim-small" in msg and "pynq-z2" in msg, msg


# --- runner inputs ------------------------------------------------------------------------------


def test_wrong_input_shape(dpu_file: Path) -> None:
    runner = create_runner(dpu_file)
    with pytest.raises(ExecutionError) as exc:
        runner.run({"input": np.zeros((1, 63), np.float32)})
    msg = str(exc.value)
    assert "input" in msg and "63" in msg and "64" in msg, msg


@pytest.mark.parametrize(
    "value",
    [np.zeros((1, 64), np.uint8), np.full((1, 64), "x")],
    ids=["uint8-for-float32", "strings"],
)
def test_wrong_input_dtype(dpu_file: Path, value: np.ndarray) -> None:
    """onnxruntime refuses a tensor of the wrong element type; so must the runner."""
    runner = create_runner(dpu_file)
    with pytest.raises(ExecutionError) as exc:
        runner.run({"input": value})
    msg = str(exc.value)
    assert "input" in msg and "float32" in msg, msg


def test_missing_input(dpu_file: Path) -> None:
    runner = create_runner(dpu_file)
    with pytest.raises(ExecutionError) as exc:
        runner.run({"image": np.zeros((1, 64), np.float32)})
    assert "input" in str(exc.value)


# --- hand-built instruction streams -------------------------------------------------------------

CFG = load_config("sim-small")


def _load_inp(entries: int, dram_offset: int = 0, **flags: bool) -> isa.Instr:
    """LOAD `entries` INP entries of 4 bytes from consecutive DRAM bytes."""
    return instr(
        Opcode.LOAD,
        buffer=Buffer.INP,
        dram_offset=dram_offset,
        y_size=1,
        x_size=entries,
        y_stride=4 * entries,
        x_stride=4,
        elem_bytes=4,
        **flags,
    )


def _gemm(entries: int, **flags: bool) -> isa.Instr:
    """GEMM streaming INP[0:entries] into ACC[0:entries]."""
    return instr(
        Opcode.GEMM,
        reset=1,
        n_outer=1,
        n_inner=entries,
        inp_inner_stride=1,
        acc_inner_stride=1,
        **flags,
    )


# compiler/timing.py needs a POST and a GEMM or ALU in every stream (see
# test_golden_semantics.test_stream_without_post_runs); this POST and ALU touch nothing.
FILLER = [
    instr(Opcode.POST, clamp_lo=-128, clamp_hi=127),
    instr(Opcode.ALU, alu_op=AluOp.MOV),
]
END = instr(Opcode.END)


def _run(instrs: list[isa.Instr], dram_size: int = 256):
    stream = isa.to_bytes([*instrs, *FILLER, END])
    return GoldenDPU(CFG).run(stream, np.zeros(dram_size, np.uint8))


def test_stream_is_accepted_with_its_token() -> None:
    """The baseline the broken streams below depart from: LOAD -> token -> GEMM runs."""
    activity = _run([_load_inp(4, push_next=True), _gemm(4, pop_prev=True)])
    assert activity.instructions["GEMM"] == 1


def test_pop_of_a_token_never_pushed() -> None:
    with pytest.raises(ExecutionError) as exc:
        _run([_load_inp(4), _gemm(4, pop_prev=True)])
    assert re.search(r"hang|deadlock", str(exc.value).lower()), str(exc.value)


def test_engines_waiting_on_each_other() -> None:
    """LOAD waits for a token from GEMM, which waits for one from the LOAD: a deadlock."""
    stream = [
        _load_inp(4, pop_next=True, push_next=True),
        _gemm(4, pop_prev=True, push_prev=True),
    ]
    with pytest.raises(ExecutionError) as exc:
        _run(stream)
    assert re.search(r"hang|deadlock", str(exc.value).lower()), str(exc.value)


def test_token_pushed_later_in_the_stream() -> None:
    """GEMM pops a token that the LOAD after it pushes: the engines would run it (the LOAD
    goes first), but not in program order, which the golden model executes: rejected."""
    stream = [_gemm(4, pop_prev=True), _load_inp(4, push_next=True)]
    with pytest.raises(ExecutionError, match="later in the stream"):
        _run(stream)


def test_load_outside_the_data_window() -> None:
    with pytest.raises(ExecutionError) as exc:
        _run([_load_inp(4, dram_offset=250, push_next=True), _gemm(4, pop_prev=True)])
    msg = str(exc.value).lower()
    assert "data window" in msg and "load" in msg, msg


def test_load_outside_its_buffer() -> None:
    load = instr(
        Opcode.LOAD,
        buffer=Buffer.INP,
        sram_base=CFG.inp_entries - 1,
        y_size=1,
        x_size=2,
        y_stride=8,
        x_stride=4,
        elem_bytes=4,
    )
    with pytest.raises(ExecutionError) as exc:
        _run([load])
    assert "inp" in str(exc.value).lower(), str(exc.value)


def test_race_between_load_and_gemm() -> None:
    """The GEMM reads INP entries the LOAD writes, and no token orders the two."""
    with pytest.raises(ExecutionError) as exc:
        _run([_load_inp(4), _gemm(4)])
    msg = str(exc.value).lower()
    assert "hazard" in msg and "inp" in msg, msg


def test_stream_without_end() -> None:
    stream = isa.to_bytes([_load_inp(4, push_next=True), _gemm(4, pop_prev=True), *FILLER])
    with pytest.raises(ExecutionError) as exc:
        GoldenDPU(CFG).run(stream, np.zeros(256, np.uint8))
    assert "END" in str(exc.value)


@pytest.mark.parametrize("opcode", [0, 6, 15])
def test_illegal_opcode(opcode: int) -> None:
    words = bytearray(isa.to_bytes([_load_inp(4), *FILLER, END]))
    words[isa.INSTR_BYTES] = (words[isa.INSTR_BYTES] & 0xF0) | opcode  # the second word
    with pytest.raises(IsaError) as exc:
        GoldenDPU(CFG).run(bytes(words), np.zeros(256, np.uint8))
    assert "opcode" in str(exc.value).lower() and str(opcode) in str(exc.value)
