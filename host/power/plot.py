"""The trace as a PNG: power of each sensor over time, phases shaded and named, gaps
hatched. People look at a trace rather than read it. matplotlib loads here only, on its
non-interactive Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dpukit.errors import DpuKitError
from dpukit.host.power.integrate import unwrap

_SHADES = ("#dbe9f6", "#fde7cf", "#dff2dc", "#f2dff0", "#eeeeee")


def plot_trace(trace, path: str | Path, title: str | None = None) -> Path:
    """Write the PNG; a counter is drawn as the power between its readings."""
    path = Path(path)
    path.write_bytes(png_bytes(trace, title))
    return path


def png_bytes(trace, title: str | None = None) -> bytes:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DpuKitError("the power trace's PNG needs matplotlib") from None

    fig = Figure(figsize=(10, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {}
    for name, a, b in trace.phases():
        color = colors.setdefault(name, _SHADES[len(colors) % len(_SHADES)])
        ax.axvspan(a, b, color=color, lw=0)
        ax.text((a + b) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8)  # fmt: skip
    for j, s in enumerate(trace.sensors):
        t, v = trace.t, trace.values[:, j]
        if s["counter"]:
            c, _ = unwrap(v, s["wrap"])
            t, v = (t[1:] + t[:-1]) / 2, np.diff(c) / np.diff(trace.t)
        ax.plot(t, v, lw=1, label=s["name"])  # NaN (a gap) breaks the line
    for i, g in enumerate(trace.summary()["gaps"]):  # the spans without readings
        ax.axvspan(g["start_s"], g["end_s"], facecolor="none", edgecolor="red", hatch="//",
                   lw=0, label=None if i else "gap: no readings")  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.set_ylabel("power (W)")
    names = ", ".join(trace.names)
    ax.set_title(title or f"measured power ({names})", fontsize=10, pad=14)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(0, max(trace.end_s, float(trace.t[-1]) if len(trace.t) else 0.0))
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
