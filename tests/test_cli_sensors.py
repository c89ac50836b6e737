"""`dpukit sensors`: the names --power takes, a reading each, and why a source is absent."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from power_trees import DROP_ROOT, hwmon_chip, rapl_zone, root_only_tree, run_child

from dpukit.cli import main


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_lists_sensors_with_readings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hwmon_chip(tmp_path, 0, {"name": "ina226", "power1_input": 1250000, "power1_label": "VSYS"})
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 3_000_000)
    out_json = tmp_path / "sensors.json"
    assert main(["sensors", "--sysfs", str(tmp_path), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"hwmon:ina226/VSYS\s+│\s+power\s+│\s+1\.25 W\s+│ ina226 power1_input", out)
    assert re.search(r"rapl:package-0\s+│\s+energy counter\s+│\s+3 J", out)
    assert "power sensors, measured" in out
    assert re.search(r"pynq\s+no pynq", out)
    assert re.search(r"nvml\s+(NVML unavailable|no nvidia-ml-py|\d+ sensor)", out)
    doc = json.loads(out_json.read_text())
    assert doc["kind"] == "measured" and doc["sysfs"] == str(tmp_path)
    assert [s["name"] for s in doc["sensors"]] == ["hwmon:ina226/VSYS", "rapl:package-0"]
    assert doc["sensors"][0]["reading"] == 1.25 and doc["sensors"][0]["problem"] is None
    assert set(doc["sources"]) == {"hwmon", "rapl", "nvml", "pynq", "scpi"}


def test_says_why_nothing_is_there(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sensors", "--sysfs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no power sensors found on this machine" in out
    assert f"hwmon  no {tmp_path}/class/hwmon (no hwmon driver loaded" in out
    assert f"rapl   no {tmp_path}/class/powercap (no powercap" in out


def test_environment_names_sysfs(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    hwmon_chip(tmp_path, 0, {"name": "ina260", "power1_input": 500000})
    monkeypatch.setenv("DPUKIT_SYSFS", str(tmp_path))
    assert main(["sensors"]) == 0
    assert "hwmon:ina260/power1" in capsys.readouterr().out


def test_missing_sysfs_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sensors", "--sysfs", str(tmp_path / "nope")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: --sysfs {tmp_path}/nope: no such directory"


def test_lists_simulated_instruments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("pyvisa_sim")
    lib = f"{Path(__file__).parent / 'data' / 'psu.yaml'}@sim"
    assert main(["sensors", "--sysfs", str(tmp_path), "--visa", lib]) == 0
    out = capsys.readouterr().out
    assert f"scpi   instruments: scpi:ASRL1::INSTR@{lib}, " in out


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_rapl_root_only_for_a_user() -> None:
    """Run as `nobody` (dropped in a child, for real): RAPL is listed as root-only and why."""
    script = (
        "import os, sys\nfrom dpukit.cli import main\n"
        "main(['sensors', '--sysfs', sys.argv[1]])  # imports everything while still root\n"
        f"{DROP_ROOT}\nprint('=====')\nsys.exit(main(['sensors', '--sysfs', sys.argv[1]]))\n"
    )
    with root_only_tree() as root:
        proc = run_child(script, str(root))
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split("=====")[1].split())  # table cells may wrap
    assert "rapl:package-0 │ energy counter │ - │ permission denied reading" in out
    assert "rapl permission denied reading" in out and "root only since Linux 5.10" in out
    assert "hwmon:ina226/VSYS" in out and "Traceback" not in proc.stderr
