"""The flow's report: data first, then what is drawn from it.

    stages.csv    one row per stage, every figure in a column whose name says modeled or
                  measured (and its level: network or DPU)
    report.json   seed 000's table (stage, power W, accuracy %) with what the kit adds
                  (latency, energy per inference, size), each row's kinds; every stage's
                  full result; the elimination curves and seed 001's choice; the Pareto front
    plots/*.png   accuracy vs energy per inference with the Pareto front; power and
                  accuracy per stage; the energy breakdown per stage (MAC / SRAM weights /
                  SRAM activations / DRAM, seed 001); the per-layer elimination curves
    report.html   one self-contained page: the tables, and the plots embedded (base64)

`render(report_dir)` redraws the plots and the page from report.json alone, so a report
can be regenerated and diffed. matplotlib draws on its Agg canvas (no display, no pyplot).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

from dpukit.errors import DpuKitError

MODELED = "modeled"
MEASURED = "measured"
BREAKDOWN = ("mac", "sram_weights", "sram_activations", "dram", "logic", "static")
BREAKDOWN_NAMES = {
    "mac": "MAC",
    "sram_weights": "SRAM weights",
    "sram_activations": "SRAM activations",
    "dram": "DRAM",
    "logic": "logic",
    "static": "static",
}
CSV_COLUMNS = (
    "stage", "kind", "runs_on", "accuracy_pct", "params", "param_bytes", "file_bytes", "macs",
    "latency_ms", "latency_kind", "dpu_cycles_per_image_modeled",
    "dpu_cycles_per_image_measured", "energy_dpu_modeled_j",
    *(f"energy_dpu_modeled_{c}_j" for c in BREAKDOWN), "power_dpu_modeled_w",
    "energy_network_modeled_j",
    *(f"energy_network_modeled_{c}_j" for c in BREAKDOWN[:4]),
    "power_measured_w", "energy_measured_j", "energy_measured_uncertainty_j",
    "energy_measured_dynamic_j", "measured_label",
)  # fmt: skip
TABLE_KEYS = (
    "stage", "power_w", "power_kind", "accuracy_pct", "latency_ms", "latency_kind",
    "dpu_latency_modeled_ms", "energy_per_inference_j", "energy_kind", "energy_measured_j",
    "size_bytes", "params", "macs",
)  # fmt: skip
PLOTS = {
    "accuracy_vs_energy": "accuracy vs energy per inference, with the Pareto front",
    "power_accuracy": "power and accuracy per stage",
    "energy_breakdown": "energy per inference by where it goes, per stage",
    "elimination_curves": "per-layer neuron elimination curves",
}


def write_report(
    report_dir: str | Path,
    stages: list[dict],
    meta: dict,
    curves: dict[str, list[dict]] | None = None,
    choice: dict | None = None,
) -> dict[str, Path]:
    """Write stages.csv and report.json from the stages' results, then the plots and
    report.html from report.json; the files written, by name."""
    root = Path(report_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = [csv_row(s) for s in stages]
    with (root / "stages.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    table = [table_row(s) for s in stages]
    doc = {
        "report": "dpukit flow",
        "labels": {
            MODELED: "computed by the kit's models (the cycle model, the energy tables)",
            MEASURED: "read from this machine: its clock (host latency), the RTL's or board's "
            "counters (DPU cycles), power sensors (power, energy)",
        },
        **meta,
        "table": table,
        "pareto_front": {"energy": _pareto_energy_name(table), "stages": pareto_front(table)},
        "stages": stages,
        "elimination_curves": curves or {},
        "elimination_choice": choice,
    }
    (root / "report.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return {"stages.csv": root / "stages.csv", "report.json": root / "report.json", **render(root)}


def render(report_dir: str | Path) -> dict[str, Path]:
    """The plots and report.html, drawn from report_dir/report.json."""
    root = Path(report_dir)
    try:
        doc = json.loads((root / "report.json").read_text())
    except (OSError, ValueError) as exc:
        raise DpuKitError(f"{root}/report.json: not a readable flow report ({exc})") from None
    plots_dir = root / "plots"
    plots_dir.mkdir(exist_ok=True)
    written = {}
    pngs = plot_pngs(doc)
    for name, png in pngs.items():
        path = plots_dir / f"{name}.png"
        path.write_bytes(png)
        written[name] = path
    page = root / "report.html"
    page.write_text(html_page(doc, pngs))
    written["report.html"] = page
    return written


# -- rows ------------------------------------------------------------------------------------


def csv_row(s: dict) -> dict:
    """A stage's result as one CSV row (CSV_COLUMNS)."""
    dpu = s.get("dpu_modeled") or {}
    dpu_energy = dpu.get("energy") or {}
    net = s.get("energy_network_modeled") or {}
    m = s.get("measured") or {}
    measured_cycles = s.get("cycles_per_image") if s["kind"] == "dpu" else None
    if measured_cycles is not None and not s.get("cycles_kind", "").startswith(MEASURED):
        measured_cycles = None
    row = {
        "stage": s["stage"],
        "kind": s["kind"],
        "runs_on": s["runs_on"],
        "accuracy_pct": 100 * s["accuracy"],
        "params": s["params"],
        "param_bytes": s["param_bytes"],
        "file_bytes": s["file_bytes"],
        "macs": s["macs"],
        "latency_ms": s["latency_ms"],
        "latency_kind": s["latency_kind"],
        "dpu_cycles_per_image_modeled": _modeled_cycles(s),
        "dpu_cycles_per_image_measured": measured_cycles,
        "energy_dpu_modeled_j": dpu_energy.get("total"),
        **{f"energy_dpu_modeled_{c}_j": dpu_energy.get(c) for c in BREAKDOWN},
        "power_dpu_modeled_w": dpu.get("average_power_w"),
        "energy_network_modeled_j": net.get("total"),
        **{f"energy_network_modeled_{c}_j": net.get(c) for c in BREAKDOWN[:4]},
        "power_measured_w": m.get("avg_power_w"),
        "energy_measured_j": m.get("energy_j"),
        "energy_measured_uncertainty_j": m.get("uncertainty_j"),
        "energy_measured_dynamic_j": m.get("dynamic_energy_j"),
        "measured_label": m.get("label"),
    }
    return {k: "" if v is None else v for k, v in row.items()}


