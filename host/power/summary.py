"""A trace's JSON summary: energy per phase and per sensor, the idle baseline, energy per
inference (total and dynamic) with its uncertainty, gaps and warnings. Every figure is
measured; a phase that a gap touches reports its energy as null (incomplete) and says
how much of it the readings cover, never a zero or a line drawn across the gap."""

from __future__ import annotations

import numpy as np

from dpukit.host.power import integrate
from dpukit.host.power.sensor import MEASURED

SHORT_PHASE_UPDATES = 3  # a phase under this many sensor update periods rests on few readings


class _Column:
    """One sensor's readings, ready to integrate: counters unwrapped, gaps found."""

    def __init__(self, trace, j: int):
        info = self.info = trace.sensors[j]
        self.t = trace.t
        v = trace.values[:, j]
        self.counter = info["counter"]
        resets = np.zeros(len(v), dtype=bool)
        if self.counter:
            v, resets = integrate.unwrap(v, info["wrap"])
        good = ~np.isnan(v)
        self.v = v
        self.valid = good[:-1] & good[1:] & ~resets[1:]
        self.update_s = info["update_period_s"]
        declared = info["resolution"] or 0.0
        self.resolution = declared if self.counter else integrate.quantum(v, declared)
        self.gaps = self._gaps(trace.events, resets)

    def _gaps(self, events: list[dict], resets: np.ndarray) -> list[dict]:
        gaps, t, bad = [], self.t, np.flatnonzero(~self.valid)
        runs = np.split(bad, np.flatnonzero(np.diff(bad) > 1) + 1) if len(bad) else []
        for run in runs:
            start, end = float(t[run[0]]), float(t[run[-1] + 1])
            why = [e["event"] for e in events if e["sensor"] == self.info["name"]
                   and start <= e["t_s"] <= end and e["event"] != "readable again"]  # fmt: skip
            if not why and resets[run[-1] + 1]:
                why = ["the counter went backwards (reset?) and its range is unknown"]
            gaps.append({"sensor": self.info["name"], "start_s": start, "end_s": end,
                         "reason": why[0] if why else "no reading"})  # fmt: skip
        return gaps

    def energy(self, a: float, b: float) -> tuple[float, float, float]:
        """(J, uncertainty J, seconds covered by readings) over [a, b]."""
        f = integrate.counter_energy if self.counter else integrate.power_energy
        e, sigma = f(self.t, self.v, self.valid, a, b, self.resolution, self.update_s)
        return e, sigma, integrate.covered(self.t, self.valid, a, b)


def _figures(cols: list[_Column], spans: list[tuple[float, float]]) -> dict:
    """Energy over some phase spans, per sensor and summed over the sensors."""
    duration = sum(b - a for a, b in spans)
    per, total, var, whole = {}, 0.0, 0.0, True
    for c in cols:
        parts = [c.energy(a, b) for a, b in spans]
        e, cov = sum(p[0] for p in parts), sum(p[2] for p in parts)
        sigma = float(np.sqrt(sum(p[1] ** 2 for p in parts)))
        complete = cov >= duration * (1 - 1e-9)
        whole &= complete
        total, var = total + e, var + sigma**2
        per[c.info["name"]] = _energy_fields(e, sigma, duration, complete, cov)
    fields = _energy_fields(total, float(np.sqrt(var)), duration, whole, None)
    return {"duration_s": duration, **fields, "sensors": per}


def _energy_fields(e, sigma, duration, complete, cov) -> dict:
    if complete:
        power = e / duration if duration > 0 else None
        return {"complete": True, "energy_j": e, "uncertainty_j": sigma, "avg_power_w": power}
    out = {"complete": False, "energy_j": None, "uncertainty_j": None, "avg_power_w": None}
    if cov is not None:  # what the readings do cover, to judge by, not to use as the energy
        out.update(covered_s=cov, energy_covered_j=e)
    return out


