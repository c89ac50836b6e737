"""Seed 002's bit-packing sweep on AlexNet, and the energy model's own speed. All energies
are modeled (compiler/energy.py), never measured.

Seed 002 (Klhufek et al.'s poster: Timeloop extended with bit-packing, an Eyeriss-like
accelerator with 16-bit words) reports "up to 27 %" less energy for AlexNet when its
weights go from 16 to 4 bits, mostly in the memories holding weights. Here, for weights of
2, 4, 6, 8 and 16 bits packed whole into memory words (MAC energy unchanged):

- network level (seed 001's convention, `network_energy`, activations at 16 bits as seed
  002's words): every weight read once from DRAM and once from SRAM per inference;
- DPU level: AlexNet quantized to int8 and compiled for each config, its per-layer activity
  from the cycle model counted once, priced per weight width (`dpu_events`); weights are
  loaded from DRAM as the program's tiles need them.

Per width: total energy, energy in weight memories (DRAM weight traffic + WGT/PAR buffers),
the saving against 16 bits, and where the energy goes, for the whole network and for its
conv and FC layers apart. `bench_energy_time` times the energy model on ResNet-18's program.

Run alone: python bench/energy_sweep.py [--configs pynq-z2 ultra96v2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from dpukit.compiler import energy
from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import Activity, GoldenDPU
from dpukit.compiler.isa import INSTR_BYTES
from dpukit.compiler.program import Program
from dpukit.models import zoo
from dpukit.quantize import quantize_model

SEED_002_SAVING = 0.27  # "up to 27 %", 16 -> 4-bit weights, AlexNet (the poster)
BITS = energy.WEIGHT_BITS
KINDS = {"Conv": "conv", "Gemm": "fc"}  # AlexNet's weighted layers; pooling goes with conv


def _kind(layer_kind: str) -> str:
    return KINDS.get(layer_kind, "conv")  # MaxPool, Flatten: the conv part of the network


def _saving(e: float, e16: float) -> float | None:
    return round(1 - e / e16, 4) if e16 else None  # None: a part the model does not have


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


# -- network level ----------------------------------------------------------------------------


def network_sweep(model, table: energy.EnergyTable) -> dict:
    """Seed 001's model per weight width, activations at 16 bits. At this level all DRAM
    traffic is weights (activations stay in SRAM), so weight memory = DRAM + SRAM weights."""
    rows = []
    for bits in BITS:
        r = energy.network_energy(model, table, weight_bits=bits, activation_bits=16)
        part = {"conv": energy.Energy(), "fc": energy.Energy()}
        for la in r.layers:  # the network's output (its SRAM write and read) goes with FC
            part["fc" if la.kind == "output" else _kind(la.kind)].add(la.energy)
        rows.append(
            {
                "weight_bits": bits,
                "total_j": r.total.total,
                "weight_memory_j": r.total.dram + r.total.sram_weights,
                "by_category_j": r.total.as_dict(),
                **{
                    f"{k}_layers": {"total_j": e.total, "weight_memory_j": e.dram + e.sram_weights}
                    for k, e in part.items()
                },
            }
        )
    return _summarize(rows)


def _summarize(rows: list[dict]) -> dict:
    """Savings against 16 bits, for the network and its conv and FC layers apart."""
    at = {r["weight_bits"]: r for r in rows}
    for r in rows:
        r["saving_vs_16"] = _saving(r["total_j"], at[16]["total_j"])
        for part in ("conv_layers", "fc_layers"):
            r[part]["saving_vs_16"] = _saving(r[part]["total_j"], at[16][part]["total_j"])
    share = at[16]["weight_memory_j"] / at[16]["total_j"]
    parts = {
        p: {
            "weight_share_at_16": _share(at[16][p]["weight_memory_j"], at[16][p]["total_j"]),
            "share_of_total_at_16": _share(at[16][p]["total_j"], at[16]["total_j"]),
            "saving_16_to_4": at[4][p]["saving_vs_16"],
        }
        for p in ("conv_layers", "fc_layers")
    }
    return {
        "rows": rows,
        "weight_share_at_16": round(share, 4),
        "saving_16_to_4": at[4]["saving_vs_16"],
        "saving_16_to_4_if_0.75_x_share": round(0.75 * share, 4),
        **parts,
    }


# -- DPU level --------------------------------------------------------------------------------


def layer_activities(program: Program) -> tuple[list[tuple[dict, Activity]], list[Activity]]:
    """The cycle model's activity of each DPU layer ((its stats, activity)) and of each DPU
    subgraph as a whole, counted once (what `program_energy` counts on every call)."""
    cfg = program.hwconfig()
    dpu = GoldenDPU(cfg)
    layers, wholes = [], []
    for sg in program.subgraphs:
        if sg.device != "DPU":
            continue
        wholes.append(dpu.prepare(sg.payload, program.dram_size).activity)
        ranges = [(la["first_instr"], la["num_instrs"]) for la in sg.layers]
        acts = dpu.layer_activity(sg.payload, program.dram_size, ranges)
        layers += list(zip(sg.layers, acts, strict=True))
    return layers, wholes


def _weight_dram_bits(act: Activity, cfg, bits: int) -> float:
    """Bits of weights (WGT entries, packed as `dpu_events` packs them into bus words) and
    of PAR entries (bias, scale) the activity loads from DRAM."""
    lanes = cfg.rows * cfg.cols
    n = act.buffer_writes.get("wgt", 0) * lanes
    wgt = n * bits if bits == cfg.operand_bits else energy.packed_bits(n, bits, cfg.axi_data_bits)
    return wgt + act.buffer_writes.get("par", 0) * cfg.par_entry_bytes * 8


def dpu_sweep(program: Program, table: energy.EnergyTable, activity=None) -> dict:
    cfg = program.hwconfig()
    layers, wholes = activity or layer_activities(program)
    e_dram = table.joules("dram")
    rows = []
    for bits in BITS:
        total = energy.Energy()
        for act in wholes:
            total.add(energy.activity_energy(act, cfg, table, bits))
        part = {"conv": energy.Energy(), "fc": energy.Energy()}
        part_w = {"conv": 0.0, "fc": 0.0}
        for stats, act in layers:
            e = energy.activity_energy(act, cfg, table, bits)
            part[_kind(stats["kind"])].add(e)
            part_w[_kind(stats["kind"])] += _weight_dram_bits(act, cfg, bits) * e_dram + (
                e.sram_weights
            )
        weight_dram = sum(_weight_dram_bits(a, cfg, bits) for a in wholes) * e_dram
        rows.append(
            {
                "weight_bits": bits,
                "total_j": total.total,
                "weight_memory_j": weight_dram + total.sram_weights,
                "weight_dram_j": weight_dram,
                "by_category_j": total.as_dict(),
                **{
                    f"{k}_layers": {"total_j": e.total, "weight_memory_j": part_w[k]}
                    for k, e in part.items()
                },
            }
        )
    out = _summarize(rows)
    # Where the 16-bit energy goes, and how often each weight is loaded from DRAM
    at16 = out["rows"][-1]
    fetched = sum(sum(a.instructions.values()) for a in wholes)
    fetch = fetched * max(INSTR_BYTES * 8, cfg.axi_data_bits)  # as dpu_events charges it
    dram = at16["by_category_j"]["dram"]
    out["breakdown_at_16_j"] = {
        "mac": at16["by_category_j"]["mac"],
        "dram_weights_and_params": at16["weight_dram_j"],
        "dram_instruction_fetch": fetch * e_dram,
        "dram_activations": dram - at16["weight_dram_j"] - fetch * e_dram,
        "sram_weights_and_params": at16["by_category_j"]["sram_weights"],
        "sram_activations": at16["by_category_j"]["sram_activations"],
        "logic_and_static": at16["by_category_j"]["logic"] + at16["by_category_j"]["static"],
    }
    loaded = {"conv": 0, "fc": 0}
    stored = {"conv": 0, "fc": 0}
    for stats, act in layers:
        loaded[_kind(stats["kind"])] += act.buffer_writes.get("wgt", 0) * cfg.rows * cfg.cols
        stored[_kind(stats["kind"])] += stats["weight_bytes"]
    out["weight_loads_per_weight"] = {k: _share(loaded[k], stored[k]) for k in loaded}
    out["cycles"] = sum(a.cycles for a in wholes)
    return out


# -- the benchmark ----------------------------------------------------------------------------


def bench_energy_sweep(
    configs=("pynq-z2",), table: str = "horowitz45", input_hw: int = 227, workdir=None
) -> dict:
    """The sweep at both levels; the DPU level per config (quantize, compile, count once)."""
    tab = energy.load_table(table)
    model, shape = zoo.alexnet(input_hw)
    result = {
        "kind": "modeled",
        "model": f"AlexNet, CaffeNet layer shapes, {input_hw}x{input_hw}, random weights",
        "table": tab.label,
        "weight_bits": list(BITS),
        "seed_002_saving_16_to_4": SEED_002_SAVING,
        "network_level": {"activation_bits": 16, **network_sweep(model, tab)},
        "dpu_level": {},
        # the same activities priced by each config's own part's table (estimates)
        "dpu_level_part_table": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        qdq = quantize_model(
            model, Path(workdir or tmp) / "alexnet.qdq.onnx", zoo.calibration_data(shape, n=2)
        )
        for config in configs:
            t = time.perf_counter()
            program = compile_model(qdq, config)
            compile_s = time.perf_counter() - t
            activity = layer_activities(program)
            level = {"compile_s": round(compile_s, 2), **dpu_sweep(program, tab, activity)}
            level["activation_bits"] = program.hwconfig().operand_bits
            result["dpu_level"][config] = level
            part = energy.load_table(energy.table_for_part(program.hwconfig().fpga_part))
            result["dpu_level_part_table"][config] = {
                "table": part.label,
                **dpu_sweep(program, part, activity),
            }
    return result


def bench_energy_time(qdq: Path, config: str, repeats: int = 20) -> dict:
    """Seconds the energy model takes on ResNet-18's program (issue target: < 50 ms):
    (a) the energy model proper: `activity_energy` (`dpu_events` x the table) over every
    layer's activity and each subgraph's whole activity, the activities counted beforehand;
    (b) `program_energy` end to end, which also runs the cycle model (the checking pass and
    the golden model's plan) to count those activities: the cycle model's time, not the
    energy model's. The target applies to (a)."""
    program = compile_model(qdq, config)
    cfg = program.hwconfig()
    table = energy.load_table("horowitz45")
    t = time.perf_counter()
    layers, wholes = layer_activities(program)
    counting_s = time.perf_counter() - t

    def price() -> None:
        for act in [a for _, a in layers] + wholes:
            energy.activity_energy(act, cfg, table)

    price()
    proper = []
    for _ in range(repeats):
        t = time.perf_counter()
        price()
        proper.append(time.perf_counter() - t)
    end_to_end = []
    for _ in range(3):
        t = time.perf_counter()
        energy.program_energy(program, table)
        end_to_end.append(time.perf_counter() - t)
    return {
        "model": "resnet18-shaped, 224x224, int8 QDQ",
        "config": config,
        "layers": len(layers),
        "energy_model_s": round(statistics.median(proper), 5),
        "program_energy_end_to_end_s": round(statistics.median(end_to_end), 3),
        "cycle_model_activity_counting_s": round(counting_s, 3),
        "targets": {"energy_model_s_max": 0.05},
        "note": "target applies to energy_model_s (events x table over the per-layer "
        "activities); program_energy end to end also runs the cycle model to count them",
    }


# -- report -----------------------------------------------------------------------------------


def _mj(j: float) -> str:
    return f"{j * 1e3:.3f}"


def sweep_levels(result: dict) -> list[tuple[str, dict]]:
    """(what, its results) for each level and table the sweep priced."""
    table = result["table"]
    levels = [(f"network level (seed 001), 16-bit activations, {table}", result["network_level"])]
    levels += [(f"DPU level, {c}, {table}", v) for c, v in result["dpu_level"].items()]
    levels += [
        (f"DPU level, {c}, {v['table']}", v) for c, v in result["dpu_level_part_table"].items()
    ]
    return levels


def print_sweep(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    for title, lv in sweep_levels(result):
        t = Table(title=f"modeled energy per inference, {result['model']}: {title}")
        for col in (
            "weight bits",
            "total (mJ)",
            "weight memories (mJ)",
            "saving vs 16",
            "conv layers (mJ)",
            "conv saving",
            "FC layers (mJ)",
            "FC saving",
        ):
            t.add_column(col, justify="right")
        for r in lv["rows"]:
            t.add_row(
                str(r["weight_bits"]),
                _mj(r["total_j"]),
                _mj(r["weight_memory_j"]),
                f"{r['saving_vs_16']:.1%}",
                _mj(r["conv_layers"]["total_j"]),
                f"{r['conv_layers']['saving_vs_16']:.1%}",
                _mj(r["fc_layers"]["total_j"]),
                f"{r['fc_layers']['saving_vs_16']:.1%}",
            )
        console.print(t)
        console.print(
            f"  weights' share at 16 bits: {lv['weight_share_at_16']:.1%} (conv layers "
            f"{lv['conv_layers']['weight_share_at_16']:.1%}, FC layers "
            f"{lv['fc_layers']['weight_share_at_16']:.1%}; FC layers hold "
            f"{lv['fc_layers']['share_of_total_at_16']:.1%} of the energy); 16 -> 4 bits saves "
            f"{lv['saving_16_to_4']:.1%} (0.75 x share: "
            f"{lv['saving_16_to_4_if_0.75_x_share']:.1%}); seed 002: up to "
            f"{result['seed_002_saving_16_to_4']:.0%}"
        )
        if "breakdown_at_16_j" in lv:
            parts = ", ".join(f"{k} {_mj(v)}" for k, v in lv["breakdown_at_16_j"].items())
            console.print(f"  at 16 bits (mJ, modeled): {parts}")
            loads = lv["weight_loads_per_weight"]
            console.print(f"  DRAM loads per weight: conv {loads['conv']}, FC {loads['fc']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["pynq-z2"])
    ap.add_argument("--table", default="horowitz45")
    ap.add_argument("--input-hw", type=int, default=227)
    ap.add_argument("--out", help="write the numbers (joules, modeled) as JSON")
    args = ap.parse_args()
    result = bench_energy_sweep(args.configs, args.table, args.input_hw)
    print_sweep(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