def _modeled_cycles(s: dict) -> float | None:
    if s["kind"] == "dpu":
        return s.get("cycles_per_image_modeled")
    return (s.get("dpu_modeled") or {}).get("cycles_per_image")


def table_row(s: dict) -> dict:
    """Seed 000's row (stage, power W, accuracy %) and what the kit adds, with the kinds:
    power measured where sensors recorded it, else the DPU level's modeled average power;
    energy per inference modeled at the DPU level (network level if it cannot deploy)."""
    m = s.get("measured") or {}
    dpu = s.get("dpu_modeled") or {}
    if m.get("avg_power_w") is not None:
        power, power_kind = m["avg_power_w"], m["label"]
    elif dpu.get("average_power_w") is not None:
        power, power_kind = dpu["average_power_w"], f"{MODELED} (DPU level, on {dpu['config']})"
    else:
        power, power_kind = None, None
    if dpu.get("energy"):
        energy, energy_kind = dpu["energy"]["total"], f"{MODELED} (DPU level, on {dpu['config']})"
    else:
        net = s["energy_network_modeled"]
        energy, energy_kind = net["total"], f"{MODELED} (network level, {net['table']})"
    return {
        "stage": s["stage"],
        "power_w": power,
        "power_kind": power_kind,
        "accuracy_pct": 100 * s["accuracy"],
        "latency_ms": s["latency_ms"],
        "latency_kind": s["latency_kind"],
        "dpu_latency_modeled_ms": dpu.get("latency_ms_modeled", dpu.get("latency_ms")),
        "energy_per_inference_j": energy,
        "energy_kind": energy_kind,
        "energy_measured_j": m.get("energy_j"),
        "size_bytes": s["param_bytes"],
        "params": s["params"],
        "macs": s["macs"],
    }


def _pareto_energy_name(table: list[dict]) -> str:
    kinds = {r["energy_kind"] for r in table}
    return kinds.pop() if len(kinds) == 1 else "mixed levels: " + "; ".join(sorted(kinds))


def pareto_front(table: list[dict]) -> list[str]:
    """The stages no other stage beats: none has less or equal energy per inference and at
    least the accuracy, one of the two strictly. Only energies of one kind are compared: those
    of the last stage's (the DPU's) level; a stage priced at another level is left out."""
    kind = table[-1]["energy_kind"] if table else None
    # rounded: one energy summed in two orders differs in its last bits, and is not less
    points = [
        (float(f"{r['energy_per_inference_j']:.9e}"), r["accuracy_pct"], r["stage"])
        for r in table
        if r["energy_per_inference_j"] is not None and r["energy_kind"] == kind
    ]
    return [
        name
        for e, a, name in points
        if not any(e2 <= e and a2 >= a and (e2 < e or a2 > a) for e2, a2, _ in points)
    ]


# -- plots -----------------------------------------------------------------------------------


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DpuKitError("the report's plots need matplotlib") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def plot_pngs(doc: dict) -> dict[str, bytes]:
    """Every plot the report has data for, as PNG bytes by name (PLOTS)."""
    pngs = {
        "accuracy_vs_energy": _accuracy_vs_energy(doc),
        "power_accuracy": _power_accuracy(doc),
        "energy_breakdown": _energy_breakdown(doc),
    }
    if doc.get("elimination_curves"):
        pngs["elimination_curves"] = _elimination_curves(doc)
    return pngs


