"""The power sensor interface, and finding sensors by name.

A sensor has a stable, typeable `name` ("hwmon:ina226/VSYS", "rapl:package-0", "nvml:0",
"pynq:5V", "scpi:USB0::0x2A8D::0x1602::MY1234::INSTR"), a `unit` ("W": it reads power; "J":
it reads a cumulative energy counter) and `read()`, one reading in that unit (SI). Every
reading is `kind` "measured"; the energy model's figures are labelled "modeled" elsewhere.

Runs on the boards' own Python too (3.10, 32-bit ARM): stdlib only here, and each source's
library (pynq, pynvml, pyvisa) is imported only when that source is asked for.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from dpukit.errors import SensorError

MEASURED = "measured"
SOURCES = ("hwmon", "rapl", "nvml", "pynq", "scpi")  # the prefixes of sensor names


class Sensor:
    """One power or energy reading. Subclasses set the attributes and implement `read`."""

    name: str
    unit: str  # "W" (power) or "J" (a cumulative energy counter)
    source: str
    kind = MEASURED
    description = ""
    # One step of what the interface reports, in `unit`; 0 when unknown. The device's own
    # step may be coarser: the recorder also looks at the steps in the readings.
    resolution = 0.0
    update_period_s: float | None = None  # how often the device refreshes, when it says
    wrap: float | None = None  # a counter returns to 0 after this value (None: never/unknown)
    denied_hint = "check the file's permissions"  # what to do when reading is not allowed
    # read() works in a forked child process (the recorder samples there): true of a file
    # opened per read, not of a library's session (VISA, NVML, pynq), which a fork breaks
    fork_safe = False

    @property
    def counter(self) -> bool:
        return self.unit == "J"

    def read(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (an instrument session, NVML); file sensors hold nothing."""

    def info(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "unit": self.unit,
            "counter": self.counter,
            "description": self.description,
            "resolution": self.resolution,
            "update_period_s": self.update_period_s,
            "wrap": self.wrap,
        }


def read_int(path: str) -> int:
    """A sysfs attribute as an integer. Opened for each read: sysfs computes the value on
    open+read, and a vanished device then fails here (a gap), not with a stale value."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, 4096)  # an attribute is one page at most
    finally:
        os.close(fd)
    return int(data)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def natural_key(name: str) -> tuple:
    """hwmon2 before hwmon10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def sysfs_root(given: str | None = None) -> str:
    """The sysfs mount: --sysfs, else $DPUKIT_SYSFS, else /sys. One that the user named must
    exist; the default may be missing (not Linux): every sysfs source then says so."""
    root = given or os.environ.get("DPUKIT_SYSFS")
    if root is None:
        return "/sys"
    if not os.path.isdir(root):
        where = "--sysfs" if given else "DPUKIT_SYSFS"
        raise SensorError(f"{where} {root}: no such directory")
    return root


def first_reading(sensor: Sensor) -> float:
    """Read once, turning each way a sensor can fail into one SensorError naming the cause."""
    try:
        value = float(sensor.read())
    except PermissionError as exc:
        raise SensorError(
            f"{sensor.name}: permission denied reading {exc.filename or sensor.description}: "
            f"{sensor.denied_hint}"
        ) from None
    except FileNotFoundError as exc:
        raise SensorError(f"{sensor.name}: {exc.filename} has vanished") from None
    except SensorError:
        raise
    except Exception as exc:  # each library raises its own types; name it, never a traceback
        raise SensorError(f"{sensor.name}: cannot read ({type(exc).__name__}: {exc})") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SensorError(f"{sensor.name}: read a non-finite value ({value})")
    return value


def find(source: str, sysfs: str) -> tuple[list[Sensor], str | None]:
    """The sensors a source offers on this machine, and why it offers none."""
    module = importlib.import_module(f"dpukit.host.power.{_MODULES[source]}")
    return module.find(sysfs)


_MODULES = {"hwmon": "hwmon", "rapl": "rapl", "nvml": "nvml", "pynq": "pynq_rails"}


def open_sensors(names: str | Iterable[str], sysfs: str | None = None) -> list[Sensor]:
    """Sensors by name (a list, or one comma-separated string), each read once so that a
    missing, unknown or unreadable sensor is a SensorError now rather than a gap later."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise SensorError("no power sensor selected; `dpukit sensors` lists this machine's")
    if len(set(names)) != len(names):
        raise SensorError(f"a power sensor is named twice in {','.join(names)}")
    root = sysfs_root(sysfs)
    found: dict[str, tuple[list[Sensor], str | None]] = {}
    opened: list[Sensor] = []
    try:
        for name in names:
            source = name.partition(":")[0]
            if source == "scpi":
                from dpukit.host.power.scpi import open_scpi

                opened.append(open_scpi(name))
            elif source in _MODULES:
                if source not in found:
                    found[source] = find(source, root)
                opened.append(_pick(name, *found[source]))
            else:
                raise SensorError(
                    f"unknown power sensor '{name}': a name starts with one of "
                    f"{', '.join(s + ':' for s in SOURCES)}; `dpukit sensors` lists them"
                )
            first_reading(opened[-1])
    except BaseException:
        close_sensors(opened + [s for s in _listed(found) if s not in opened])
        raise
    close_sensors([s for s in _listed(found) if s not in opened])
    return opened


def _listed(found: dict[str, tuple[list[Sensor], str | None]]) -> list[Sensor]:
    return [s for sensors, _ in found.values() for s in sensors]


def _pick(name: str, sensors: list[Sensor], absent: str | None) -> Sensor:
    for s in sensors:
        if s.name == name:
            return s
    if not sensors:
        raise SensorError(f"power sensor '{name}': {absent}")
    have = ", ".join(s.name for s in sensors)
    raise SensorError(f"no power sensor '{name}' on this machine; it has {have}")


def close_sensors(sensors: Iterable[Sensor]) -> None:
    for s in sensors:
        try:
            s.close()
        except Exception:  # closing a vanished device must not hide the result
            pass


@dataclass
class Offer:
    """One sensor as `dpukit sensors` shows it: a reading now, or why there is none."""

    name: str
    source: str
    unit: str
    description: str
    reading: float | None
    problem: str | None


def discover(sysfs: str | None = None, visa: str | None = None) -> tuple[list[Offer], dict]:
    """Every sensor this machine offers (each read once), and per source a status line: how
    many it offers or why none (no hwmon, RAPL root-only, no pynq, ...). `visa` (a pyvisa
    library spec, "" for pyvisa's default) also lists the instruments it sees."""
    root = sysfs_root(sysfs)
    offers: list[Offer] = []
    status: dict[str, str] = {}
    for source in _MODULES:
        sensors, absent = find(source, root)
        mine = []
        for s in sensors:
            try:
                reading, problem = first_reading(s), None
            except SensorError as exc:
                reading, problem = None, str(exc).removeprefix(f"{s.name}: ")
            mine.append(Offer(s.name, source, s.unit, s.description, reading, problem))
        close_sensors(sensors)
        offers += mine
        ok = [o for o in mine if o.problem is None]
        if ok:
            status[source] = f"{len(ok)} sensor(s)"
        else:
            status[source] = mine[0].problem if mine else absent or "none found"
    from dpukit.host.power.scpi import scpi_status

    status["scpi"] = scpi_status(visa)
    return offers, status
