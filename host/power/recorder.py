"""PowerRecorder: samples sensors on a background thread while the caller marks phases.

    rec = PowerRecorder(open_sensors("hwmon:ina226/VSYS"), period_s=0.01)
    rec.start()
    rec.mark("idle"); time.sleep(2)
    rec.mark("warm-up"); runner.run(batch)
    rec.mark("inference"); ...
    trace = rec.stop()
    summary = trace.summary(inferences=n)  # energy per phase and per inference, measured

Sample k is due at t0 + k*period on the monotonic clock; a late sample skips the slots it
missed instead of shifting every later one (no drift), and each sample keeps the time it
was actually read. A read that fails (a vanished device, a timeout) stores NaN and a note:
the trace has a gap there, the run goes on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpukit.errors import SensorError
from dpukit.host.power.sensor import Sensor

BEFORE_FIRST_MARK = ""  # the phase of samples taken before the first mark


class PowerRecorder:
    def __init__(self, sensors: Sequence[Sensor], period_s: float = 0.01):
        if not sensors:
            raise SensorError("no power sensor selected; `dpukit sensors` lists this machine's")
        if not period_s > 0:
            raise SensorError(f"the sampling period must be > 0 s, not {period_s}")
        self.sensors, self.period_s = list(sensors), float(period_s)
        self._clock = time.perf_counter
        self._thread: threading.Thread | None = None
        self._stopping = False  # set by stop(); the thread sees it within 50 ms
        self._t: list[float] = []
        self._rows: list[list[float]] = []
        self._marks: list[tuple[float, str]] = []
        self._events: list[dict] = []  # a sensor failing or coming back, with when and why
        self._failing = [False] * len(self.sensors)
        self._missed = 0
        self._k = 1  # the next slot the thread will sample
        self._t0 = 0.0
        self._started_unix = 0.0
        self.trace: PowerTrace | None = None  # set by stop()

    def start(self) -> None:
        """Take the first sample now (time 0), then sample on the background thread."""
        if self._thread is not None:
            raise SensorError("this recorder has already been started")
        self._t0, self._started_unix = self._clock(), time.time()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="dpukit-power", daemon=True)
        self._thread.start()

    def mark(self, phase: str) -> float:
        """End the current phase and begin `phase` now; returns the mark's time (s)."""
        if self._thread is None or self._stopping:
            raise SensorError(f"mark('{phase}'): the recorder is not running")
        t = self._clock() - self._t0
        self._marks.append((t, str(phase)))
        return t

    def stop(self) -> PowerTrace:
        """End the last phase now, take a last sample, and return the trace."""
        if self.trace is not None:
            return self.trace
        if self._thread is None:
            raise SensorError("stop(): the recorder was never started")
        end = self._clock() - self._t0
        self._stopping = True
        self._thread.join()
        self._missed += max(0, int(end / self.period_s) - (self._k - 1))  # due, not taken
        self._sample()  # so that a reading lies at or after the last phase's end
        self.trace = PowerTrace(
            sensors=[s.info() for s in self.sensors],
            t=np.array(self._t),
            values=np.array(self._rows, dtype=float).reshape(len(self._t), len(self.sensors)),
            marks=list(self._marks),
            end_s=end,
            period_s=self.period_s,
            missed_slots=self._missed,
            events=list(self._events),
            started_unix=self._started_unix,
            origin_s=self._t0,
        )
        return self.trace

    def __enter__(self) -> PowerRecorder:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self.stop()

    @property
    def events(self) -> list[dict]:
        """So far: each sensor failing or readable again, with when (s) and why."""
        return list(self._events)

    def _run(self) -> None:
        while not self._stopping:
            delay = self._t0 + self._k * self.period_s - self._clock()
            if delay > 0:
                # a plain sleep: each wake costs far less than Event.wait's (a lock made and
                # taken per call), which shows on inference at 1 kHz
                time.sleep(min(delay, 0.05))
                continue
            self._sample()
            self._k, missed = next_slot(self._clock() - self._t0, self.period_s, self._k)
            self._missed += missed

    def _sample(self) -> None:
        row = []
        before = self._clock()
        for i, s in enumerate(self.sensors):
            try:
                value = float(s.read())
                if not math.isfinite(value):
                    raise ValueError(f"non-finite reading {value}")
            except Exception as exc:  # any failure of any library is a gap, never a crash
                value = math.nan
                if not self._failing[i]:
                    self._note(s, before, f"read failed ({type(exc).__name__}: {exc})")
                self._failing[i] = True
            else:
                if self._failing[i]:
                    self._note(s, before, "readable again")
                self._failing[i] = False
            row.append(value)
        self._t.append((before + self._clock()) / 2 - self._t0)  # the middle of the reads
        self._rows.append(row)

    def _note(self, sensor: Sensor, when: float, what: str) -> None:
        self._events.append({"sensor": sensor.name, "t_s": when - self._t0, "event": what})


def next_slot(elapsed: float, period: float, k: int) -> tuple[int, int]:
    """After sampling slot k at `elapsed` s: the next slot still ahead, and how many slots
    were missed (skipped, not made up: the schedule never drifts)."""
    ahead = int(elapsed / period) + 1
    return max(k + 1, ahead), max(0, ahead - k - 1)


@dataclass
class PowerTrace:
    """What a recording holds: sample times (s from the start), one column per sensor (its
    unit; NaN = a failed read), the phase marks, and the sensors' failures."""

    sensors: list[dict]
    t: np.ndarray
    values: np.ndarray
    marks: list[tuple[float, str]]
    end_s: float
    period_s: float
    missed_slots: int = 0
    events: list[dict] = field(default_factory=list)
    started_unix: float = 0.0  # time.time() at t = 0
    origin_s: float = 0.0  # time.perf_counter() at t = 0, to line other logs up with it

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self.sensors]

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, start s, end s) of each marked phase; all of it is "recording" if unmarked."""
        if not self.marks:
            return [("recording", 0.0, self.end_s)]
        ends = [t for t, _ in self.marks[1:]] + [self.end_s]
        return [(name, t, end) for (t, name), end in zip(self.marks, ends, strict=True) if end > t]

    def phase_of_samples(self) -> list[str]:
        times = [t for t, _ in self.marks]
        names = [BEFORE_FIRST_MARK] + [n for _, n in self.marks]
        return [names[i] for i in np.searchsorted(times, self.t, side="right")]

    def summary(self, inferences: int | None = None, phase: str = "inference",
                baseline: str = "idle") -> dict:  # fmt: skip
        """Energy per phase and, for `inferences` in `phase`, per inference (total, and
        dynamic above the `baseline` phase's mean power). JSON-ready; see summary.py."""
        from dpukit.host.power.summary import summarize

        return summarize(self, inferences, phase, baseline)


def csv_text(trace: PowerTrace) -> str:
    """The trace as CSV: time since the start (s), phase, then one column per sensor in its
    unit (a counter's raw reading in J); a failed read is `nan`."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["t_s", "phase"] + [f"{s['name']} [{s['unit']}]" for s in trace.sensors])
    for t, phase, row in zip(trace.t, trace.phase_of_samples(), trace.values, strict=True):
        w.writerow([f"{t:.6f}", phase, *("nan" if math.isnan(v) else f"{v:.9g}" for v in row)])
    return out.getvalue()


def write_csv(trace: PowerTrace, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(csv_text(trace))
    return path


def write_json(summary: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path