def _accuracy_vs_energy(doc: dict) -> bytes:
    table = [r for r in doc["table"] if r["energy_per_inference_j"] is not None]
    measured = [r for r in table if r["energy_measured_j"] is not None]
    fig = _figure(11 if measured else 7, 4.8)
    panels = [("energy_per_inference_j", doc["pareto_front"]["energy"], True)]
    if measured:
        panels.append(("energy_measured_j", f"{MEASURED} (sensors)", False))
    front = set(doc["pareto_front"]["stages"])
    for k, (key, kind, with_front) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        rows = [r for r in table if r[key] is not None]
        ax.scatter([r[key] for r in rows], [r["accuracy_pct"] for r in rows], zorder=3)
        at: dict[tuple[str, float], list[str]] = {}  # stages at one point share a label
        for r in rows:
            at.setdefault((f"{r[key]:.6e}", r["accuracy_pct"]), []).append(r["stage"])
        for i, ((x, y), stages) in enumerate(sorted(at.items(), key=lambda p: float(p[0][0]))):
            # neighbours' labels alternate above and below their points
            below = i % 2
            ax.annotate(", ".join(stages), (float(x), y), fontsize=7,
                        xytext=(4, -11 if below else 4), textcoords="offset points")  # fmt: skip
        if with_front:
            on = sorted((r[key], r["accuracy_pct"]) for r in rows if r["stage"] in front)
            if on:
                xs, ys = zip(*on, strict=True)
                ax.step(xs, ys, where="post", color="tab:red", lw=1.2, label="Pareto front")
                ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel(f"energy per inference (J), {kind}", fontsize=8)
        ax.set_ylabel("top-1 accuracy (%), test split")
        ax.grid(alpha=0.3)
    fig.suptitle("accuracy vs energy per inference", fontsize=10)
    return _png(fig)


def _power_accuracy(doc: dict) -> bytes:
    table = doc["table"]
    names = [r["stage"] for r in table]
    fig = _figure(max(7, 0.8 * len(names) + 3), 6)
    ax_p, ax_a = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    x = range(len(names))
    powers = [r["power_w"] if r["power_w"] is not None else 0.0 for r in table]
    bars = ax_p.bar(x, powers, color="tab:orange")
    for bar, r in zip(bars, table, strict=True):
        kind = r["power_kind"] or "none"
        if not kind.startswith(MEASURED):
            bar.set_hatch("//")
            bar.set_facecolor("white")
            bar.set_edgecolor("tab:orange")
        label = "n/a" if r["power_w"] is None else f"{r['power_w']:.3g}"
        ax_p.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=7)  # fmt: skip
    kinds = sorted({r["power_kind"] for r in table if r["power_kind"]})
    ax_p.set_ylabel("power (W)")
    ax_p.set_title("power per stage: solid measured, hatched modeled ("
                   + "; ".join(kinds) + ")", fontsize=8)  # fmt: skip
    acc = [r["accuracy_pct"] for r in table]
    bars = ax_a.bar(x, acc, color="tab:blue")
    for bar, a in zip(bars, acc, strict=True):
        ax_a.annotate(f"{a:.1f}", (bar.get_x() + bar.get_width() / 2, a), ha="center",
                      va="bottom", fontsize=7)  # fmt: skip
    ax_a.set_ylim(max(0.0, min(acc) - 10), 100)
    ax_a.set_ylabel("top-1 accuracy (%)")
    ax_a.set_title("top-1 accuracy on the test split", fontsize=8)
    for ax in (ax_p, ax_a):
        ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
    return _png(fig)


def _energy_breakdown(doc: dict) -> bytes:
    stages = doc["stages"]
    names = [s["stage"] for s in stages]
    levels = [("dpu", "DPU level"), ("network", "network level (seed 001)")]
    fig = _figure(max(8, 0.9 * len(names) + 4), 7)
    colors = dict(zip(BREAKDOWN, ("tab:blue", "tab:green", "tab:olive", "tab:red", "tab:gray",
                                  "tab:purple"), strict=True))  # fmt: skip
    for k, (level, title) in enumerate(levels):
        ax = fig.add_subplot(2, 1, k + 1)
        parts = [_breakdown(s, level) for s in stages]
        bottom = [0.0] * len(stages)
        shown = [c for c in BREAKDOWN if any(p.get(c) for p in parts)]
        for c in shown:
            values = [p.get(c) or 0.0 for p in parts]
            ax.bar(range(len(names)), values, bottom=bottom, label=BREAKDOWN_NAMES[c],
                   color=colors[c])  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        tables = sorted({p["table"] for p in parts if p.get("table")})
        ax.set_title(f"energy per inference, {MODELED}, {title} ({'; '.join(tables)})",
                     fontsize=8)  # fmt: skip
        ax.set_ylabel("J per inference")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        if shown:
            ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def _breakdown(stage: dict, level: str) -> dict:
    if level == "dpu":
        return (stage.get("dpu_modeled") or {}).get("energy") or {}
    return stage.get("energy_network_modeled") or {}


