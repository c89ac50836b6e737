"""SCALE-Sim 3.0.0 as the cycle-count peer of our timing model (compiler/timing.py).

SCALE-Sim needs numpy<2, so it runs in its own virtual environment, `.venv-scalesim` at the
repo root, created on first use, as a subprocess. Its weight-stationary cycles per layer are
(2R + C + T - 2) * ceil(S_R/R) * ceil(S_C/C) - 1 (R x C array, S_R = k*k*cin, S_C = cout,
T = output pixels): our GEMM's per-fold count, minus one because SCALE-Sim reports the index
of the last OFMAP write, not a count. Results are cached in the venv (`cycles.json`): a
full-size ResNet-18 layer takes minutes there.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from resnet18_layers import ConvLayer, build_layer_model, resnet18_layers

from dpukit.compiler.compile import compile_model
from dpukit.compiler.hwconfig import load_config
from dpukit.errors import DpuKitError
from dpukit.host.runner import create_runner
from dpukit.models import zoo

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-scalesim"
CACHE = VENV / "cycles.json"  # SCALE-Sim's results by array and layer shape
REQUIREMENTS = ("scalesim==3.0.0", "numpy<2", "tqdm")
SRAM_KB = 4096  # per operand: holds every ResNet-18 layer's operands, so no refetching

_CONFIG = """\
[general]
run_name = peer

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {sram}
FilterSramSzkB: {sram}
OfmapSramSzkB: {sram}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 8
Dataflow: ws
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""
_TOPOLOGY_HEADER = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
    "Num Filter, Strides,\n"
)
# Ignored with custom layouts off, but SCALE-Sim 3.0.0 reads one row per layer.
_LAYOUT_HEADER = "Layer name, a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,\n"
_LAYOUT_ROW = " 1, 1, 1, 1, 8, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1,\n"
_RUN = (
    "import sys\n"
    "from scalesim.scale_sim import scalesim\n"
    "cfg, topo, layout, out = sys.argv[1:]\n"
    "scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,"
    " layout=layout).run_scale(top_path=out)\n"
)


class ScaleSimError(DpuKitError):
    """SCALE-Sim could not be installed or run."""


