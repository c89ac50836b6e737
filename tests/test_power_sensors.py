"""Power sensors on real sysfs trees in a temporary directory: names, units, and each way a
sensor can be missing or unreadable, as one SensorError naming the cause. Permission denied
is real: a child process drops root before reading a root-only file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from power_trees import DROP_ROOT, NOBODY, hwmon_chip, rapl_zone, root_only_tree, run_child

from dpukit.errors import SensorError
from dpukit.host.power import discover, open_sensors, sysfs_root
from dpukit.host.power.sensor import find


@pytest.fixture()
def board(tmp_path: Path) -> Path:
    """An Ultra96-like mix: an INA226 with a label, two IRPS5401s (same chip name, told
    apart by bus address), an ina3221 (V x I), a chip with an energy counter, a chip with
    temperatures only, and a RAPL package with a core subzone."""
    hwmon_chip(tmp_path, 0, {"name": "acpitz", "temp1_input": 40000})
    hwmon_chip(tmp_path, 1, {"name": "ina226", "power1_input": 1234567, "power1_label": "VSYS",
                             "in1_input": 5000, "curr1_input": 250})  # fmt: skip
    for i, addr in ((2, "1-0043"), (10, "1-0044")):
        hwmon_chip(tmp_path, i, {"name": "irps5401", "power1_input": 500000,
                                 "power2_input": 250000, "power2_label": "pout1",
                                 "update_interval": 50}, device=addr)  # fmt: skip
    hwmon_chip(tmp_path, 3, {"name": "ina3221", "in1_input": 5000, "curr1_input": 400,
                             "in1_label": "VDD 5V", "in2_input": 3300, "curr2_input": 100,
                             "in4_input": 10})  # fmt: skip
    hwmon_chip(tmp_path, 4, {"name": "amd_energy", "energy1_input": 7_000_000,
                             "energy1_label": "Esocket0"})  # fmt: skip
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000, 262_143_328_850)
    rapl_zone(tmp_path, "intel-rapl:0:0", "core", 1_000_000)
    return tmp_path


def test_names_and_readings(board: Path) -> None:
    hw, why = find("hwmon", str(board))
    assert why is None
    got = {s.name: (s.unit, round(s.read(), 9)) for s in hw}
    assert got == {
        "hwmon:ina226/VSYS": ("W", 1.234567),
        "hwmon:irps5401@1-0043/power1": ("W", 0.5),
        "hwmon:irps5401@1-0043/pout1": ("W", 0.25),
        "hwmon:ina3221/VDD_5V": ("W", 2.0),  # 400 mA x 5000 mV, named by in1_label
        "hwmon:ina3221/curr2": ("W", 0.33),
        "hwmon:amd_energy/Esocket0": ("J", 7.0),
        "hwmon:irps5401@1-0044/power1": ("W", 0.5),
        "hwmon:irps5401@1-0044/pout1": ("W", 0.25),
    }
    irps = next(s for s in hw if s.name == "hwmon:irps5401@1-0043/pout1")
    assert irps.update_period_s == 0.05 and irps.kind == "measured"
    rapl, why = find("rapl", str(board))
    assert [(s.name, s.unit, s.read()) for s in rapl] == [
        ("rapl:package-0", "J", 5.0),
        ("rapl:package-0/core", "J", 1.0),
    ]
    assert rapl[0].wrap == pytest.approx(262143.32885) and rapl[0].counter


def test_open_by_name_and_env(board: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPUKIT_SYSFS", str(board))
    assert sysfs_root() == str(board)
    sensors = open_sensors("hwmon:ina226/VSYS, rapl:package-0")
    assert [s.name for s in sensors] == ["hwmon:ina226/VSYS", "rapl:package-0"]
    monkeypatch.setenv("DPUKIT_SYSFS", str(board / "nope"))
    with pytest.raises(SensorError, match="DPUKIT_SYSFS .*nope: no such directory"):
        open_sensors("rapl:package-0")
    with pytest.raises(SensorError, match="--sysfs .*nope: no such directory"):
        sysfs_root(str(board / "nope"))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            "hwmon:ina226/VBUS",
            "no power sensor 'hwmon:ina226/VBUS' on this machine; it has hwmon:ina226/VSYS, ",
        ),  # fmt: skip
        ("hwmon:irps5401/pout1", "no power sensor 'hwmon:irps5401/pout1'"),
        ("rapl:dram", "no power sensor 'rapl:dram' on this machine; it has rapl:package-0, "),
        ("joules:1", "unknown power sensor 'joules:1': a name starts with one of hwmon:, "),
        ("VSYS", "unknown power sensor 'VSYS'"),
        ("rapl:package-0,rapl:package-0", "named twice"),
        ("scpi:", "give an instrument, scpi:RESOURCE"),
    ],
)
def test_bad_names(board: Path, names: str, message: str) -> None:
    with pytest.raises(SensorError) as exc:
        open_sensors(names, sysfs=str(board))
    assert message in str(exc.value)


def test_absent_sources_say_why(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match=r"'hwmon:ina226/VSYS': no .*class/hwmon \(no hwmon"):
        open_sensors("hwmon:ina226/VSYS", sysfs=str(tmp_path))
    with pytest.raises(SensorError, match=r"'rapl:package-0': no .*class/powercap \(no powercap"):
        open_sensors("rapl:package-0", sysfs=str(tmp_path))
    hwmon_chip(tmp_path, 0, {"name": "acpitz", "temp1_input": 40000})
    (tmp_path / "class/powercap").mkdir()
    assert find("hwmon", str(tmp_path)) == (
        [],
        "1 hwmon chip(s) (acpitz), none with a power, energy or V×I channel",
    )
    assert "no intel-rapl zones" in find("rapl", str(tmp_path))[1]


def test_unreadable_value_at_open(board: Path) -> None:
    (board / "class/powercap/intel-rapl:0/energy_uj").write_text("")
    with pytest.raises(SensorError, match="rapl:package-0: cannot read .ValueError: invalid"):
        open_sensors("rapl:package-0", sysfs=str(board))


def test_nvml_absent_with_reason() -> None:
    pytest.importorskip("pynvml")
    sensors, why = find("nvml", "/sys")
    if sensors:
        pytest.skip("this machine has an NVIDIA GPU")
    assert "NVML unavailable (NVMLError_LibraryNotFound" in why
    with pytest.raises(SensorError, match="'nvml:0': NVML unavailable"):
        open_sensors("nvml:0")


def test_pynq_absent_with_reason() -> None:
    assert find("pynq", "/sys") == ([], "no pynq (it is installed on PYNQ board images only)")
    with pytest.raises(SensorError, match="'pynq:5V': no pynq"):
        open_sensors("pynq:5V")


# ---- permission denied, for real: a child that is not root -----------------------------

CHILD = """
import json, os, sys
from dpukit.errors import SensorError
from dpukit.host.power import discover, open_sensors
root = sys.argv[1]
discover(root)  # every module imported while still root
%(drop)s
out = {"uid": os.getuid()}
for name in ("rapl:package-0", "hwmon:ina226/VSYS"):
    try:
        open_sensors(name, sysfs=root)
        out[name] = "opened"
    except SensorError as exc:
        out[name] = str(exc)