def _elimination_curves(doc: dict) -> bytes:
    curves = doc["elimination_curves"]
    fig = _figure(7, 4.8)
    ax = fig.add_subplot()
    for layer, points in curves.items():
        pts = sorted(points, key=lambda p: p["energy_j_modeled"])
        ax.plot([p["energy_j_modeled"] for p in pts], [100 * p["accuracy"] for p in pts],
                marker="o", ms=3, label=layer)  # fmt: skip
        for p in pts:
            ax.annotate(str(p["keep"]), (p["energy_j_modeled"], 100 * p["accuracy"]),
                        fontsize=6, xytext=(2, 2), textcoords="offset points")  # fmt: skip
    choice = doc.get("elimination_choice")
    if choice:
        ax.axhline(100 * choice["target_accuracy"], color="gray", ls="--", lw=0.8,
                   label=f"target; best: {choice['layer']} keeping {choice['keep']}")  # fmt: skip
    ax.set_xlabel(f"energy per inference (J), {MODELED}, network level")
    ax.set_ylabel("top-1 accuracy (%), validation split")
    ax.set_title("neuron elimination per layer (points: neurons kept)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


# -- the page --------------------------------------------------------------------------------


def fmt(value, unit: str = "") -> str:
    """A figure for the page: SI prefix for J and W, '-' for none."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if unit in ("J", "W", "s"):
        for k, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
            if abs(value) >= k:
                return f"{value / k:.4g} {prefix}{unit}"
        return f"{value:.3g} {unit}"
    if unit == "%":
        return f"{value:.2f} %"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}{' ' + unit if unit else ''}"


def html_page(doc: dict, pngs: dict[str, bytes]) -> str:
    """The self-contained page: the tables and every plot embedded as a data URI."""
    e = html.escape
    table_cols = (
        ("stage", "stage", ""), ("power_w", "power", "W"), ("power_kind", "power is", ""),
        ("accuracy_pct", "accuracy", "%"), ("latency_ms", "latency / image", "ms"),
        ("latency_kind", "latency is", ""),
        ("dpu_latency_modeled_ms", "DPU latency / image, modeled (cycle model)", "ms"),
        ("energy_per_inference_j", "energy / inference", "J"),
        ("energy_kind", "energy is", ""), ("energy_measured_j", "energy / inference, measured",
                                           "J"),
        ("size_bytes", "parameter bytes", ""), ("params", "parameters", ""), ("macs", "MACs", ""),
    )  # fmt: skip
    head = "".join(f"<th>{e(title)}</th>" for _, title, _ in table_cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(fmt(r[k], u))}</td>" for k, _, u in table_cols) + "</tr>"
        for r in doc["table"]
    )
    csv_head = "".join(f"<th>{e(c)}</th>" for c in CSV_COLUMNS)
    csv_body = "".join(
        "<tr>" + "".join(f"<td>{e(fmt(v))}</td>" for v in csv_row(s).values()) + "</tr>"
        for s in doc["stages"]
    )
    figures = "".join(
        f'<figure><img alt="{e(PLOTS[name])}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{e(PLOTS[name])}</figcaption></figure>'
        for name, png in pngs.items()
    )
    choice = doc.get("elimination_choice")
    choice_line = (
        f"<p>Neuron elimination (seed 001): within 2 points of the unreduced model's validation "
        f"accuracy, keeping {choice['keep']} neurons of {e(choice['layer'])} saves the most "
        f"energy ({MODELED}).</p>"
        if choice
        else ""
    )
    meta = "".join(
        f"<li><b>{e(k)}</b>: {e(str(doc.get(k)))}</li>"
        for k in ("model", "data", "config", "backend", "sensors")
    )
    labels = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in doc["labels"].items())
    front = ", ".join(doc["pareto_front"]["stages"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dpukit flow report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 13px; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 100%; }}
.wide {{ overflow-x: auto; }}
</style></head><body>
<h1>dpukit flow report</h1>
<ul>{meta}</ul>
<p>Every figure is labelled:</p><ul>{labels}</ul>
<h2>Stages (seed 000's table: stage, power, accuracy; with latency, energy, size)</h2>
<div class="wide"><table><tr>{head}</tr>{body}</table></div>
<p>Pareto front (energy per inference, {e(doc["pareto_front"]["energy"])} vs accuracy):
{e(front)}</p>
{choice_line}
<h2>Plots</h2>
{figures}
<h2>Every figure (stages.csv)</h2>
<div class="wide"><table><tr>{csv_head}</tr>{csv_body}</table></div>
</body></html>
"""
