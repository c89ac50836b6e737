"""Linux hwmon, read directly (kernel Documentation/hwmon/sysfs-interface.rst): any board or
host with ina2xx/ina226/ina260, ina3221 or PMBus regulators (the Ultra96's IRPS5401/IR38060).

Per chip (`class/hwmon/hwmonN`, `name` says which): `power*_input` (or `power*_average`) in
µW, cumulative `energy*_input` in µJ, and for a chip with neither (ina3221) `curr*_input`
mA × `in*_input` mV of the same channel. `*_label` names a channel; `update_interval` (ms)
is how often the chip refreshes.

Names are `hwmon:<chip>/<channel>`: the channel is its label, or the attribute (`power1`)
when it has none or shares it; a chip name that several chips share (two IRPS5401s) becomes
`<chip>@<device>`, the device being the bus address sysfs links to (`1-0043`).
"""

from __future__ import annotations

import os
import re

from dpukit.host.power.sensor import Sensor, natural_key, read_int, read_text

_CHANNEL = re.compile(r"(power|energy|curr|in)(\d+)_(input|average)$")


class HwmonSensor(Sensor):
    source = "hwmon"
    fork_safe = True  # read_int opens the file per read
    denied_hint = "hwmon attributes are normally world-readable; check the file's mode"

    def __init__(self, name: str, unit: str, paths: list[str], description: str, period):
        self.name, self.unit, self.paths = name, unit, paths
        self.description, self.update_period_s = description, period
        self.resolution = 1e-6  # 1 µW, 1 µJ (and 1 mA x 1 mV) as sysfs reports them

    def read(self) -> float:
        if len(self.paths) == 1:
            return read_int(self.paths[0]) * 1e-6
        return read_int(self.paths[0]) * read_int(self.paths[1]) * 1e-6  # mA x mV = µW


def find(sysfs: str) -> tuple[list[Sensor], str | None]:
    root = os.path.join(sysfs, "class", "hwmon")
    try:
        entries = sorted(os.listdir(root), key=natural_key)
    except OSError:
        return [], f"no {root} (no hwmon driver loaded, or sysfs is elsewhere: --sysfs)"
    chips = [_chip(os.path.join(root, e), e) for e in entries]
    chips = [c for c in chips if c is not None]
    names = [c[0] for c in chips]
    sensors = []
    for chip, device, entry, channels in chips:
        if names.count(chip) > 1:  # several chips of one kind: the bus address tells them apart
            twins = [c[1] for c in chips if c[0] == chip]
            chip = f"{chip}@{device if twins.count(device) == 1 else entry}"
        sensors += [
            HwmonSensor(f"hwmon:{chip}/{label}", unit, paths, desc, period)
            for label, unit, paths, desc, period in channels
        ]
    if not sensors:
        seen = ", ".join(names) or "none"
        return (
            [],
            f"{len(entries)} hwmon chip(s) ({seen}), none with a power, energy or V×I channel",
        )
    return sensors, None


def _chip(path: str, entry: str):
    """(chip name, device id, hwmonN, channels) of one hwmon directory."""
    if read_text(os.path.join(path, "name")) is None and os.path.isdir(
        os.path.join(path, "device")
    ):
        path = os.path.join(path, "device")  # old drivers keep their attributes there
    try:
        files = set(os.listdir(path))
    except OSError:
        return None
    chip = read_text(os.path.join(path, "name")) or entry
    device = os.path.basename(os.path.realpath(os.path.join(path, "device")))
    interval = read_text(os.path.join(path, "update_interval"))
    period = int(interval) / 1000 if interval and interval.isdigit() else None
    found = {}  # (kind, index) -> attribute file, an _input before an _average
    for f in sorted(files, key=lambda f: f.endswith("_average")):
        m = _CHANNEL.match(f)
        if m:
            found.setdefault((m[1], int(m[2])), f)
    channels = []
    for (kind, i), f in sorted(found.items()):
        if kind in ("power", "energy"):
            channels.append((kind, i, [f]))
    if not channels:  # e.g. ina3221: bus voltage and current per channel, no power file
        channels = [
            ("curr", i, [f, found["in", i]])
            for (kind, i), f in sorted(found.items())
            if kind == "curr" and ("in", i) in found
        ]
    labels = [read_text(os.path.join(path, f"{kind}{i}_label")) for kind, i, _ in channels]
    if any(kind == "curr" for kind, _, _ in channels):  # ina3221 labels its in*, not curr*
        labels = [lab or read_text(os.path.join(path, f"in{i}_label"))
                  for lab, (_, i, _) in zip(labels, channels, strict=True)]  # fmt: skip
    out = []
    for label, (kind, i, attrs) in zip(labels, channels, strict=True):
        clean = label and re.sub(r"[\s,:/]+", "_", label)
        key = clean if clean and labels.count(label) == 1 else f"{kind}{i}"
        unit = "J" if kind == "energy" else "W"
        what = " x ".join(attrs) + (f" ({label})" if label else "")
        paths = [os.path.join(path, a) for a in attrs]
        out.append((key, unit, paths, f"{chip} {what}", period))
    return chip, device, entry, out
