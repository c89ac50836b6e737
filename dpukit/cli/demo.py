"""`dpukit demo`: the whole flow on the digits CNN (what `make demo` runs)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from dpukit.cli import verify as verify_cli
from dpukit.cli.common import build_simulator, run_batches
from dpukit.cli.render import (
    MEASURED_RTL,
    MODELED,
    activity_table,
    fmt_bytes,
    fmt_pct,
    fmt_si,
    instr_count,
    layer_activity_table,
    model_macs,
    print_subgraphs,
    subgraph_activity_table,
)
from dpukit.compiler.hwconfig import DEFAULT_CONFIG


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="the whole flow on the digits CNN")
    d.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    d.add_argument("--workdir", default="artifacts/demo", help="default artifacts/demo")
    d.add_argument(
        "--rtl-images",
        type=int,
        default=16,
        metavar="N",
        help="verify the first N images on the DPU's RTL in Verilator (0: skip; default 16)",
    )
    d.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.compile import compile_model
    from dpukit.compiler.hwconfig import load_config
    from dpukit.host.runner import create_runner
    from dpukit.models.digits import digits_model, load_digits_split
    from dpukit.optimize.data import onnx_scores
    from dpukit.quantize import quantize_model
    from dpukit.verify import VerificationError, output_lsb, verify_model

    t_all = time.perf_counter()
    cfg = load_config(args.config)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    float_path = work / "digits_cnn.onnx"
    qdq_path = work / "digits_cnn.qdq.onnx"
    dpu_path = work / "digits_cnn.dpu"
    width = max(len(str(p)) for p in (float_path, qdq_path, dpu_path)) + 2
    x_train, _, x_test, y_test = load_digits_split()
    con.rule(
        f"dpukit demo: digits CNN -> {cfg.name} "
        f"({cfg.rows}x{cfg.cols} array @ {cfg.clock_mhz:g} MHz), golden DPU model"
    )

    def step(name: str, target: str, detail: str) -> None:
        con.print(f"{name:<11}{target:<{width}}{detail}", highlight=False)

    cached = float_path.is_file()
    start = time.perf_counter()
    with con.status("loading" if cached else "training the digits CNN in numpy (~10 s)"):
        float_path = digits_model(work)
    step(
        "1 train",
        str(float_path),
        "loaded from cache" if cached else f"trained in {time.perf_counter() - start:.1f} s",
    )

    start = time.perf_counter()
    with con.status("quantizing"):
        quantize_model(float_path, qdq_path, x_train, per_channel=True, activation_type="int8")
    step(
        "2 quantize",
        str(qdq_path),
        f"int8, per-channel weights, {len(x_train):,} calibration images, "
        f"{time.perf_counter() - start:.1f} s",
    )

    start = time.perf_counter()
    program = compile_model(qdq_path, cfg)
    program.save(dpu_path)
    n_instr = sum(instr_count(sg) for sg in program.subgraphs if sg.device == "DPU")
    step(
        "3 compile",
        str(dpu_path),
        f"{'+'.join(sg.device for sg in program.subgraphs)} subgraphs, {n_instr:,} "
        f"instructions, {fmt_bytes(program.dram_size)} data, {time.perf_counter() - start:.2f} s",
    )

    runner = create_runner(dpu_path, backend="golden")
    outputs, act, per_sub, n, wall = run_batches(
        con, runner, {program.inputs[0].name: x_test}, 64, "4 run (golden)"
    )
    golden = outputs[program.outputs[0].name]
    step("4 run", f"{n} held-out images", f"golden backend, {wall:.1f} s host time")

    start = time.perf_counter()
    with con.status("5 verify: every layer against onnxruntime"):
        report = verify_model(qdq_path, {program.inputs[0].name: x_test}, program=program)
    if not report.ok:
        con.print(verify_cli.layer_table(report))
        raise VerificationError(f"{qdq_path}: {report.bugs[0]}")
    (logits,) = report.outputs
    ties = sum(c.ties for c in report.layers)
    elements = sum(c.elements for c in report.layers)
    step(
        "5 verify",
        "against onnxruntime",
        f"every DPU layer equals onnxruntime fed its inputs except {ties:,} rounding ties in "
        f"{elements:,} elements; logits within {logits.max_diff:g} LSB end to end (ties "
        f"explain up to {logits.bound_max}); {time.perf_counter() - start:.1f} s",
    )

    with con.status("onnxruntime"):
        float_pred = onnx_scores(float_path, x_test, optimize=True).argmax(axis=1)
        qdq_out = onnx_scores(qdq_path, x_test, optimize=True)
        ref_out = onnx_scores(qdq_path, x_test)
    g_pred = golden.argmax(axis=1)
    acc = {
        "float model (onnxruntime)": float((float_pred == y_test).mean()),
        "QDQ int8 model (onnxruntime)": float((qdq_out.argmax(axis=1) == y_test).mean()),
        "golden DPU model": float((g_pred == y_test).mean()),
    }
    scale = output_lsb(qdq_path)
    agree = {
        what: {
            "predictions_agree": float((g_pred == out.argmax(axis=1)).mean()),
            "bit_identical": int(np.all(golden == out, axis=1).sum()),
            "max_lsb": float(np.rint(np.abs(golden - out).max() / scale)),
        }
        for what, out in (
            ("QDQ, onnxruntime default session", qdq_out),
            ("QDQ reference (graph optimizations off)", ref_out),
        )
    }

    con.print()
    table = Table(title=f"accuracy on {n} held-out digits", title_justify="left")
    table.add_column("model")
    table.add_column("top-1", justify="right")
    for stage, a in acc.items():
        table.add_row(stage, fmt_pct(a))
    con.print(table)
    table = Table(title="golden DPU vs onnxruntime, end to end", title_justify="left")
    for col in ("compared with", "predictions agree", "outputs bit-identical", "max difference"):
        table.add_column(col, justify="left" if col == "compared with" else "right")
    for what, a in agree.items():
        table.add_row(
            what,
            fmt_pct(a["predictions_agree"]),
            f"{a['bit_identical']}/{n}",
            f"{a['max_lsb']:g} LSB",
        )
    table.caption = (
        "The reference evaluates the QDQ graph in float32, which breaks exact rounding ties "
        "either way; the DPU rounds them exactly. Step 5 checked that every difference is one "
        "ties explain. The default session runs onnxruntime's fused integer kernels instead, "
        "whose int16 sums saturate on x86 CPUs without VNNI (onnxruntime issue #14642)."
    )
    table.caption_justify = "left"
    con.print(table)
    rtl = None
    if args.rtl_images:
        rtl = _demo_rtl(con, dpu_path, program, x_test[: args.rtl_images], golden, act.cycles / n)
        step(
            "6 rtl",
            f"{rtl['images']} images on the RTL",
            f"{rtl['bit_identical']}/{rtl['images']} outputs bit-identical to the golden model; "
            f"{rtl['cycles_per_image']:,.0f} cycles per image measured vs "
            f"{rtl['model_cycles_per_image']:,.0f} modeled; "
            f"{rtl['sim_cycles_per_s']:,.0f} simulated cycles/s",
        )

    cycles_img = act.cycles / n
    latency_ms = cycles_img / (cfg.clock_mhz * 1e3)
    util = act.mac_cycles / act.cycles if act.cycles else 0.0
    con.print(
        f"\n[bold]{cycles_img:,.0f}[/] cycles per image = [bold]{latency_ms:.4f} ms[/] at "
        f"{cfg.clock_mhz:g} MHz ({1e3 / latency_ms:,.0f} images/s), {MODELED}; "
        f"PE utilization {fmt_pct(util)}",
        highlight=False,
    )
    energy_stages = _demo_energy(con, float_path, qdq_path, dpu_path, act, n, cfg)
    print_subgraphs(con, program)
    con.print()
    con.print(
        subgraph_activity_table(program, per_sub, f"per-subgraph activity, one image, {MODELED}")
    )
    con.print(
        layer_activity_table(runner.layer_activity, f"per-layer activity, one image, {MODELED}")
    )
    con.print(activity_table(act, n, cfg, model_macs(program), f"whole run, {n} images, {MODELED}"))

    summary = {
        "config": cfg.name,
        "fingerprint": cfg.fingerprint,
        "images": n,
        "accuracy": acc,
        "golden_vs_onnxruntime": agree,
        "verify": {
            "ok": report.ok,
            "layer_elements": elements,
            "rounding_ties": ties,
            "away_from_ties": sum(c.away for c in report.layers),
            "logits_max_lsb": logits.max_diff,
            "logits_tie_bound_lsb": logits.bound_max,
            "top1_agree": logits.top1_agree,
            "top1_within_reach_of_ties": logits.top1_at_risk,
        },
        "cycles_per_image": cycles_img,
        "latency_ms_per_image": latency_ms,
        "latency_kind": MODELED,
        "pe_utilization": util,
        "activity": asdict(act),
        "energy_per_image_modeled": energy_stages,
        "rtl": rtl,
    }
    (work / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    _demo_flow(con, float_path, work / "flow", cfg)
    con.print(
        f"numbers in {work / 'demo.json'}; demo took {time.perf_counter() - t_all:.1f} s. "
        "The time, activity and energy tables above are modeled (golden backend, energy "
        "model); step 6 measured the RTL. Measured power needs a board or a sensor: "
        "`dpukit sensors`, `dpukit run --power`.",
        highlight=False,
    )
    return 0


def _demo_energy(con: Console, float_path, qdq_path, dpu_path, act, n: int, cfg) -> dict:
    """Modeled energy of one image at each stage: seed 001's network level for the float and
    QDQ models (hardware-independent, 45 nm table), the DPU level for the program."""
    from dpukit.compiler import energy

    tech = energy.load_table(energy.DEFAULT_TABLE)
    net_float = energy.network_energy(float_path, tech)
    net_qdq = energy.network_energy(qdq_path, tech)
    dpu = energy.per_inference(act, n, cfg)
    table = Table(title="energy per image, modeled (no board: measured power needs one)",
                  title_justify="left", caption_justify="left")  # fmt: skip
    for col in ("stage", "level", "table", "MAC", "SRAM", "DRAM", "logic+static", "total"):
        left = col in ("stage", "level", "table")
        table.add_column(col, justify="left" if left else "right", no_wrap=True)
    rows = (
        ("float model", "network", net_float.table.label, net_float.total),
        ("QDQ int8 model", "network", net_qdq.table.label, net_qdq.total),
        (f"program on {cfg.name}", "DPU", dpu.table.label,
         dpu.total),
    )  # fmt: skip
    for stage, model, label, e in rows:
        table.add_row(
            stage,
            model,
            label,
            fmt_si(e.mac, "J"),
            fmt_si(e.sram_weights + e.sram_activations, "J"),
            fmt_si(e.dram, "J"),
            fmt_si(e.logic + e.static, "J"),
            fmt_si(e.total, "J"),
        )
    table.caption = (
        f"DPU: {fmt_si(dpu.average_w, 'W')} average over {fmt_si(dpu.seconds, 's')} per image. "
        "The network level (seed 001) prices a model in 45 nm CMOS, hardware-independent; the "
        "DPU level prices what the DPU does (cycle model activity) on the board's part: "
        "compare stages within a level. "
        "`dpukit energy` breaks each down per layer (docs/energy.md)."
    )
    con.print(table)
    return {
        "kind": "modeled",
        "float_network_level": net_float.as_dict()["total"],
        "qdq_network_level": net_qdq.as_dict()["total"],
        "dpu": dpu.as_dict(),
    }


def _demo_flow(con: Console, float_path: Path, report_dir: Path, cfg) -> None:
    """A short optimization flow (`dpukit flow` runs the whole one): the CNN's PyTorch twin
    holding the weights trained above, pruned in 2 steps of 10 % with fine-tuning, then
    quantized and run on the golden DPU. Without torch (the `train` extra), neuron
    elimination shrinks the ONNX model instead."""
    import importlib.util

    from dpukit.cli.flow import run_flow
    from dpukit.optimize.flow import Flow, FlowOptions

    if importlib.util.find_spec("torch") and importlib.util.find_spec("torch_pruning"):
        from dpukit.models.digits_torch import digits_torch_from_onnx

        model = digits_torch_from_onnx(float_path)
        options = FlowOptions(prune_steps=2)
        what = "2 pruning steps with fine-tuning, quantized, on the golden DPU"
    else:
        model, options = float_path, FlowOptions(eliminate=(("conv3", 16),))
        what = (
            "conv3 cut to 16 channels by neuron elimination (no torch to prune: "
            "pip install 'dpukit[train]')"
        )
    con.print()
    con.rule(f"7 flow: {what}")
    with Flow(model, "digits", cfg, "golden", report_dir=report_dir, options=options) as flow:
        run_flow(con, flow)


def _demo_rtl(con: Console, dpu_path: Path, program, x: np.ndarray, golden, model_cycles) -> dict:
    """Run the first images on the RTL (the virtual board) and compare with the golden model."""
    from dpukit.host.runner import create_runner

    runner = create_runner(dpu_path, backend="rtl")
    build_simulator(con, "rtl", runner.cfg)
    outputs, act, _, n, _ = run_batches(con, runner, {program.inputs[0].name: x}, 8, "6 rtl")
    got = outputs[program.outputs[0].name]
    sim = runner.dpu.timing
    return {
        "images": n,
        "bit_identical": int(np.all(got == golden[:n], axis=1).sum()),
        "cycles_per_image": act.cycles / n,
        "model_cycles_per_image": model_cycles,
        "latency_kind": MEASURED_RTL,
        "sim_cycles_per_s": sim["cycles"] / sim["wall_s"] if sim["wall_s"] else 0.0,
    }
