"""Energy from samples: the trapezoid rule for power readings, differences for cumulative
counters (with wrap-around), and the uncertainty of each. Pure numpy (< 2 on the boards).

A trace is n samples at times t (s); a sensor's column holds NaN where a read failed. The
segment between samples i and i+1 counts only when both readings are good (`valid`);
the time of the other segments is a gap, whose energy is unknown, never zero.
"""

from __future__ import annotations

import math

import numpy as np

UNCERTAINTY_METHOD = (
    "one standard deviation. Power sensors: quantization, resolution/sqrt(12) per reading "
    "carried through the trapezoid weights, combined in quadrature with sampling, duration x "
    "sample std / sqrt(n) (n at most duration / sensor update period): how far the mean of "
    "the readings may sit from the true mean when power changes faster than the sampling (an "
    "overestimate for slow changes). Energy counters: resolution/sqrt(6) for the two readings "
    "of a difference, and at each phase boundary the energy of the straddling interval "
    "(at least one counter update period) / sqrt(12), for interpolating where in it the "
    "boundary fell. Resolution: the sensor's stated step, or the smallest step between "
    "readings when that is coarser. Dynamic energy adds the idle power's uncertainty x "
    "duration. Sensors add in quadrature."
)


def _clipped(t: np.ndarray, a: float, b: float):
    """Per segment: its start, end, length, and the part of it inside [a, b]."""
    t0, t1 = t[:-1], t[1:]
    lo, hi = np.clip(a, t0, t1), np.clip(b, t0, t1)
    return t0, t1, np.where(t1 > t0, t1 - t0, 1.0), lo, hi


def trapezoid_weights(t: np.ndarray, valid: np.ndarray, a: float, b: float) -> np.ndarray:
    """w such that sum(w * p) is the integral over [a, b] of the straight lines between
    consecutive readings p (the trapezoid rule, with p interpolated at a and b), over the
    valid segments only. Each segment's two hat functions, integrated over its clipped part."""
    t0, t1, h, lo, hi = _clipped(t, a, b)
    left = np.where(valid, ((t1 - lo) ** 2 - (t1 - hi) ** 2) / (2 * h), 0.0)  # of (t1 - t)/h
    right = np.where(valid, ((hi - t0) ** 2 - (lo - t0) ** 2) / (2 * h), 0.0)  # of (t - t0)/h
    w = np.zeros(len(t))
    w[:-1] += left
    w[1:] += right
    return w


def covered(t: np.ndarray, valid: np.ndarray, a: float, b: float) -> float:
    """Seconds of [a, b] that valid segments cover (b - a when the phase has no gap)."""
    _, _, _, lo, hi = _clipped(t, a, b)
    return float(np.sum(np.where(valid, hi - lo, 0.0)))


def power_energy(t, p, valid, a: float, b: float, resolution: float, update_s: float | None):
    """(J, uncertainty J) of power readings p (W) over [a, b], valid segments only."""
    w = trapezoid_weights(t, valid, a, b)
    used = w > 0
    p = np.where(used, p, 0.0)  # NaN readings outside the valid segments carry no weight
    energy = float(np.dot(w, p))
    quant = resolution / math.sqrt(12) * float(np.sqrt(np.dot(w, w)))
    n = int(used.sum())
    duration = float(w.sum())
    sampling = 0.0
    if n >= 2:
        n_eff = min(n, max(1.0, duration / update_s)) if update_s else n
        sampling = duration * float(np.std(p[used], ddof=1)) / math.sqrt(n_eff)
    return energy, math.hypot(quant, sampling)


def counter_energy(t, c, valid, a: float, b: float, resolution: float, update_s: float | None):
    """(J, uncertainty J) of an unwrapped cumulative counter c (J) over [a, b]: its rise,
    interpolated linearly at a and b, over the valid segments only."""
    t0, t1, h, lo, hi = _clipped(t, a, b)
    rise = np.where(valid, np.diff(c), 0.0)
    energy = float(np.sum(rise * (hi - lo) / h))
    var = 2 * resolution**2 / 12
    for x in (a, b):  # where inside the straddling interval the boundary's energy fell
        i = int(np.searchsorted(t, x, side="right")) - 1
        if 0 <= i < len(h) and valid[i]:
            span = max(h[i], update_s or 0.0)
            var += (rise[i] / h[i] * span) ** 2 / 12
    return energy, math.sqrt(var)


def unwrap(c: np.ndarray, wrap: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A cumulative counter made monotonic. Where it falls between two good readings it has
    wrapped (+wrap) when its range is known; otherwise it was reset: the rise across that
    segment is unknown, returned as True in `resets` (the segment ending at that reading),
    and the rest of the counter is shifted to continue where it was."""
    c = np.asarray(c, dtype=float)
    good = np.flatnonzero(~np.isnan(c))
    out = c.copy()
    resets = np.zeros(len(c), dtype=bool)
    if len(good) < 2:
        return out, resets
    steps = np.diff(c[good])
    falls = steps < 0
    if wrap:
        shift = wrap * np.cumsum(falls)
    else:
        shift = -np.cumsum(np.where(falls, steps, 0.0))  # a reset adds nothing
        resets[good[1:][falls]] = True
    out[good[1:]] += shift
    return out, resets


def quantum(values: np.ndarray, declared: float) -> float:
    """A reading's step: the declared one, or the smallest step between good consecutive
    readings when that is coarser (a sensor quantizes more coarsely than its file's unit)."""
    v = values[~np.isnan(values)]
    steps = np.abs(np.diff(v))
    steps = steps[steps > 0]
    return max(declared, float(steps.min())) if len(steps) else declared


def dynamic(energy: float, sigma: float, duration: float, idle_w: float, idle_sigma_w: float):
    """Energy above the idle baseline over `duration`, and its uncertainty."""
    return energy - idle_w * duration, math.hypot(sigma, idle_sigma_w * duration)
