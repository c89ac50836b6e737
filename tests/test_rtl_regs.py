"""RTL tests of hw/rtl/dpu_regs.sv: the cocotb tests of sim/regs_tests.py, lint, and that
the generated register package and reference are up to date with host/regmap.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpukit.compiler.hwconfig import load_config
from dpukit.host import regmap
from dpukit.sim.cocotb_run import RTL, assert_lint_clean, run_testbench

SOURCES = [RTL / "dpu_regs_pkg.sv", RTL / "dpu_regs.sv"]
FINGERPRINT = load_config("sim-small").fingerprint
ADDR_WIDTHS = [regmap.ADDR_BITS, 12]


def test_regs_cocotb() -> None:
    run_testbench(
        "dpu_regs",
        SOURCES,
        "regs_tests",
        {"AddrWidth": 12, "ConfigFingerprint": f"64'h{FINGERPRINT}"},
        extra_env={"DPU_REGS_FINGERPRINT": FINGERPRINT},
    )


@pytest.mark.parametrize("addr_width", ADDR_WIDTHS)
def test_regs_lint(addr_width: int) -> None:
    parameters = {"AddrWidth": addr_width, "ConfigFingerprint": f"64'h{FINGERPRINT}"}
    assert_lint_clean("dpu_regs", SOURCES, parameters)


@pytest.mark.parametrize(
    ("path", "render"),
    [
        (regmap.SV_PACKAGE, regmap.render_sv_package),
        (regmap.MARKDOWN, regmap.render_markdown),
    ],
    ids=["sv", "md"],
)
def test_generated_file_is_up_to_date(path: Path, render) -> None:
    assert path.is_file() and path.read_text() == render(), (
        f"{path.relative_to(regmap.ROOT)} is out of date with host/regmap.py; "
        f"run `{regmap.COMMAND}`"
    )


def test_check_flag_names_stale_files(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(regmap, "ROOT", tmp_path)
    monkeypatch.setattr(regmap, "SV_PACKAGE", tmp_path / "hw" / "rtl" / "dpu_regs_pkg.sv")
    monkeypatch.setattr(regmap, "MARKDOWN", tmp_path / "docs" / "registers.md")
    assert regmap.main(["--check"]) == 1
    assert "hw/rtl/dpu_regs_pkg.sv is out of date" in capsys.readouterr().err
    assert regmap.main([]) == 0
    assert regmap.main(["--check"]) == 0
    (tmp_path / "docs" / "registers.md").write_text("stale\n")
    assert regmap.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/registers.md" in err and "dpu_regs_pkg.sv" not in err


def test_map_is_consistent() -> None:
    offsets = [r.offset for r in regmap.REGISTERS]
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 for o in offsets)
    for name, _ in regmap.COUNTERS:
        assert regmap.offset(f"{name}_HI") == regmap.offset(f"{name}_LO") + 4
    assert regmap.register("CTRL").field("start").access is regmap.Access.W1S
    with pytest.raises(regmap.RegMapError, match="no register 'NOPE'"):
        regmap.register("NOPE")
    assert regmap.fingerprint_value(FINGERPRINT) == int(FINGERPRINT, 16)
