"""The SCPI power sensor against pyvisa-sim: a simulated logging supply described in
tests/data/psu.yaml (answers *IDN?, MEAS:POW?, MEAS:VOLT?, MEAS:CURR?)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dpukit.errors import SensorError
from dpukit.host.power import PowerRecorder, open_sensors

pyvisa = pytest.importorskip("pyvisa")
pytest.importorskip("pyvisa_sim")

PSU = Path(__file__).parent / "data" / "psu.yaml"
LIB = f"{PSU}@sim"
ASRL = f"scpi:ASRL1::INSTR@{LIB}"
LAN = f"scpi:TCPIP0::192.168.1.50::inst0::INSTR@{LIB}"


def _set_power(resource: str, watts: float) -> None:
    """Through a second session: pyvisa shares one simulated device per resource."""
    inst = pyvisa.ResourceManager(LIB).open_resource(
        resource, write_termination="\n", read_termination="\n"
    )
    assert inst.query(f"SIM:POW {watts}") == "OK"
    inst.close()


def test_reads_power_and_names_the_instrument() -> None:
    (sensor,) = open_sensors([LAN])
    try:
        assert sensor.name == LAN and sensor.unit == "W" and sensor.kind == "measured"
        assert sensor.description == "dpukit,SIM-PSU,0001,1.0, MEAS:POW?"
        assert sensor.read() == pytest.approx(2.5)
    finally:
        sensor.close()


def test_recorder_over_scpi() -> None:
    _set_power("ASRL1::INSTR", 4.0)
    sensors = open_sensors(ASRL)
    try:
        with PowerRecorder(sensors, period_s=0.01) as rec:
            assert rec.pid is None  # an instrument session does not survive a fork: a thread
            rec.mark("idle")
            time.sleep(0.2)
            rec.mark("inference")
            time.sleep(0.3)
    finally:
        sensors[0].close()
    s = rec.trace.summary(inferences=3)
    idle, run = s["phases"]
    assert idle["energy_j"] == pytest.approx(4.0 * idle["duration_s"])
    assert run["energy_j"] == pytest.approx(4.0 * run["duration_s"])
    assert s["per_inference"]["dynamic_energy_j"] == pytest.approx(0.0, abs=1e-9)
    assert s["per_inference"]["label"] == f"measured ({ASRL})"
    assert not s["gaps"]


def test_query_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPUKIT_SCPI_QUERY", "MEAS:VOLT?")
    (sensor,) = open_sensors(LAN)
    assert sensor.read() == pytest.approx(5.0)
    sensor.close()
    monkeypatch.setenv("DPUKIT_SCPI_QUERY", "MEAS:BOGUS?")
    with pytest.raises(SensorError, match=r"cannot read \(ValueError: MEAS:BOGUS\? answered "
                       r"'ERROR', not a number\)"):  # fmt: skip
        open_sensors(LAN)


def test_unknown_instrument_and_library(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match=r"scpi:ASRL9::INSTR@.*: cannot open the instrument"):
        open_sensors(f"scpi:ASRL9::INSTR@{LIB}")
    missing = tmp_path / "none.yaml"
    with pytest.raises(SensorError, match="nothing answered"):
        open_sensors(f"scpi:ASRL9::INSTR@{LIB}")  # pyvisa-sim opens any serial port
    with pytest.raises(SensorError, match=f"no pyvisa-sim instrument file {missing}$"):
        open_sensors(f"scpi:ASRL1::INSTR@{missing}@sim")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [\n")
    with pytest.raises(SensorError, match=r"cannot open the instrument \(\w+: [^\n]*\)$"):
        open_sensors(f"scpi:ASRL1::INSTR@{bad}@sim")
