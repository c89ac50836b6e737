"""Real sysfs trees for the power tests: hwmon chips and powercap (RAPL) zones as files in a
temporary directory, and a writer thread that drives one attribute with a known waveform
and logs every value it made visible, with when."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

NOBODY = 65534
# A child drops root with this after importing what it needs (the venv lives under /root,
# which nobody may enter), so a 0400 file really is unreadable to it.
DROP_ROOT = f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})"


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's content at once, so a reader sees the old value or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def hwmon_chip(sysfs: Path, index: int, files: dict[str, object], device: str | None = None):
    """`class/hwmon/hwmon<index>` holding `files` (attribute -> content); `device` links it
    to `devices/<device>` as the kernel links a chip to its bus address."""
    chip = sysfs / "class" / "hwmon" / f"hwmon{index}"
    chip.mkdir(parents=True)
    for name, content in files.items():
        (chip / name).write_text(f"{content}\n")
    if device:
        target = sysfs / "devices" / device
        target.mkdir(parents=True, exist_ok=True)
        (chip / "device").symlink_to(target)
    return chip


def rapl_zone(sysfs: Path, zone: str, name: str, energy_uj: int = 0, max_uj: int = 2**32):
    z = sysfs / "class" / "powercap" / zone
    z.mkdir(parents=True)
    (z / "name").write_text(f"{name}\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


class Writer(threading.Thread):
    """Writes `value(t)` (t = time.perf_counter()) as an integer to `path` about every
    `interval` s until stopped. `log` holds (t asked, t visible, value) for each write: the
    file held that value from `t visible` until the next write became visible."""

    def __init__(self, path: Path, value: Callable[[float], int], interval: float = 0.001):
        super().__init__(daemon=True)
        self.path, self.value, self.interval = path, value, interval
        self.log: list[tuple[float, float, int]] = []
        self.done = threading.Event()
        self.write_now()

    def write_now(self) -> None:
        asked = time.perf_counter()
        v = self.value(asked)
        write_atomic(self.path, f"{v}\n")
        self.log.append((asked, time.perf_counter(), v))

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.write_now()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def held(self, a: float, b: float, scale: float = 1e-6) -> float:
        """The integral over [a, b] of what the file held (value x scale per second)."""
        total = 0.0
        for (_, start, v), (_, end, _) in zip(self.log, self.log[1:] + [(0, b, 0)], strict=True):
            lo, hi = max(start, a), min(end, b)
            if hi > lo:
                total += v * scale * (hi - lo)
        return total


@contextlib.contextmanager
def root_only_tree() -> Iterator[Path]:
    """A tree `nobody` can walk (pytest's tmp dirs are 0700) whose RAPL counter and one
    hwmon power file are root-only (0400), as the kernel makes energy_uj since 5.10."""
    root = Path(tempfile.mkdtemp(prefix="dpukit-sysfs-"))
    try:
        hwmon_chip(root, 0, {"name": "ina226", "power1_input": 1000000, "power1_label": "VSYS"})
        rapl_zone(root, "intel-rapl:0", "package-0", 1234)
        for f in ("class/powercap/intel-rapl:0/energy_uj", "class/hwmon/hwmon0/power1_input"):
            (root / f).chmod(0o400)
        for d, _, _ in os.walk(root):
            os.chmod(d, 0o755)
        yield root
    finally:
        shutil.rmtree(root)


def run_child(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