def ensure_venv() -> Path:
    """The SCALE-Sim venv's python, creating the venv once (a stamp records the install)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    wanted = " ".join(REQUIREMENTS)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
    ]
    VENV.mkdir(exist_ok=True)
    with open(VENV / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel test or bench waits for one install
        if stamp.is_file() and stamp.read_text().strip() == wanted:
            return python
        for cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True)
                error = done.stderr.strip()[-500:] if done.returncode else ""
            except OSError as exc:
                error = str(exc)
            if error:
                by_hand = " && ".join(shlex.join(c) for c in steps)
                raise ScaleSimError(
                    f"{VENV}: could not install SCALE-Sim (`{shlex.join(cmd)}` failed: {error})."
                    f" It needs PyPI; to set it up by hand run "
                    f"`{by_hand} && echo {shlex.quote(wanted)} > {stamp}`"
                )
        stamp.write_text(wanted + "\n")
    return python


def _ifmap_dims(layer: ConvLayer) -> tuple[int, int]:
    """Input rows and columns (padding included) the conv reads. SCALE-Sim has no padding
    parameter and computes ceil((H - k + s) / s) outputs, one too many when the last window
    does not fit; giving it only the rows and columns that are read makes its count exact."""
    return (
        (layer.out_h - 1) * layer.stride + layer.k,
        (layer.out_w - 1) * layer.stride + layer.k,
    )


def _shape_key(layer: ConvLayer, rows: int, cols: int) -> str:
    h, w = _ifmap_dims(layer)
    return f"{rows}x{cols} {h}x{w} k{layer.k} {layer.cin}->{layer.cout} s{layer.stride}"


def closed_form_cycles(layer: ConvLayer, rows: int, cols: int) -> int:
    """(2R + C + T - 2) * ceil(S_R/R) * ceil(S_C/C): a weight-stationary array that never
    stalls, loading each weight fold, streaming T pixels and draining, folds not overlapped."""
    s_r, s_c, t = layer.k * layer.k * layer.cin, layer.cout, layer.out_h * layer.out_w
    return (2 * rows + cols + t - 2) * math.ceil(s_r / rows) * math.ceil(s_c / cols)


def _run_scalesim(layers: list[ConvLayer], rows: int, cols: int) -> list[dict]:
    """One SCALE-Sim run over the layers; the COMPUTE_REPORT.csv rows in layer order."""
    python = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="dpukit-scalesim-") as tmp:
        d = Path(tmp)
        (d / "peer.cfg").write_text(_CONFIG.format(rows=rows, cols=cols, sram=SRAM_KB))
        topo, layout = [_TOPOLOGY_HEADER], [_LAYOUT_HEADER]
        for i, layer in enumerate(layers):
            h, w = _ifmap_dims(layer)
            topo.append(
                f"l{i}, {h}, {w}, {layer.k}, {layer.k}, {layer.cin}, {layer.cout}, "
                f"{layer.stride},\n"
            )
            layout.append(f"l{i},{_LAYOUT_ROW}")
        (d / "topology.csv").write_text("".join(topo))
        (d / "layout.csv").write_text("".join(layout))
        args = ["peer.cfg", "topology.csv", "layout.csv", "out"]
        done = subprocess.run(
            [str(python), "-c", _RUN, *args], cwd=d, capture_output=True, text=True
        )
        report = d / "out" / "peer" / "COMPUTE_REPORT.csv"
        if done.returncode or not report.is_file():
            raise ScaleSimError(
                f"SCALE-Sim failed on {[layer.name for layer in layers]} ({rows}x{cols}): "
                f"{done.stderr.strip()[-1000:]}"
            )
        with open(report, newline="") as f:
            rows_out = [
                {k.strip(): v.strip() for k, v in r.items() if k and k.strip()}
                for r in csv.DictReader(f, skipinitialspace=True)
            ]
    if len(rows_out) != len(layers):
        raise ScaleSimError(f"{report.name}: {len(rows_out)} rows for {len(layers)} layers")
    return rows_out


def scalesim_cycles(layers: list[ConvLayer], rows: int, cols: int) -> dict[str, dict]:
    """SCALE-Sim's weight-stationary result per layer name on a rows x cols array:
    total_cycles, stall_cycles, overall_util_pct, mapping_efficiency_pct.

    Grouped/depthwise layers (groups > 1) are left out: SCALE-Sim has no grouped conv.
    """
    convs = {_shape_key(la, rows, cols): la for la in layers if la.groups == 1}
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    missing = {key: la for key, la in convs.items() if key not in cache}
    if missing:
        report = _run_scalesim(list(missing.values()), rows, cols)
        with open(CACHE.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run may have added results meanwhile
            cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
            for key, r in zip(missing, report, strict=True):
                cache[key] = {
                    "total_cycles": int(r["Total Cycles"]),
                    "stall_cycles": int(r["Stall Cycles"]),
                    "overall_util_pct": float(r["Overall Util %"]),
                    "mapping_efficiency_pct": float(r["Mapping Efficiency %"]),
                }
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return {la.name: dict(cache[_shape_key(la, rows, cols)]) for la in layers if la.groups == 1}


def model_cycles(layer: ConvLayer, config: str, workdir: Path) -> int:
    """Our golden cycle model's total for the layer compiled on its own (Conv + Relu)."""
    program = compile_model(build_layer_model(layer, workdir), config)
    runner = create_runner(program, backend="golden")
    x = zoo.calibration_data((1, layer.cin, layer.in_h, layer.in_w), n=1, seed=1)
    return runner.run({program.inputs[0].name: x}).activity.cycles


def peer_table(config_name: str, input_hw: int = 224) -> list[dict]:
    """Per ResNet-18 layer shape: SCALE-Sim's cycles on the config's array, the closed form,
    our golden model's cycles for the one-layer program, and their ratio."""
    cfg = load_config(config_name)
    layers = resnet18_layers(input_hw)
    peer = scalesim_cycles(layers, cfg.rows, cfg.cols)
    table = []
    with tempfile.TemporaryDirectory(prefix="dpukit-peer-") as tmp:
        for layer in layers:
            ours = model_cycles(layer, config_name, Path(tmp))
            s = peer[layer.name]
            table.append(
                {
                    "layer": layer.name,
                    "shape": f"{layer.in_h}x{layer.in_w} k{layer.k}/{layer.stride} "
                    f"{layer.cin}->{layer.cout}",
                    "count": layer.count,
                    "macs": layer.macs,
                    "scalesim_cycles": s["total_cycles"],
                    "scalesim_util_pct": round(s["overall_util_pct"], 2),
                    "scalesim_mapping_eff_pct": round(s["mapping_efficiency_pct"], 2),
                    "closed_form_cycles": closed_form_cycles(layer, cfg.rows, cfg.cols),
                    "model_cycles": ours,
                    "model_over_scalesim": round(ours / s["total_cycles"], 3),
                }
            )
    return table
