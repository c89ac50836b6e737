"""The PYNQ rails source (host/power/pynq_rails.py) against a stand-in `pynq` package.

pynq itself cannot be installed here (it pins numpy < 2, and `get_rails()` needs the board's
libsensors), so a child process puts a small `pynq` on its path whose `get_rails()` has the
shape pynq/pmbus.py gives it on an Ultra96-V2 (BOARD_NOTES.md): {label: Rail}, a Rail's
`.voltage`, `.current`, `.power` each a sensor with `.name` and `.value` (V, A, W) or None.
Its power values are read from files the test writes, as libsensors reads the chips."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

STAND_IN = '''
"""A stand-in for pynq's get_rails() (pynq/pmbus.py): rails of an Ultra96-V2."""
import os

_DIR = os.environ["STAND_IN_RAILS"]


class _Sensor:
    def __init__(self, name, file):
        self.name, self._file = name, file

    @property
    def value(self):
        with open(os.path.join(_DIR, self._file)) as f:
            return float(f.read())


class Rail:
    def __init__(self, label, power):
        self.name = label
        self.voltage = self.current = None
        self.power = _Sensor(f"{label}_power", label) if power else None


def get_rails():
    return {"5V": Rail("5V", True), "INT": Rail("INT", True), "PSPLL": Rail("PSPLL", False)}
'''


def _child(tmp_path: Path, code: str, rails: dict[str, str] | None) -> dict:
    """Run `code` in a child with the stand-in pynq importable (when `rails` is given, the
    files of the rails' power values) and return the JSON it prints."""
    env = {"PATH": "/usr/bin:/bin"}
    if rails is not None:
        (tmp_path / "pynq").mkdir(exist_ok=True)
        (tmp_path / "pynq" / "__init__.py").write_text(STAND_IN)
        values = tmp_path / "rails"
        values.mkdir(exist_ok=True)
        for label, text in rails.items():
            (values / label).write_text(text)
        env.update(PYTHONPATH=str(tmp_path), STAND_IN_RAILS=str(values))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


FIND = """
import json
from dpukit.host.power.sensor import find, open_sensors
from dpukit.errors import SensorError
sensors, why = find("pynq", "/sys")
doc = {"names": [s.name for s in sensors], "why": why}
try:
    (s,) = open_sensors("pynq:5V")
    doc.update(unit=s.unit, reading=s.read(), kind=s.kind)
except SensorError as exc:
    doc["error"] = str(exc)
print(json.dumps(doc))
"""


def test_rails_with_power_become_sensors(tmp_path: Path) -> None:
    doc = _child(tmp_path, FIND, {"5V": "4.25", "INT": "0.6875"})
    assert doc["names"] == ["pynq:5V", "pynq:INT"]  # PSPLL has no power sensor
    assert doc["why"] is None
    assert (doc["unit"], doc["reading"], doc["kind"]) == ("W", 4.25, "measured")


def test_no_pynq_says_so(tmp_path: Path) -> None:
    doc = _child(tmp_path, FIND, None)
    assert doc["names"] == [] and doc["why"].startswith("no pynq")
    assert doc["error"] == "power sensor 'pynq:5V': " + doc["why"]


def test_unreadable_rail_is_one_error(tmp_path: Path) -> None:
    doc = _child(tmp_path, FIND, {"5V": "not a number", "INT": "1"})
    assert doc["error"].startswith("pynq:5V: cannot read (ValueError")
