"""The instruction set: encoding round trips, illegal words, and the generated RTL and docs."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpukit.compiler import isa_render
from dpukit.compiler.isa import (
    FIELDS_LSB,
    FLAGS,
    INSTR_BITS,
    INSTR_BYTES,
    LAYOUT,
    OPCODE_BITS,
    Field,
    Instr,
    Opcode,
    decode,
    decode_array,
    encode,
    from_bytes,
    make,
    to_bytes,
)
from dpukit.errors import IsaError
from dpukit.sim.verilator_env import verilator_bin, verilator_env

ILLEGAL_OPCODES = sorted(set(range(1 << OPCODE_BITS)) - {int(op) for op in Opcode})
FIELD_CASES = [(op, f) for op, fields in LAYOUT.items() for f in fields]


def _field_value(f: Field) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([f.lo, f.hi]), st.integers(f.lo, f.hi))


def instrs(op: Opcode) -> st.SearchStrategy[Instr]:
    fields = st.fixed_dictionaries({f.name: _field_value(f) for f in LAYOUT[op]})
    flags = st.fixed_dictionaries({name: st.booleans() for name in FLAGS})
    return st.builds(lambda v, fl: make(op, **v, **fl), fields, flags)


any_instr = st.sampled_from(list(Opcode)).flatmap(instrs)


def _reserved_lsb(op: Opcode) -> int:
    return FIELDS_LSB + sum(f.bits for f in LAYOUT[op])


def _extreme(op: Opcode, pick: str) -> Instr:
    return make(op, **{f.name: getattr(f, pick) for f in LAYOUT[op]})


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encode_decode_round_trip(op: Opcode, data: st.DataObject) -> None:
    instr = data.draw(instrs(op))
    word = encode(instr)
    assert 0 <= word < 1 << INSTR_BITS
    assert word & ((1 << OPCODE_BITS) - 1) == op
    assert decode(word) == instr
    assert from_bytes(to_bytes([instr])) == [instr]


@pytest.mark.parametrize("pick", ["lo", "hi"])
@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
def test_round_trip_at_field_limits(op: Opcode, pick: str) -> None:
    for flags in ({}, dict.fromkeys(FLAGS, True)):
        instr = _extreme(op, pick).with_flags(**flags)
        assert decode(encode(instr)) == instr


@settings(max_examples=80, deadline=None)
@given(st.lists(any_instr, min_size=1, max_size=12))
def test_decode_array_agrees_with_decode(stream: list[Instr]) -> None:
    blob = to_bytes(stream)
    cols = decode_array(blob)
    assert len(cols["op"]) == len(stream)
    for i, instr in enumerate(stream):
        assert cols["op"][i] == instr.op
        for name in FLAGS:
            assert cols[name][i] == getattr(instr, name), name
        for name, col in cols.items():
            if name in FLAGS or name == "op":
                continue
            assert col[i] == instr.fields.get(name, 0), (instr.op.name, name)
    assert from_bytes(blob) == stream


def test_decode_array_of_empty_stream() -> None:
    cols = decode_array(b"")
    every_field = {f.name for fields in LAYOUT.values() for f in fields}
    assert set(cols) == {"op", *FLAGS, *every_field}
    assert all(len(c) == 0 for c in cols.values())


@pytest.mark.parametrize("extra", [1, 8, INSTR_BYTES - 1, INSTR_BYTES + 8])
def test_stream_of_partial_words_is_rejected(extra: int) -> None:
    blob = to_bytes([make(Opcode.END)]) + bytes(extra)
    with pytest.raises(IsaError, match="not a multiple"):
        from_bytes(blob)
    with pytest.raises(IsaError, match="not a multiple"):
        decode_array(blob)


# --- illegal instructions ------------------------------------------------------------------


@pytest.mark.parametrize("op, f", FIELD_CASES, ids=lambda c: getattr(c, "name", ""))
def test_out_of_range_field_is_rejected(op: Opcode, f: Field) -> None:
    base = {g.name: g.lo for g in LAYOUT[op]}
    for value in (f.lo, f.hi):
        encode(make(op, **(base | {f.name: value})))
    for value in (f.lo - 1, f.hi + 1):
        with pytest.raises(IsaError, match=rf"{op.name}\.{f.name} = {value} outside"):
            encode(make(op, **(base | {f.name: value})))


def test_field_limits_follow_width_and_sign() -> None:
    assert (Field("u", 6).lo, Field("u", 6).hi) == (0, 63)
    assert (Field("s", 8, signed=True).lo, Field("s", 8, signed=True).hi) == (-128, 127)


def test_illegal_opcodes() -> None:
    assert ILLEGAL_OPCODES == [0, 6, *range(8, 16)]


@pytest.mark.parametrize("code", ILLEGAL_OPCODES)
def test_illegal_opcode_is_rejected(code: int) -> None:
    with pytest.raises(IsaError, match=f"illegal opcode {code}"):
        decode(code)
    blob = to_bytes([make(Opcode.END)]) + code.to_bytes(INSTR_BYTES, "little")
    with pytest.raises(IsaError, match=f"instruction 1: illegal opcode {code}"):
        decode_array(blob)


@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
def test_non_zero_reserved_bit_is_rejected(op: Opcode) -> None:
    word = encode(_extreme(op, "hi").with_flags(pop_prev=True))
    good = word.to_bytes(INSTR_BYTES, "little")
    for bit in range(_reserved_lsb(op), INSTR_BITS):
        bad = word | 1 << bit
        with pytest.raises(IsaError, match="reserved bits"):
            decode(bad)
        with pytest.raises(IsaError, match=f"instruction 1: {op.name} reserved bits"):
            decode_array(good + bad.to_bytes(INSTR_BYTES, "little") + good)


def test_make_requires_exactly_the_opcode_fields() -> None:
    fields = {f.name: 0 for f in LAYOUT[Opcode.POST]}
    make(Opcode.POST, **fields, push_next=True)
    with pytest.raises(IsaError, match=r"POST: missing fields \['count'\]"):
        make(Opcode.POST, **{k: v for k, v in fields.items() if k != "count"})
    with pytest.raises(IsaError, match=r"unknown \['bogus'\]"):
        make(Opcode.POST, **fields, bogus=1)
    with pytest.raises(IsaError, match=r"END: missing fields \[\], unknown \['count'\]"):
        make(Opcode.END, count=1)


# --- generated RTL package and docs --------------------------------------------------------


@pytest.mark.parametrize(
    "path, render",
    [
        (isa_render.SV_PACKAGE, isa_render.render_sv_package),
        (isa_render.MARKDOWN, isa_render.render_markdown),
    ],
    ids=["sv", "md"],
)
def test_generated_file_is_up_to_date(path: Path, render) -> None:
    assert path.is_file() and path.read_text() == render(), (
        f"{path.relative_to(isa_render.ROOT)} is out of date with compiler/isa.py; "
        f"run `{isa_render.COMMAND}`"
    )


def test_check_flag_names_stale_files(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(isa_render, "ROOT", tmp_path)
    monkeypatch.setattr(isa_render, "SV_PACKAGE", tmp_path / "hw" / "rtl" / "dpu_isa_pkg.sv")
    monkeypatch.setattr(isa_render, "MARKDOWN", tmp_path / "docs" / "isa.md")
    assert isa_render.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "hw/rtl/dpu_isa_pkg.sv is out of date" in err and "docs/isa.md" in err
    assert not (tmp_path / "docs").exists()
    assert isa_render.main([]) == 0
    assert isa_render.main(["--check"]) == 0
    (tmp_path / "docs" / "isa.md").write_text("stale\n")
    assert isa_render.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/isa.md" in err and "dpu_isa_pkg.sv" not in err


def test_markdown_has_every_field_and_semantics() -> None:
    text = isa_render.render_markdown()
    for op, fields in LAYOUT.items():
        assert f"## {op.name} (opcode {int(op)}," in text
        for f in fields:
            assert f"| `{f.name}` | {f.bits} |" in text
    for name in ("pynq-z2", "sim-small", "ultra96v2"):
        assert f"| `{name}` |" in text


def _verilator(tmp_path: Path, *sources: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", *map(str, sources)]
    return subprocess.run(
        cmd, cwd=tmp_path, env=verilator_env(), capture_output=True, text=True, timeout=60
    )


def test_sv_package_lints_clean(tmp_path: Path) -> None:
    run = _verilator(tmp_path, isa_render.SV_PACKAGE)
    assert run.returncode == 0, run.stdout + run.stderr


def _sv_int(value: int) -> str:
    return f"-64'sd{-value}" if value < 0 else f"64'sd{value}"


def _sv_name(op: Opcode, field: str) -> str:
    return "".join(part.capitalize() for part in f"{op.name}_{field}".lower().split("_"))


def _struct_check_module(instrs: list[Instr], *, corrupt: bool = False) -> str:
    """A module whose elaboration fails with $error where the SV package disagrees with isa.py."""
    checks: list[tuple[str, str]] = []  # (condition that must hold, label)
    for op in Opcode:
        pos = FIELDS_LSB
        for f in LAYOUT[op]:
            name = _sv_name(op, f.name)
            checks.append((f"{name}Lsb == {pos} && {name}Bits == {f.bits}", f"{name}Lsb"))
            pos += f.bits
        checks.append((f"{_sv_name(op, 'reserved')}Lsb == {pos}", f"{op.name} reserved"))
    lines = ["module isa_struct_check;", "  import dpu_isa_pkg::*;"]
    for k, instr in enumerate(instrs):
        word, t = encode(instr), f"{instr.op.name.lower()}_instr_t"
        lines += [
            f"  localparam logic [{INSTR_BITS - 1}:0] W{k} = {INSTR_BITS}'h{word:x};",
            f"  localparam instr_t H{k} = instr_t'(W{k});",
            f"  localparam {t} I{k} = {t}'(W{k});",
        ]
        values = {f.name: instr.fields[f.name] for f in LAYOUT[instr.op]}
        if corrupt and values:
            name = next(iter(values))
            values[name] += 1
        checks.append((f"H{k}.opcode == Op{instr.op.name.capitalize()}", f"{k} head opcode"))
        checks.append((f"I{k}.opcode == H{k}.opcode && I{k}.flags == H{k}.flags", f"{k} head"))
        for i, name in enumerate(FLAGS):
            bit = f"1'b{int(getattr(instr, name))}"
            checks.append((f"I{k}.flags.{name} == {bit} && W{k}[{OPCODE_BITS + i}] == {bit}", name))
        for name, value in values.items():
            checks.append((f"longint'(I{k}.{name}) == {_sv_int(value)}", f"{k} {name}"))
        if _reserved_lsb(instr.op) < INSTR_BITS:
            checks.append((f"I{k}.reserved == '0", f"{k} reserved"))
    for n, (cond, label) in enumerate(checks):
        lines += [f"  if (!({cond})) begin : g_bad{n}", f'    $error("{label}");', "  end"]
    return "\n".join([*lines, "endmodule", ""])


def _sample_instrs(seed: int) -> list[Instr]:
    rng = random.Random(seed)
    out = [_extreme(op, pick) for op in Opcode for pick in ("lo", "hi")]
    for op in Opcode:
        for _ in range(3):
            values = {f.name: rng.randint(f.lo, f.hi) for f in LAYOUT[op]}
            out.append(make(op, **values, **{n: rng.random() < 0.5 for n in FLAGS}))
    return out


def test_sv_structs_decode_like_isa(tmp_path: Path) -> None:
    check = tmp_path / "isa_struct_check.sv"
    check.write_text(_struct_check_module(_sample_instrs(seed=1)))
    run = _verilator(tmp_path, isa_render.SV_PACKAGE, check)
    assert run.returncode == 0, run.stdout + run.stderr
    # The check can fail: a wrong expected value stops elaboration.
    check.write_text(_struct_check_module(_sample_instrs(seed=1), corrupt=True))
    run = _verilator(tmp_path, isa_render.SV_PACKAGE, check)
    assert run.returncode != 0 and "USERERROR" in run.stdout + run.stderr
