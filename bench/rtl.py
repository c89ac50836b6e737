"""RTL benchmarks (issues 3, 10): whole networks on the DPU's RTL, through the board driver on
the virtual board (the `rtl` backend).

- RTL simulation speed (simulated cycles per wall second of the harness run) and wall time
  for the digits CNN and for the ResNet-18-shaped set of layers;
- measured cycles (the DPU's CYCLES counter) against the cycle model's;
- PE utilization per layer: ideal MAC cycles (layer MACs / (rows*cols)) / measured cycles;
- measured cycles / SCALE-Sim's for the same layer shape, array size and dataflow.
- the same layers on the C++ harness the virtual board replaced, rebuilt from git in the
  same run (bench/old_harness.py): simulated cycles per second, old beside new;
- the driver's host overhead per inference on the digits CNN: the time outside the DPU's
  own run (inputs and outputs through the data window, flush/invalidate, register writes
  and reads), per phase.
Targets: utilization >= 80 % on layers whose channels fill the array, measured / SCALE-Sim
<= 1.2, >= 200k simulated cycles per second on pynq-z2, and the virtual board not slower
than the old harness.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from old_harness import OLD_COMMIT, load_old_harness
from resnet18_layers import ConvLayer, build_layer_model, resnet18_layers
from scalesim_peer import scalesim_cycles

from dpukit.compiler.compile import compile_model
from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.compiler.program import Program
from dpukit.host.layout import from_dram, to_dram
from dpukit.host.runner import Runner
from dpukit.models import zoo
from dpukit.models.digits import digits_model, load_digits_split
from dpukit.quantize import quantize_model
from dpukit.sim.virtual_board import build


def _run_both(program, cfg: HwConfig, feed: dict, old=None) -> dict:
    """One inference on the RTL and on the golden model; the RTL's counters and timing, and,
    given the old harness module, the same DPU runs on it."""
    golden_runner = Runner(program, "golden", cfg)
    golden = golden_runner.run(feed)
    old_runs = _old_harness_runs(old, program, cfg, golden_runner.dram) if old else {}
    with Runner(program, "rtl", cfg) as rtl_runner:
        t = time.perf_counter()
        result = rtl_runner.run(feed)
        wall = time.perf_counter() - t
        sim = rtl_runner.dpu.timing
    return {
        "outputs_equal_golden": all(
            (result.outputs[k] == golden.outputs[k]).all() for k in golden.outputs
        ),
        "rtl_cycles": result.activity.cycles,
        "model_cycles": golden.activity.cycles,
        "rtl_over_model": round(result.activity.cycles / golden.activity.cycles, 4),
        "mac_cycles": result.activity.mac_cycles,
        "sim_wall_s": round(sim["wall_s"], 3),
        "sim_cycles_per_s": round(sim["cycles"] / sim["wall_s"]),
        "run_wall_s": round(wall, 3),  # the whole Runner.run
        **old_runs,
    }


def _old_harness_runs(old, program, cfg: HwConfig, dram: np.ndarray) -> dict:
    """The program's DPU streams on the old harness, over the data window the golden model
    left (the same bytes the DPU reads; only the time matters here)."""
    cycles, wall = 0, 0.0
    for sg in program.subgraphs:
        if sg.device == "DPU":
            res = old.run_program(cfg, sg.payload, dram.copy())
            cycles += res.cycles
            wall += res.wall_s
    return {"old_harness_cycles": cycles, "old_harness_sim_wall_s": round(wall, 3)}


def digits_program(config: str, workdir: Path) -> Path:
    """The digits CNN quantized (per channel) and compiled for `config`: its .dpu file in
    `workdir`, made by the first benchmark that asks for it there."""
    path = workdir / f"digits_{config}.dpu"
    if not path.exists():
        x_train = load_digits_split()[0]
        qdq = quantize_model(
            digits_model(workdir), workdir / "digits.qdq.onnx", x_train, per_channel=True
        )
        compile_model(qdq, config).save(path)
    return path


def bench_digits(config: str, workdir: Path) -> dict:
    x_test = load_digits_split()[2]
    program = Program.load(digits_program(config, workdir))
    cfg = load_config(config)
    return {
        "model": "digits CNN (8x8, one image)",
        **_run_both(program, cfg, {program.inputs[0].name: x_test[:1]}),
    }


def _fills_array(layer: ConvLayer, cfg: HwConfig) -> bool:
    return layer.cin >= cfg.rows and layer.cout >= cfg.cols


def _dram_floor_cycles(layer: ConvLayer, cfg: HwConfig) -> int:
    """Cycles to move the layer's int8 weights, the input pixels it uses and its output over
    the data bus once: no schedule is faster (the FC's weights, read once for one input
    vector, bound it). A kernel smaller than its stride skips input rows and columns."""

    def used(n_in: int, n_out: int) -> int:
        return n_out * layer.k if layer.k < layer.stride else n_in

    weights = layer.k * layer.k * layer.cin // layer.groups * layer.cout
    inputs = used(layer.in_h, layer.out_h) * used(layer.in_w, layer.out_w) * layer.cin
    tensors = inputs + layer.out_h * layer.out_w * layer.cout
    return -(-(weights + tensors) // cfg.bus_bytes)


def bench_resnet_layers(config: str, workdir: Path, input_hw: int, old=None) -> dict:
    cfg = load_config(config)
    layers = resnet18_layers(input_hw)
    peer = scalesim_cycles(layers, cfg.rows, cfg.cols)
    rows, sim_cycles, sim_wall, old_cycles, old_wall = [], 0, 0.0, 0, 0.0
    for layer in layers:
        program = compile_model(build_layer_model(layer, workdir), config)
        x = zoo.calibration_data((1, layer.cin, layer.in_h, layer.in_w), n=1, seed=1)
        r = _run_both(program, cfg, {program.inputs[0].name: x}, old)
        sim_cycles += r["rtl_cycles"]
        sim_wall += r["sim_wall_s"]
        old_cycles += r.get("old_harness_cycles", 0)
        old_wall += r.get("old_harness_sim_wall_s", 0.0)
        ideal = layer.macs / (cfg.rows * cfg.cols)
        floor = _dram_floor_cycles(layer, cfg)
        s = peer[layer.name]["total_cycles"]
        # what the weight-stationary dataflow allows this shape (SCALE-Sim's utilization)
        s_util = peer[layer.name]["overall_util_pct"] / 100
        rows.append(
            {
                "layer": layer.name,
                "shape": f"{layer.in_h}x{layer.in_w} k{layer.k}/{layer.stride} "
                f"{layer.cin}->{layer.cout}",
                "count": layer.count,
                "channels_fill_array": _fills_array(layer, cfg),
                **r,
                "pe_utilization": round(ideal / r["rtl_cycles"], 4),
                "dram_floor_cycles": floor,
                # what the data bus allows: 1 unless moving the bytes takes longer than the MACs
                "utilization_bandwidth_bound": round(min(1.0, ideal / floor), 4),
                "scalesim_utilization": round(s_util, 4),
                "scalesim_cycles": s,
                "rtl_over_scalesim": round(r["rtl_cycles"] / s, 3),
            }
        )
    filled = [r for r in rows if r["channels_fill_array"]]
    return {
        "input_hw": input_hw,
        "layers": rows,
        "total_rtl_cycles": sim_cycles,
        "total_sim_wall_s": round(sim_wall, 2),
        "sim_cycles_per_s": round(sim_cycles / sim_wall),
        "old_harness": (
            {
                "commit": OLD_COMMIT,
                "total_sim_wall_s": round(old_wall, 2),
                "sim_cycles_per_s": round(old_cycles / old_wall),
                "virtual_board_over_old": round(sim_cycles / sim_wall / (old_cycles / old_wall), 3),
            }
            if old
            else "not measured (no git history)"
        ),
        "min_utilization_filled": min(r["pe_utilization"] for r in filled),
        # layers whose channels fill the array and whose bytes the data bus can move in less
        # time than 80 % utilization takes (all but the FC)
        "min_utilization_filled_compute_bound": min(
            r["pe_utilization"] for r in filled if r["utilization_bandwidth_bound"] >= 0.8
        ),
        "max_rtl_over_scalesim": max(r["rtl_over_scalesim"] for r in rows),
        "targets": {
            "utilization_min_filled": 0.8,
            "rtl_over_scalesim_max": 1.2,
            "sim_cycles_per_s_min": 200_000,
        },
    }


def bench_driver_overhead(config: str, workdir: Path, images: int = 30) -> dict:
    """Per inference of the digits CNN on the rtl backend, one image at a time: the whole
    Runner.run, the DPU's run (start to done), the driver around it (placing the run:
    window flush, register writes, start; reading back: registers, invalidate), and the
    Runner's own part (input/output layout through the window, the CPU subgraphs)."""
    x_test = load_digits_split()[2]
    program = Program.load(digits_program(config, workdir))
    cfg = load_config(config)
    name = program.inputs[0].name
    with Runner(program, "rtl", cfg) as runner:
        runner.run({name: x_test[:1]})  # warm: streams placed, plans made
        before = dict(runner.dpu.timing)
        t = time.perf_counter()
        for k in range(images):
            runner.run({name: x_test[k : k + 1]})
        total = (time.perf_counter() - t) / images
        after = runner.dpu.timing
    dpu = (after["wall_s"] - before["wall_s"]) / images
    driver = (after["driver_s"] - before["driver_s"]) / images
    # the layout conversions alone, for scale (what the Runner does around the driver)
    t_in = program.tensors[next(sg for sg in program.subgraphs if sg.device == "DPU").inputs[0]]
    value = np.zeros(t_in.shape, t_in.onnx_dtype)
    t = time.perf_counter()
    for _ in range(images):
        from_dram(t_in, to_dram(t_in, value))
    layout = (time.perf_counter() - t) / images
    return {
        "model": "digits CNN (8x8), one image per run",
        "images": images,
        "per_inference_ms": round(1e3 * total, 3),
        "dpu_run_ms": round(1e3 * dpu, 3),
        "driver_host_ms": round(1e3 * driver, 3),
        "runner_rest_ms": round(1e3 * (total - dpu - driver), 3),
        "input_layout_round_trip_ms": round(1e3 * layout, 4),
        "driver_share": round(driver / total, 3),
    }


def bench_rtl(config: str, input_hw: int = 224) -> dict:
    t = time.perf_counter()
    build(load_config(config))  # outside the timed runs
    build_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="dpukit-bench-rtl-") as tmp:
        work = Path(tmp)
        old = load_old_harness(work)
        if isinstance(old, str):
            print(f"old harness left out: {old}")
            old = None
        else:
            old.build(load_config(config))  # outside the timed runs too
        return {
            "config": config,
            "virtual_board_build_s": round(build_s, 1),
            "digits": bench_digits(config, work),
            "resnet18_layers": bench_resnet_layers(config, work, input_hw, old),
            "driver_overhead": bench_driver_overhead(config, work),
        }