offers, status = discover(root)
out["status"] = status
out["problems"] = {o.name: o.problem for o in offers}
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_permission_denied_for_real() -> None:
    with root_only_tree() as root:
        proc = run_child(CHILD % {"drop": DROP_ROOT}, str(root))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["uid"] == NOBODY
    rapl = out["rapl:package-0"]
    energy_uj = f"{root}/class/powercap/intel-rapl:0/energy_uj"
    assert rapl.startswith(f"rapl:package-0: permission denied reading {energy_uj}: ")
    assert "root only since Linux 5.10 (CVE-2020-8694)" in rapl
    assert f"sudo chmod a+r {energy_uj}" in rapl
    hw = out["hwmon:ina226/VSYS"]
    assert hw.startswith("hwmon:ina226/VSYS: permission denied reading ") and "mode" in hw
    assert "root only" in out["status"]["rapl"]  # `dpukit sensors` says why RAPL is absent
    assert out["problems"]["rapl:package-0"].startswith("permission denied")


def test_discover_lists_everything(board: Path) -> None:
    offers, status = discover(str(board))
    names = [o.name for o in offers]
    assert names[0] == "hwmon:ina226/VSYS" and "rapl:package-0/core" in names
    assert all(o.problem is None for o in offers)
    assert status["hwmon"] == "8 sensor(s)" and status["rapl"] == "2 sensor(s)"
    assert status["pynq"].startswith("no pynq")
    assert set(status) == {"hwmon", "rapl", "nvml", "pynq", "scpi"}
