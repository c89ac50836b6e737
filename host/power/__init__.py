"""Measured power and energy: sensors (Linux hwmon, RAPL, NVML, PYNQ rails, SCPI
instruments), the recorder that samples them while inference runs, and its outputs.

    from dpukit.host.power import PowerRecorder, open_sensors
    sensors = open_sensors("hwmon:ina226/VSYS")  # `dpukit sensors` lists the names
    with PowerRecorder(sensors, period_s=0.01) as rec:
        rec.mark("idle"); ...; rec.mark("inference"); ...
    summary = rec.trace.summary(inferences=n)

Every figure here is kind "measured"; the energy model's figures are "modeled" elsewhere.
Runs on the boards' Python 3.10 with numpy < 2; optional libraries load on first use.
"""

from dpukit.errors import SensorError
from dpukit.host.power.integrate import UNCERTAINTY_METHOD
from dpukit.host.power.plot import plot_trace, png_bytes
from dpukit.host.power.recorder import (
    PowerRecorder,
    PowerTrace,
    csv_text,
    recording_phases,
    recording_sensors,
    write_csv,
    write_json,
)
from dpukit.host.power.sensor import (
    MEASURED,
    Offer,
    Sensor,
    close_sensors,
    discover,
    open_sensors,
    sysfs_root,
)

__all__ = [
    "MEASURED",
    "UNCERTAINTY_METHOD",
    "Offer",
    "PowerRecorder",
    "PowerTrace",
    "Sensor",
    "SensorError",
    "close_sensors",
    "csv_text",
    "discover",
    "open_sensors",
    "plot_trace",
    "png_bytes",
    "recording_phases",
    "recording_sensors",
    "sysfs_root",
    "write_csv",
    "write_json",
]
