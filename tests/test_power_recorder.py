"""PowerRecorder: the energy arithmetic on hand-computed cases, then live recordings of real
sysfs files driven by a writer thread.

The live tests cannot be broken by a busy machine: each compares the recorder with what the
writer actually put in the file, between the recorder's own mark times; the waveforms are
slow and smooth (the trapezoid rule's error is tiny even if a sample comes late), and no
phase boundary falls on a jump. The counter test's bound is computed from the largest
delays that happened.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from power_trees import Writer, hwmon_chip, rapl_zone, write_atomic

from dpukit.errors import SensorError
from dpukit.host.power import (
    PowerRecorder,
    PowerTrace,
    csv_text,
    open_sensors,
    plot_trace,
    recorder,
    write_json,
)
from dpukit.host.power import integrate as ig
from dpukit.host.power.recorder import next_slot

SQRT12 = math.sqrt(12)


# ---- the arithmetic, by hand -------------------------------------------------------------


def test_trapezoid_with_interpolated_ends() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0])
    p = np.array([1.0, 3.0, 3.0, 1.0])
    valid = np.ones(3, bool)
    # p(0.5) = 2 and p(2.5) = 2: 0.5*(2+3)/2 + 1*3 + 0.5*(3+2)/2 = 5.5 J
    w = ig.trapezoid_weights(t, valid, 0.5, 2.5)
    assert w == pytest.approx([0.125, 0.875, 0.875, 0.125])
    assert float(w @ p) == pytest.approx(5.5)
    e, sigma = ig.power_energy(t, p, valid, 0.5, 2.5, resolution=0.1, update_s=None)
    assert e == pytest.approx(5.5)
    # quantization 0.1/sqrt(12) * |w| = 0.1/sqrt(12) * 1.25; sampling: 2 s * std(1,3,3,1) / 2
    quant, sampling = 0.1 / SQRT12 * 1.25, 2.0 * np.std([1, 3, 3, 1], ddof=1) / 2
    assert sigma == pytest.approx(math.hypot(quant, sampling))


def test_sampling_term_counts_sensor_updates_not_samples() -> None:
    t = np.arange(5.0)
    p = np.array([1.0, 2.0, 1.0, 2.0, 1.0])
    valid = np.ones(4, bool)
    # 4 s at a sensor that refreshes every 2 s: 2 independent readings, not 5
    _, sigma = ig.power_energy(t, p, valid, 0.0, 4.0, resolution=0.0, update_s=2.0)
    assert sigma == pytest.approx(4.0 * np.std(p, ddof=1) / math.sqrt(2))


def test_gap_leaves_time_uncovered_not_zero() -> None:
    t = np.arange(5.0)
    p = np.array([2.0, 2.0, np.nan, 2.0, 2.0])
    valid = ~np.isnan(p[:-1]) & ~np.isnan(p[1:])
    assert list(valid) == [True, False, False, True]
    assert ig.covered(t, valid, 0.0, 4.0) == pytest.approx(2.0)
    e, _ = ig.power_energy(t, p, valid, 0.0, 4.0, 0.0, None)
    assert e == pytest.approx(4.0)  # over the 2 covered seconds only
    assert ig.covered(t, valid, 3.0, 4.0) == pytest.approx(1.0)


def test_counter_wraps_and_interpolates() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0])
    c, resets = ig.unwrap(np.array([8.0, 9.5, 1.0, 2.5]), wrap=10.0)
    assert list(c) == [8.0, 9.5, 11.0, 12.5] and not resets.any()
    valid = np.ones(3, bool)
    e, sigma = ig.counter_energy(t, c, valid, 0.0, 3.0, resolution=0.01, update_s=None)
    assert e == pytest.approx(4.5)
    # two readings: 0.01/sqrt(6); the ends sit on readings yet count their interval: 1.5/sqrt12
    assert sigma == pytest.approx(math.sqrt(2 * 0.01**2 / 12 + 1.5**2 / 12))
    e, _ = ig.counter_energy(t, c, valid, 0.5, 2.5, 0.0, None)
    assert e == pytest.approx(11.75 - 8.75)


def test_counter_falling_without_a_range_is_a_reset() -> None:
    c, resets = ig.unwrap(np.array([5.0, 6.0, np.nan, 1.0, 2.0]), wrap=None)
    assert list(resets) == [False, False, False, True, False]
    assert c[[0, 1, 3, 4]] == pytest.approx([5.0, 6.0, 6.0, 7.0])


def test_quantum_is_the_coarser_of_declared_and_seen() -> None:
    v = np.array([1.0, 1.25, 1.25, np.nan, 1.5, 2.0])
    assert ig.quantum(v, 1e-6) == 0.25
    assert ig.quantum(v, 0.5) == 0.5
    assert ig.quantum(np.array([3.0, 3.0]), 1e-6) == 1e-6


def test_dynamic_energy_subtracts_idle_power() -> None:
    e, sigma = ig.dynamic(10.0, 0.3, 2.0, idle_w=3.0, idle_sigma_w=0.2)
    assert e == pytest.approx(4.0)
    assert sigma == pytest.approx(math.hypot(0.3, 0.4))


def _trace(values, marks, wrap=None, unit="W", events=()) -> PowerTrace:
    t = np.arange(len(values), dtype=float)
    info = {"name": "s", "kind": "measured", "source": "test", "unit": unit,
            "counter": unit == "J", "description": "", "resolution": 0.0,
            "update_period_s": None, "wrap": wrap}  # fmt: skip
    return PowerTrace([info], t, np.array(values, float)[:, None], marks, t[-1], 1.0,
                      events=list(events))  # fmt: skip


def test_summary_per_inference_and_idle_subtraction() -> None:
    # idle at 1 W for 2 s, then 3 W for 4 s of 8 inferences
    trace = _trace([1, 1, 1, 3, 3, 3, 3], [(0.0, "idle"), (2.0, "inference")])
    # the ramp from 1 W at t=2 to 3 W at t=3 lies inside the inference phase
    s = trace.summary(inferences=8)
    idle, run = s["phases"]
    assert idle["energy_j"] == pytest.approx(2.0) and idle["avg_power_w"] == pytest.approx(1.0)
    assert run["energy_j"] == pytest.approx(2.0 + 9.0)  # 1 s ramp (2 J), then 3 s at 3 W
    per = s["per_inference"]
    assert per["energy_j"] == pytest.approx(11.0 / 8)
    assert per["dynamic_energy_j"] == pytest.approx((11.0 - 4.0) / 8)
    assert per["avg_power_w"] == pytest.approx(11.0 / 4)
    assert per["idle_power_w"] == pytest.approx(1.0)
    assert per["label"] == "measured (s)" and s["kind"] == "measured"
    assert "uncertainty_j" in per and "dynamic_uncertainty_j" in per
    assert "sqrt(12)" in s["uncertainty_method"]


def test_summary_gap_makes_phase_incomplete() -> None:
    events = [{"sensor": "s", "t_s": 3.0, "event": "read failed (OSError: gone)"}]
    trace = _trace([2, 2, 2, np.nan, 2, 2], [(0.0, "idle"), (2.0, "inference")], events=events)
    s = trace.summary(inferences=4)
    idle, run = s["phases"]
    assert idle["complete"] and idle["energy_j"] == pytest.approx(4.0)
    assert not run["complete"] and run["energy_j"] is None
    assert run["sensors"]["s"]["covered_s"] == pytest.approx(1.0)
    assert run["sensors"]["s"]["energy_covered_j"] == pytest.approx(2.0)
    assert s["gaps"] == [{"sensor": "s", "start_s": 2.0, "end_s": 4.0,
                          "reason": "read failed (OSError: gone)"}]  # fmt: skip
    assert s["per_inference"]["complete"] is False and "gap" in s["per_inference"]["note"]
    assert any("incomplete: inference" in w for w in s["warnings"])
    json.dumps(s, allow_nan=False)


def test_summary_warns_of_short_phases_and_missing_marks() -> None:
    trace = _trace([1, 1, 1, 1, 1, 1], [(0.0, "idle"), (4.5, "warm-up")])
    s = trace.summary()  # no per-inference figure: every phase is a headline
    assert [p["short"] for p in s["phases"]] == [False, True]
    assert any("'warm-up' lasted 0.5 s, under 3 sensor update periods" in w for w in s["warnings"])
    s = trace.summary(inferences=3)  # the warm-up only flagged: its energy is no headline
    assert s["phases"][1]["short"] and not any("warm-up" in w for w in s["warnings"])
    assert any("no 'inference' phase" in w for w in s["warnings"])
    assert s["per_inference"] is None


# ---- live recordings of real files -------------------------------------------------------


def _wait_for(rec: PowerRecorder, event: str, timeout: float = 60.0) -> None:
    """Until the recorder has seen `event` (however busy the machine, it comes)."""
    end = time.monotonic() + timeout
    while not any(e["event"].startswith(event) for e in rec.events):
        assert time.monotonic() < end, f"the recorder saw no '{event}' in {timeout} s"
        time.sleep(0.005)


@pytest.fixture()
def ina226(tmp_path: Path) -> Path:
    hwmon_chip(tmp_path, 0, {"name": "ina226", "power1_input": 1_000_000,
                             "power1_label": "VSYS", "update_interval": 1})  # fmt: skip
    return tmp_path


def _waveform(switch: list[float]):
    """1 W until switch[0]; then a raised-cosine ramp to 2 W over 0.4 s; then 2 W plus a
    0.5 W sine of period 2 s. In µW. Smooth everywhere: a sample that comes 0.1 s late
    costs the trapezoid rule at most 3 mJ (curvature x h^3 / 12), within the ramp."""

    def f(t: float) -> int:
        if not switch or t < switch[0]:
            return 1_000_000
        u = t - switch[0]
        extra = 0.5 * (1 - math.cos(math.pi * u / 0.4)) if u < 0.4 else 1.0
        sine = 0.5 * math.sin(2 * math.pi * (u - 0.4) / 2.0) if u >= 0.4 else 0.0
        return round((1.0 + extra + sine) * 1e6)

    return f


def test_recorder_energy_per_phase_within_1pct_at_100hz(ina226: Path, tmp_path: Path) -> None:
    switch: list[float] = []
    writer = Writer(ina226 / "class/hwmon/hwmon0/power1_input", _waveform(switch))
    writer.start()
    sensors = open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226))
    rec = PowerRecorder(sensors, period_s=0.01)
    try:
        rec.start()
        rec.mark("idle")
        time.sleep(1.0)
        rec.mark("warm-up")
        time.sleep(0.15)
        switch.append(time.perf_counter())  # the ramp lies inside the warm-up phase
        time.sleep(0.6)
        rec.mark("inference")
        time.sleep(1.5)
        trace = rec.stop()
    finally:
        writer.stop()
    s = trace.summary(inferences=100)
    for ph in s["phases"]:
        exact = writer.held(trace.origin_s + ph["start_s"], trace.origin_s + ph["end_s"])
        assert ph["complete"]
        assert ph["energy_j"] == pytest.approx(exact, rel=0.01), ph["name"]
    idle, _, run = s["phases"]
    assert idle["avg_power_w"] == pytest.approx(1.0, rel=0.01)
    exact_run = writer.held(trace.origin_s + run["start_s"], trace.origin_s + run["end_s"])
    exact_idle_w = writer.held(trace.origin_s + idle["start_s"], trace.origin_s + idle["end_s"])
    exact_idle_w /= idle["duration_s"]
    assert abs(run["energy_j"] - exact_run) <= run["uncertainty_j"]  # the stated one holds
    exact_dynamic = exact_run - exact_idle_w * run["duration_s"]  # about 1 W x 1.5 s
    per = s["per_inference"]
    assert per["dynamic_energy_j"] * 100 == pytest.approx(exact_dynamic, rel=0.01)
    assert per["energy_j"] * 100 == pytest.approx(run["energy_j"])
    assert per["avg_power_w"] == pytest.approx(run["avg_power_w"])
    assert run["samples"] <= run["duration_s"] / 0.01 + 2  # late samples skip slots, never add
    assert not s["gaps"]


def test_recorder_rapl_counter_wraps(tmp_path: Path) -> None:
    watts, wrap_uj = 4.0, 3_000_000  # wraps every 0.75 s
    zone = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0, wrap_uj)
    start = time.perf_counter()
    writer = Writer(zone / "energy_uj", lambda t: round(watts * (t - start) * 1e6) % wrap_uj)
    writer.start()
    (sensor,) = open_sensors(["rapl:package-0"], sysfs=str(tmp_path))
    assert sensor.wrap == pytest.approx(3.0)
    try:
        with PowerRecorder([sensor], period_s=0.01) as rec:
            rec.mark("inference")
            time.sleep(2.0)  # 8 J, two wraps
    finally:
        writer.stop()
    trace = rec.trace
    (run,) = trace.summary()["phases"]
    assert run["complete"]
    # Each end's reading may lag by the longest write delay and sit up to one sampling
    # interval from the mark: the error is bounded by what actually happened.
    # (a reading's own time is uncertain by half its read, which is within one interval)
    lag = max(nxt[1] - cur[0] for cur, nxt in zip(writer.log, writer.log[1:], strict=False))
    bound = 2 * watts * (lag + 2 * float(np.diff(trace.t).max())) + 1e-5
    assert run["energy_j"] == pytest.approx(watts * run["duration_s"], abs=bound)
    assert np.nanmax(trace.values) < 3.0  # the raw readings did wrap


@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
def test_recorder_sensor_vanishes_and_returns(tmp_path: Path, process: bool) -> None:
    hwmon_chip(tmp_path, 0, {"name": "ina226", "power1_input": 2_000_000, "power1_label": "VSYS"})
    chip = hwmon_chip(tmp_path, 1, {"name": "ina3221", "curr1_input": 500, "in1_input": 5000})
    sensors = open_sensors("hwmon:ina226/VSYS,hwmon:ina3221/curr1", sysfs=str(tmp_path))
    assert sensors[1].read() == pytest.approx(2.5)  # 500 mA x 5000 mV
    aside = tmp_path / "aside"
    with PowerRecorder(sensors, period_s=0.01, process=process) as rec:
        assert (rec.pid is not None) == process
        rec.mark("idle")
        time.sleep(0.3)
        rec.mark("warm-up")
        time.sleep(0.3)
        rec.mark("inference")
        time.sleep(0.2)
        chip.rename(aside)  # the device goes away ...
        _wait_for(rec, "read failed")
        aside.rename(chip)  # ... and comes back
        time.sleep(0.2)
    trace = rec.trace
    col = trace.values[:, 1]
    assert np.isnan(col).any() and not np.isnan(col[-1])  # stop() reads once more
    assert not np.isnan(trace.values[:, 0]).any()
    s = trace.summary(inferences=10)
    (gap,) = s["gaps"]
    assert gap["sensor"] == "hwmon:ina3221/curr1" and "FileNotFoundError" in gap["reason"]
    idle, _, run = s["phases"]
    assert idle["complete"] and idle["energy_j"] == pytest.approx(4.5 * idle["duration_s"])
    assert run["sensors"]["hwmon:ina226/VSYS"]["energy_j"] == pytest.approx(2.0 * run["duration_s"])
    vi = run["sensors"]["hwmon:ina3221/curr1"]
    assert vi["complete"] is False and vi["energy_j"] is None
    assert 0 < vi["covered_s"] < run["duration_s"]
    assert run["energy_j"] is None and s["per_inference"]["complete"] is False
    assert [e["event"] for e in s["events"]][-1] == "readable again"
    assert any("hwmon:ina3221/curr1: no readings" in w for w in s["warnings"])
    assert ",nan" in csv_text(trace)
    json.dumps(s, allow_nan=False)


def test_outputs_csv_json_png(ina226: Path, tmp_path: Path) -> None:
    sensors = open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226))
    with PowerRecorder(sensors, period_s=0.01) as rec:
        rec.mark("idle")
        time.sleep(0.1)
        rec.mark("inference, batch 1")  # a comma: the CSV quotes it
        time.sleep(0.1)
    trace = rec.trace
    lines = csv_text(trace).splitlines()
    assert lines[0] == "t_s,phase,hwmon:ina226/VSYS [W]"
    assert lines[1].startswith("0.000")
    assert lines[-1].split(",")[1:] == ['"inference', ' batch 1"', "1"]  # stop()'s reading
    assert {line.rsplit(",", 1)[0].split(",", 1)[1] for line in lines[1:]} <= {
        "",
        "idle",
        '"inference, batch 1"',
    }
    summary = trace.summary(inferences=1, phase="inference, batch 1")
    out = write_json(summary, tmp_path / "power.json")
    per = json.loads(out.read_text())["per_inference"]
    assert per["avg_power_w"] == pytest.approx(1.0)
    assert per["energy_j"] == pytest.approx(per["duration_s"])  # 1 W
    png = plot_trace(trace, tmp_path / "power.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_next_slot_skips_missed_slots() -> None:
    assert next_slot(0.0104, 0.01, 1) == (2, 0)  # on time: the next slot
    assert next_slot(0.0099, 0.01, 1) == (2, 0)  # a read that ended early changes nothing
    assert next_slot(0.0351, 0.01, 1) == (4, 2)  # a read that ran into slot 3: 2 and 3 missed


@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
def test_sampling_keeps_its_schedule(ina226: Path, process: bool) -> None:
    """Live: each sample lies in its own slot of the grid t0 + k*period, and the samples and
    the missed slots add up to the time recorded (a drifting loop would fall behind)."""
    sensors = open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226))
    with PowerRecorder(sensors, period_s=0.005, process=process) as rec:
        assert (rec.pid is not None) == process
        time.sleep(0.5)
    trace = rec.trace
    slots = np.floor(trace.t[1:-1] / 0.005)  # start() and stop() take the first and last
    assert (np.diff(slots) >= 1).all()
    # every slot that came due was sampled or counted missed
    assert len(slots) + trace.missed_slots == int(trace.end_s / 0.005)


def test_empty_selection_and_misuse(ina226: Path) -> None:
    for empty in ([], "", " , "):
        with pytest.raises(SensorError, match="no power sensor selected"):
            open_sensors(empty, sysfs=str(ina226))
    with pytest.raises(SensorError, match="no power sensor selected"):
        PowerRecorder([])
    rec = PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226)))
    with pytest.raises(SensorError, match="not running"):
        rec.mark("idle")
    with pytest.raises(SensorError, match="never started"):
        rec.stop()


def test_unreadable_value_mid_run_is_a_gap(ina226: Path) -> None:
    path = ina226 / "class/hwmon/hwmon0/power1_input"
    with PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226))) as rec:
        write_atomic(path, "garbage\n")
        _wait_for(rec, "read failed")
        write_atomic(path, "1000000\n")
    s = rec.trace.summary()
    assert "ValueError" in s["gaps"][0]["reason"]
    assert s["phases"][0]["complete"] is False


# ---- the sampling child process ----------------------------------------------------------


def _wait_until(condition, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"not {what} after {timeout} s"
        time.sleep(0.01)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts: a container's init may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child sampler is Linux's")
def test_sampler_process_killed_mid_run(ina226: Path, capfd: pytest.CaptureFixture) -> None:
    """stop() returns (no hang, no traceback) and keeps what the child had sent; the trace
    ends in a gap that says the sampler died."""
    rec = PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226)), period_s=0.005)
    rec.start()
    rec.mark("inference")
    _wait_until(lambda: len(rec._sampler.t) > 10, "sampled")  # batches have arrived
    os.kill(rec.pid, signal.SIGKILL)
    trace = rec.stop()
    assert len(trace.t) > 10 and np.isnan(trace.values[-1]).all()
    assert not np.isnan(trace.values[:-1]).any()
    assert trace.events[-1]["event"] == "the sampler process died (killed by SIGKILL)"
    s = trace.summary(inferences=1)
    assert s["per_inference"]["complete"] is False
    assert any("the sampler process died" in w for w in s["warnings"])
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child sampler is Linux's")
def test_no_sampler_left_after_an_exception(ina226: Path) -> None:
    with (
        pytest.raises(RuntimeError),
        PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226)), period_s=0.001) as rec,
    ):
        pid = rec.pid
        raise RuntimeError("inference failed")
    assert pid is not None and rec.trace is not None
    with pytest.raises(ChildProcessError):  # exited and reaped: no longer our child at all
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child sampler is Linux's")
def test_sampler_process_failing_is_a_gap_not_a_traceback(
    ina226: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    def broken(self, stopping, send=None) -> None:
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(recorder._Sampler, "run", broken)  # the child inherits the patch
    with PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226))) as rec:
        assert rec.pid is not None
        _wait_for(rec, "the sampler process failed")
    assert (
        rec.trace.events[-1]["event"]
        == "the sampler process failed (RuntimeError: a bug in the loop)"
    )
    assert "Traceback" not in capfd.readouterr().err


def test_falls_back_to_a_thread(ina226: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that never says it is ready (here: it exits at once) is not waited for: the
    recorder samples on a thread instead."""
    monkeypatch.setattr(recorder, "_child", lambda *args: None)
    with PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=str(ina226))) as rec:
        assert rec.pid is None
        time.sleep(0.05)
    assert not rec.trace.events and not np.isnan(rec.trace.values).any()


ABANDON = """
import sys, time
from dpukit.host.power import PowerRecorder, open_sensors
with PowerRecorder(open_sensors("hwmon:ina226/VSYS", sysfs=sys.argv[1]), period_s=0.001) as rec:
    print(rec.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child sampler is Linux's")
@pytest.mark.parametrize("how", ["ctrl-c", "parent-killed"])
def test_no_orphan_sampler(ina226: Path, how: str) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops the sampler
    through the `with`; a parent killed outright leaves a sampler that notices and exits."""
    proc = subprocess.Popen([sys.executable, "-c", ABANDON, str(ina226)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        sampler = int(proc.stdout.readline())
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.kill()
        err = proc.communicate(timeout=60)[1]
        _wait_until(lambda: _gone(sampler), "exited")
    finally:
        proc.kill()
    if how == "ctrl-c":
        assert err.count("Traceback") == 1 and "KeyboardInterrupt" in err  # the parent's only
