"""The board's power rails through PYNQ (board only): `pynq.get_rails()` reads the PMBus
regulators through libsensors and returns {label: Rail}; a Rail's `.power` is a sensor
whose `.value` is in W (Ultra96-V2: IRPS5401/IR38060 rails such as INT, PSINT_FP, 5V, VIN;
ZCU104). Names: `pynq:<label>`. The same chips also show as hwmon sensors."""

from __future__ import annotations

import importlib.util

from dpukit.host.power.sensor import Sensor


class PynqRail(Sensor):
    source = "pynq"
    unit = "W"
    # resolution unknown (the PMBus LINEAR11 step varies by rail; Ultra96 about 1/32 W):
    # the recorder takes it from the readings' steps

    def __init__(self, label: str, power):
        self.name, self._power = f"pynq:{label}", power
        self.description = f"pynq.get_rails()[{label!r}].power ({getattr(power, 'name', '')})"

    def read(self) -> float:
        return float(self._power.value)


def find(sysfs: str) -> tuple[list[Sensor], str | None]:
    if importlib.util.find_spec("pynq") is None:
        return [], "no pynq (it is installed on PYNQ board images only)"
    import pynq

    rails = pynq.get_rails()
    sensors = [
        PynqRail(label, rail.power)
        for label, rail in sorted(rails.items())
        if getattr(rail, "power", None) is not None
    ]
    if not sensors:
        return [], "pynq.get_rails() found no power rails (no PMBus rails, or no libsensors "
        "config in /etc/sensors.d)"
    return sensors, None
