"""PowerRecorder: samples sensors in a child process (or on a thread) while the caller marks
phases.

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

Where the samples are taken: a thread in this process costs inference the GIL on every
wake (+20 % wall time at 1 kHz on a 2-vCPU host, +8 % for a thread that only wakes), so on
Linux the recorder forks a child process that samples and sends its readings back in
batches (every 50 ms, and at once when a sensor fails or returns) through a pipe that a
thread here drains; its cost to inference is within noise. The child inherits the open
sensors, so only sensors whose read survives a fork go there (`Sensor.fork_safe`: sysfs
files, opened per read); a recorder with an instrument (pyvisa), NVML or pynq sensor, or
not on Linux, or whose child fails to start, samples on a thread as before. Both run the
same loop (`_Sampler`). A child that dies keeps what it sent: the trace ends there, with
a row of NaN and an event per sensor saying why.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpukit.errors import SensorError
from dpukit.host.power.sensor import Sensor, close_sensors, open_sensors

BEFORE_FIRST_MARK = ""  # the phase of samples taken before the first mark
BATCH_S = 0.05  # how often the child sends what it read
STOP_TIMEOUT_S = 5.0  # a child that has not stopped by then (a read stuck in a driver) is killed


class PowerRecorder:
    def __init__(self, sensors: Sequence[Sensor], period_s: float = 0.01,
                 process: bool | None = None):  # fmt: skip
        """`process`: sample in a child process (None: wherever the sensors allow it)."""
        if not sensors:
            raise SensorError("no power sensor selected; `dpukit sensors` lists this machine's")
        if not period_s > 0:
            raise SensorError(f"the sampling period must be > 0 s, not {period_s}")
        self.sensors, self.period_s = list(sensors), float(period_s)
        can_fork = sys.platform.startswith("linux") and all(s.fork_safe for s in self.sensors)
        self._use_process = can_fork if process is None else process and can_fork
        self._clock = time.perf_counter
        self._sampler = _Sampler(self.sensors, self.period_s, self._clock)
        self._thread: threading.Thread | None = None  # the sampler, or the child's receiver
        self._proc = None  # the sampling child process
        self._conn = None  # its pipe
        self._quit = None  # set to 1 to stop the child
        self._stopping = False  # set by stop(); the thread sees it within 50 ms
        self._marks: list[tuple[float, str]] = []
        self._started_unix = 0.0
        self.trace: PowerTrace | None = None  # set by stop()

    @property
    def pid(self) -> int | None:
        """The sampling child process's id; None when sampling on a thread."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Take the first sample now (time 0), then sample in the background; returns once
        the sampler runs."""
        if self._thread is not None:
            raise SensorError("this recorder has already been started")
        self._sampler.t0, self._started_unix = self._clock(), time.time()
        self._sampler.sample()
        if not (self._use_process and self._start_process()):
            self._thread = threading.Thread(
                target=self._sampler.run, args=(lambda: self._stopping,), name="dpukit-power",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def mark(self, phase: str) -> float:
        """End the current phase and begin `phase` now; returns the mark's time (s)."""
        if self._thread is None or self._stopping:
            raise SensorError(f"mark('{phase}'): the recorder is not running")
        t = self._clock() - self._sampler.t0
        self._marks.append((t, str(phase)))
        return t

    def stop(self) -> PowerTrace:
        """End the last phase now, take a last sample, and return the trace."""
        if self.trace is not None:
            return self.trace
        if self._thread is None:
            raise SensorError("stop(): the recorder was never started")
        s = self._sampler
        self._stopping = True
        if self._quit is not None:
            self._quit.value = 1
        # after the flag: every slot the sampler takes from now on came due before `end`
        end = self._clock() - s.t0
        if self._proc is not None:
            self._stop_process()
        self._thread.join()
        # Missed: the slots due by `end` that hold no sample. Counted here from the samples
        # themselves (all but start()'s), not summed as the sampler went: its last count
        # took the time after a read, which can lie past `end`.
        s.missed = max(0, int(end / self.period_s) - (len(s.t) - 1))
        if not s.died:
            s.sample()  # so that a reading lies at or after the last phase's end
        self.trace = PowerTrace(
            sensors=[x.info() for x in self.sensors],
            t=np.array(s.t),
            values=np.array(s.rows, dtype=float).reshape(len(s.t), len(self.sensors)),
            marks=list(self._marks),
            end_s=end,
            period_s=self.period_s,
            missed_slots=s.missed,
            events=list(s.events),
            started_unix=self._started_unix,
            origin_s=s.t0,
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
        return list(self._sampler.events)

    # ---- the child process -------------------------------------------------------------

    def _start_process(self) -> bool:
        """Fork the sampling child and wait until it runs; False (and no child) if it cannot."""
        ctx = multiprocessing.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        self._quit = ctx.RawValue("b", 0)  # shared memory: the child reads it without a lock
        proc = ctx.Process(target=_child, args=(self._sampler, send, self._quit, os.getpid()),
                           name="dpukit-power", daemon=True)  # fmt: skip
        before, ok = self._clock(), False
        try:
            # frozen objects are skipped by the child's collector: a full collection there
            # would touch, and so copy, every page of this process's heap (copy-on-write)
            gc.freeze()
            try:
                proc.start()
            finally:
                gc.unfreeze()
            send.close()  # the child holds the only write end: its exit is our end of file
            ready = recv.poll(10.0) and recv.recv()
            # perf_counter is CLOCK_MONOTONIC on Linux: one clock for every process, so the
            # child's sample times and our marks share t0. Checked, not assumed: the
            # child's reading of it must lie between our readings around its start.
            ok = bool(ready) and ready[0] == "ready" and before <= ready[1] <= self._clock()
        except (OSError, EOFError, AssertionError):  # no fork; a daemon may not have children
            pass
        finally:
            if not ok:  # (also on Ctrl-C while starting) leave no child behind
                _end(proc)
                send.close()
                recv.close()
                self._quit = None
        if not ok:
            return False
        self._proc, self._conn = proc, recv
        self._thread = threading.Thread(target=self._receive, name="dpukit-power-receiver",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return True

    def _receive(self) -> None:
        """Until the child says it is done (or dies): add its batches to the trace."""
        conn, proc = self._conn, self._proc
        while True:
            try:
                if not conn.poll(0.1):
                    # quiet: a slow period, or a child gone without our end of file (a
                    # copy of its pipe end inherited by some other child)
                    if proc.is_alive() or conn.poll():
                        continue
                    raise EOFError
                kind, payload = conn.recv()
            except (EOFError, OSError):
                _reap(proc)
                return self._sampler.die(f"the sampler process died ({_exit_reason(proc)})")
            if kind == "error":
                return self._sampler.die(f"the sampler process failed ({payload})")
            self._sampler.add(payload)
            if kind == "done":
                return

    def _stop_process(self) -> None:
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            _end(self._proc)
        self._thread.join()
        self._conn.close()


def _child(sampler: _Sampler, conn, quit_flag, parent: int) -> None:
    """The sampling process: the shared loop, its readings sent back in batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    sampler.take()  # the parent holds the first sample already
    try:
        conn.send(("ready", sampler.clock()))
        # a parent that died without stopping us (SIGKILL) leaves us orphaned: stop then
        sampler.run(lambda: quit_flag.value or os.getppid() != parent, conn.send)
        conn.send(("done", sampler.take()))
    except Exception as exc:  # no traceback on the user's terminal: the parent says it
        with contextlib.suppress(OSError):  # the parent gone too: nobody to tell
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _end(proc) -> None:
    """Make sure a child is gone (terminate, then kill)."""
    if proc.pid is None:
        return
    proc.terminate()
    proc.join(1.0)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _reap(proc, timeout: float = 5.0) -> None:
    """Wait for a child whose pipe closed to exit. stop() may be joining it at the same
    time, and only one waitpid gets its status: poll until either has stored it."""
    end = time.monotonic() + timeout
    while proc.exitcode is None and time.monotonic() < end:
        proc.join(0.01)


def _exit_reason(proc) -> str:
    code = proc.exitcode
    if code is None:
        return "no exit status"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class _Sampler:
    """Reads the sensors on the grid t0 + k*period: the loop the thread and the child both
    run. Keeps what it read (times since t0, rows, events) and the state stop() needs."""

    def __init__(self, sensors: list[Sensor], period_s: float, clock: Callable[[], float]):
        self.sensors, self.period_s, self.clock = sensors, period_s, clock
        self.t0 = 0.0
        self.t: list[float] = []
        self.rows: list[list[float]] = []
        self.events: list[dict] = []  # a sensor failing or coming back, with when and why
        self.failing = [False] * len(sensors)
        self.missed = 0
        self.k = 1  # the next slot to sample
        self.died = False

    def run(self, stopping: Callable[[], object], send: Callable | None = None) -> None:
        """Sample until `stopping()`; with `send` (the child), pass it a batch every
        BATCH_S and whenever there is an event, so the parent sees events promptly."""
        sent = self.clock()
        while not stopping():
            delay = self.t0 + self.k * self.period_s - self.clock()
            if delay > 0:
                # a plain sleep: each wake costs far less than Event.wait's (a lock made and
                # taken per call), which shows on inference at 1 kHz
                time.sleep(min(delay, 0.05))
                continue
            self.sample()
            now = self.clock()
            self.k, missed = next_slot(now - self.t0, self.period_s, self.k)
            self.missed += missed
            if send is not None and (self.events or now - sent >= BATCH_S):
                send(("batch", self.take()))
                sent = now

    def sample(self) -> None:
        row = []
        before = self.clock()
        for i, s in enumerate(self.sensors):
            try:
                value = float(s.read())
                if not math.isfinite(value):
                    raise ValueError(f"non-finite reading {value}")
            except Exception as exc:  # any failure of any library is a gap, never a crash
                value = math.nan
                if not self.failing[i]:
                    self._note(s, before, f"read failed ({type(exc).__name__}: {exc})")
                self.failing[i] = True
            else:
                if self.failing[i]:
                    self._note(s, before, "readable again")
                self.failing[i] = False
            row.append(value)
        self.t.append((before + self.clock()) / 2 - self.t0)  # the middle of the reads
        self.rows.append(row)

    def _note(self, sensor: Sensor, when: float, what: str) -> None:
        self.events.append({"sensor": sensor.name, "t_s": when - self.t0, "event": what})

    def take(self) -> tuple:
        """(In the child) what was read since the last take, with the state stop() needs."""
        batch = (self.t, self.rows, self.events, self.missed, self.k, self.failing)
        self.t, self.rows, self.events, self.missed = [], [], [], 0
        return batch

    def add(self, batch: tuple) -> None:
        """(In the parent) a batch from the child's take()."""
        t, rows, events, missed, self.k, self.failing = batch
        self.t += t
        self.rows += rows
        self.events += events
        self.missed += missed

    def die(self, why: str) -> None:
        """The child is gone: a row of NaN now, so that nothing is drawn across the time it
        did not sample, and an event per sensor saying why. The trace ends here."""
        now = self.clock()
        self.t.append(now - self.t0)
        self.rows.append([math.nan] * len(self.sensors))
        for s in self.sensors:
            self._note(s, now, why)
        self.died = True


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


@contextlib.contextmanager
def recording_phases(
    sensors: Sequence[Sensor],
    idle_s: float,
    warm_up: Callable[[], object],
    wait_idle: Callable[[float], None] = time.sleep,
) -> Iterator[PowerRecorder]:
    """Record `sensors` (100 Hz): an idle baseline (`wait_idle(idle_s)`, skipped for 0), then
    `warm_up()`, then the "inference" phase the block runs in; the recorder, stopped on
    leaving. The phases `dpukit run --power` and the board scripts measure."""
    rec = PowerRecorder(sensors, period_s=0.01)
    rec.start()
    try:
        if idle_s > 0:
            rec.mark("idle")
            wait_idle(idle_s)
        rec.mark("warm-up")
        warm_up()
        rec.mark("inference")
        yield rec
    finally:
        rec.stop()


@contextlib.contextmanager
def recording_sensors(
    names: str,
    sysfs: str | None,
    idle_s: float,
    warm_up: Callable[[], object],
    wait_idle: Callable[[float], None] = time.sleep,
) -> Iterator[PowerRecorder]:
    """`recording_phases` on the sensors named (`open_sensors`), closed on leaving: one run's
    recording (`dpukit run --power`, the board scripts' --power)."""
    sensors = open_sensors(names, sysfs)
    try:
        with recording_phases(sensors, idle_s, warm_up, wait_idle) as rec:
            yield rec
    finally:
        close_sensors(sensors)


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
