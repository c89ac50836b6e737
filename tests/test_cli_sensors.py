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


# ---- dpukit run --power ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_dpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dpukit.models import zoo
    from dpukit.quantize import quantize_model

    work = tmp_path_factory.mktemp("power_run")
    model, shape = zoo.MODELS["mlp"]()
    qdq = quantize_model(model, work / "mlp.qdq.onnx", zoo.calibration_data(shape))
    assert main(["compile", str(qdq), "-o", str(work / "mlp.dpu")]) == 0
    return work / "mlp.dpu"


def test_run_measures_energy_per_inference(
    mlp_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    hwmon_chip(tmp_path, 0, {"name": "ina226", "power1_input": 2000000, "power1_label": "VSYS"})
    trace, out_json = tmp_path / "out" / "trace.csv", tmp_path / "run.json"
    args = ["run", str(mlp_dpu), "--random", "64", "--batch", "16", "--sysfs", str(tmp_path),
            "--power", "hwmon:ina226/VSYS", "--idle-s", "0.2", "--power-trace", str(trace),
            "--json", str(out_json)]  # fmt: skip
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    modeled = out.index("energy per inference, modeled: ")
    measured = out.index(
        "energy per inference, measured (hwmon:ina226/VSYS), of this host running the golden "
        "model: "
    )
    assert measured > modeled  # side by side, the modeled figure first
    # per inference 2 W x the run's wall time / 64: mJ or µJ, as fast as this host runs it
    assert re.search(r"model: [\d.]+ [mµ]J ± [\d.]+ [a-zµ]?J total, "
                     r"0 J ± [\d.]+ [a-zµ]?J above idle "
                     r"\(2 W\); 2 W ± [\d.]+ [a-zµ]?W average over", out)  # fmt: skip
    assert f"wrote {trace} and {trace.with_suffix('.png')}" in out
    doc = json.loads(out_json.read_text())["energy_measured"]
    per = doc["per_inference"]
    assert doc["kind"] == "measured" and per["inferences"] == 64
    assert per["avg_power_w"] == pytest.approx(2.0)
    assert per["energy_j"] * 64 == pytest.approx(2.0 * per["duration_s"])
    assert [p["name"] for p in doc["phases"]] == ["idle", "warm-up", "inference"]
    assert trace.read_text().startswith("t_s,phase,hwmon:ina226/VSYS [W]\n")
    assert trace.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--power-trace", "t.csv"], "error: --power-trace needs --power SENSOR[,SENSOR]"),
        (
            ["--power", "hwmon:ina226/VBUS"],
            "error: no power sensor 'hwmon:ina226/VBUS' on this machine; it has hwmon:ina226/VSYS",
        ),  # fmt: skip
        (["--power", ","], "error: no power sensor selected; `dpukit sensors` lists"),
        # refused before the run, not after it (the trace's PNG goes beside the CSV)
        (
            ["--power", "hwmon:ina226/VSYS", "--power-trace", "t.png"],
            "error: --power-trace t.png: give the CSV's name",
        ),
        (
            ["--power", "hwmon:ina226/VSYS", "--power-trace", "/"],
            "error: --power-trace /: not a file path that can be written",
        ),
    ],
)
def test_run_power_errors_are_one_line(
    mlp_dpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, error: str
) -> None:
    hwmon_chip(tmp_path, 0, {"name": "ina226", "power1_input": 1, "power1_label": "VSYS"})
    assert main(["run", str(mlp_dpu), "--sysfs", str(tmp_path), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(error) and "\n" not in err