def summarize(trace, inferences: int | None, phase: str, baseline: str) -> dict:
    cols = [_Column(trace, j) for j in range(len(trace.sensors))]
    names = ", ".join(trace.names)
    phases = trace.phases()
    short = _short(trace, cols)
    # a short phase is flagged in its entry; warned of when its energy is a headline figure
    headline = {phase, baseline} if inferences else {n for n, _, _ in phases}
    warnings = [short(n, a, b) for n, a, b in phases if n in headline and short(n, a, b)]
    warnings += _gap_warnings(trace, cols, phases)
    out_phases = []
    for name, a, b in phases:
        samples = int(np.count_nonzero((trace.t >= a) & (trace.t <= b)))
        out_phases.append({"name": name, "start_s": a, "end_s": b, "duration_s": b - a,
                           "samples": samples, "short": bool(short(name, a, b)),
                           **_figures(cols, [(a, b)])})  # fmt: skip
    spans = {n: [(a, b) for m, a, b in phases if m == n] for n in (phase, baseline)}
    base = _figures(cols, spans[baseline]) if spans[baseline] else None
    doc = {
        "kind": MEASURED,
        "label": f"{MEASURED} ({names})",
        "sensors": [{**c.info, "resolution_used": c.resolution} for c in cols],
        "period_s": trace.period_s,
        "samples": len(trace.t),
        "missed_slots": trace.missed_slots,
        "duration_s": trace.end_s,
        "phases": out_phases,
        "baseline": _baseline(base, baseline),
        "per_inference": None,
        "gaps": [g for c in cols for g in c.gaps],
        "events": trace.events,
        "warnings": warnings,
        "uncertainty_method": integrate.UNCERTAINTY_METHOD,
    }
    if inferences:
        if spans[phase]:
            doc["per_inference"] = _per_inference(
                _figures(cols, spans[phase]), inferences, phase, doc
            )
        else:
            warnings.append(f"no '{phase}' phase was marked: no energy per inference")
    return doc


def _baseline(base: dict | None, name: str) -> dict | None:
    if base is None:
        return None
    fields = {"phase": name, "complete": base["complete"], "power_w": base["avg_power_w"]}
    if base["complete"] and base["duration_s"] > 0:
        fields["uncertainty_w"] = base["uncertainty_j"] / base["duration_s"]
    return fields


def _per_inference(run: dict, n: int, phase: str, doc: dict) -> dict:
    duration = run["duration_s"]
    out = {"phase": phase, "inferences": n, "duration_s": duration, "label": doc["label"],
           "complete": run["complete"]}  # fmt: skip
    if not run["complete"]:
        out["note"] = f"a sensor has a gap during '{phase}' (see gaps): no energy per inference"
        return out
    e, sigma = run["energy_j"], run["uncertainty_j"]
    out.update(energy_j=e / n, uncertainty_j=sigma / n, avg_power_w=e / duration,
               avg_power_uncertainty_w=sigma / duration)  # fmt: skip
    idle = doc["baseline"]
    if idle is None or not idle["complete"] or idle.get("uncertainty_w") is None:
        out["note"] = f"no complete '{idle['phase'] if idle else 'idle'}' phase: no dynamic energy"
        return out
    dyn, dyn_sigma = integrate.dynamic(e, sigma, duration, idle["power_w"], idle["uncertainty_w"])
    out.update(dynamic_energy_j=dyn / n, dynamic_uncertainty_j=dyn_sigma / n,
               dynamic_power_w=dyn / duration, idle_power_w=idle["power_w"])  # fmt: skip
    if len(doc["sensors"]) > 1:
        out["note"] = "summed over the sensors: choose rails that do not contain one another"
    return out


def _short(trace, cols: list[_Column]):
    """A function of a phase: why it is too short to trust, or None."""
    update = max([trace.period_s] + [c.update_s or 0.0 for c in cols])

    def short(name: str, a: float, b: float) -> str | None:
        if b - a >= SHORT_PHASE_UPDATES * update:
            return None
        return (
            f"phase '{name}' lasted {b - a:.3g} s, under {SHORT_PHASE_UPDATES} sensor "
            f"update periods ({update:g} s): its energy rests on few readings; make it longer"
        )

    return short


def _gap_warnings(trace, cols: list[_Column], phases) -> list[str]:
    warnings = []
    for g in (g for c in cols for g in c.gaps):
        hit = [n for n, a, b in phases if a < g["end_s"] and g["start_s"] < b]
        warnings.append(
            f"{g['sensor']}: no readings from {g['start_s']:.3f} s to {g['end_s']:.3f} s "
            f"({g['reason']}); incomplete: {', '.join(hit) or 'no phase'}"
        )
    expected = trace.end_s / trace.period_s
    if trace.missed_slots > max(0.01 * expected, 2):
        warnings.append(
            f"the sampler missed {trace.missed_slots} of {expected:.0f} sampling slots (a busy "
            "machine or a slow sensor); the times are real, the trace is coarser there"
        )
    return warnings
