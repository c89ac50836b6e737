"""Intel (and AMD) RAPL through powercap (kernel Documentation/power/powercap/powercap.rst):
`class/powercap/intel-rapl:N[:M]/energy_uj`, a cumulative µJ counter that returns to 0
after `max_energy_range_uj`. Names: `rapl:package-0`, a subzone `rapl:package-0/core`.

Since Linux 5.10 (and stable backports) energy_uj is readable by root only: CVE-2020-8694
(PLATYPUS) used it as a side channel.
"""

from __future__ import annotations

import os

from dpukit.host.power.sensor import Sensor, natural_key, read_int, read_text

# sysfs does not say the counter's real step; 2^-14 J is the coarsest common RAPL energy
# unit (Intel client packages; AMD and server DRAM domains count 15.3 µJ).
RAPL_UNIT_J = 2.0**-14


class RaplSensor(Sensor):
    source = "rapl"
    fork_safe = True  # read_int opens the file per read
    unit = "J"
    resolution = RAPL_UNIT_J
    update_period_s = 0.001  # the counters update about every millisecond

    def __init__(self, name: str, path: str, wrap: float | None):
        self.name, self.path, self.wrap = name, path, wrap
        self.description = f"{os.path.dirname(path)} (cumulative energy)"
        self.denied_hint = (
            "RAPL's energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694): run as "
            f"root, or let users read it with `sudo chmod a+r {path}` until the next boot (a udev "
            "rule makes that permanent; it re-opens the side channel the restriction closes)"
        )

    def read(self) -> float:
        return read_int(self.path) * 1e-6


def find(sysfs: str) -> tuple[list[Sensor], str | None]:
    root = os.path.join(sysfs, "class", "powercap")
    try:
        zones = sorted(
            (z for z in os.listdir(root) if z.startswith("intel-rapl:")), key=natural_key
        )
    except OSError:
        return [], f"no {root} (no powercap: not an x86 Linux, or sysfs is elsewhere: --sysfs)"
    if not zones:
        return [], f"no intel-rapl zones in {root} (intel_rapl_common not loaded, or no RAPL CPU)"
    names = {z: read_text(os.path.join(root, z, "name")) or z for z in zones}
    sensors = []
    for z in zones:
        parent = z.rpartition(":")[0]  # intel-rapl:0:1 is a subzone of intel-rapl:0
        name = names[z] if parent == "intel-rapl" else f"{names.get(parent, parent)}/{names[z]}"
        top = read_text(os.path.join(root, z, "max_energy_range_uj"))
        wrap = int(top) * 1e-6 if top and top.isdigit() else None
        sensors.append(RaplSensor(f"rapl:{name}", os.path.join(root, z, "energy_uj"), wrap))
    return sensors, None
