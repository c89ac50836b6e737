"""`dpukit run`: run a program on a backend; outputs, accuracy and the DPU's activity."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from dpukit.cli.common import (
    add_config_option,
    add_input_options,
    build_simulator,
    inputs_for,
    positive_int,
    run_batches,
    write_output,
)
from dpukit.cli.render import (
    MODELED,
    activity_json,
    activity_table,
    backend_kind,
    fmt_pct,
    fmt_si,
    layer_activity_table,
    model_macs,
    outputs_table,
    subgraph_activity_table,
)
from dpukit.cli.sensors import add_power_options, power_recording, report_power
from dpukit.compiler.energy import per_inference
from dpukit.host.backends import BACKENDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a program; print outputs and modeled activity")
    r.add_argument("program", help=".dpu program")
    r.add_argument(
        "--backend",
        choices=BACKENDS,
        default="golden",
        help="golden: the bit-exact model (modeled cycles); rtl: the DPU's RTL in Verilator "
        "(measured cycles; builds the simulator on first use, minutes)",
    )
    add_input_options(r)
    r.add_argument("--batch", type=positive_int, default=32, metavar="B", help="default 32")
    r.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    add_config_option(r)
    add_power_options(r)
    r.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.program import Program
    from dpukit.host.runner import create_runner

    program = Program.load(args.program)
    runner = create_runner(program, backend=args.backend, config=args.config)
    build_simulator(con, args.backend, runner.cfg)
    cfg = runner.cfg
    inputs, labels, what = inputs_for(args, program)
    con.print(
        f"running [bold]{args.program}[/] on the {args.backend} backend "
        f"({cfg.name}): {what}, batch {args.batch}",
        highlight=False,
    )
    warm_up = {k: v[: args.batch] for k, v in inputs.items()}
    with power_recording(args, con, lambda: runner.run(warm_up)) as recorder:
        outputs, act, per_sub, n, wall = run_batches(
            con, runner, inputs, args.batch, f"{args.backend} DPU"
        )
    kind = backend_kind(args.backend)
    con.print(outputs_table(outputs))
    accuracy = None
    if labels is not None:
        first = outputs[program.outputs[0].name]
        accuracy = float((first.argmax(axis=1) == labels).mean())
        con.print(
            f"top-1 accuracy vs labels: [bold]{fmt_pct(accuracy)}[/] "
            f"({int(round(accuracy * n))}/{n})"
        )
    macs = model_macs(program)
    con.print(
        activity_table(
            act, n, cfg, macs, f"DPU activity, {args.backend} backend, {kind}, {n} image(s)"
        )
    )
    energy_img = per_inference(act, n, cfg)
    con.print(
        f"energy per inference, modeled: [bold]{fmt_si(energy_img.total.total, 'J')}[/] "
        f"(DPU level, table {energy_img.table.label}, over the activity {kind}; "
        f"{fmt_si(energy_img.average_w, 'W')} average over the DPU's time)",
        highlight=False,
    )
    measured = report_power(con, args, recorder, n)  # beside the modeled figure; None if not asked
    con.print(subgraph_activity_table(program, per_sub, f"per subgraph, first image, {kind}"))
    con.print(layer_activity_table(runner.layer_activity, f"per layer, one image, {MODELED}"))
    con.print(f"host wall time {wall:.2f} s (simulation speed, not DPU latency)", style="dim")
    if args.json:
        cycles_img = act.cycles / n
        doc = {
            "program": str(args.program),
            "backend": args.backend,
            "config": cfg.name,
            "fingerprint": cfg.fingerprint,
            "clock_mhz": cfg.clock_mhz,
            "images": n,
            "inputs": what,
            "accuracy": accuracy,
            "cycles_per_image": cycles_img,
            "latency_ms_per_image": cycles_img / (cfg.clock_mhz * 1e3),
            "latency_kind": kind,
            "model_macs_per_image": macs,
            "pe_utilization": act.mac_cycles / act.cycles if act.cycles else 0.0,
            "activity": activity_json(act),
            "energy_per_image_modeled": energy_img.as_dict(),
            "energy_measured": measured,
            "per_subgraph_first_image": [
                {"name": sg.name, **activity_json(a)}
                for sg, a in zip(
                    [s for s in program.subgraphs if s.device == "DPU"], per_sub, strict=False
                )
            ],
            "per_layer_one_image": [
                {
                    "subgraph": la.subgraph,
                    "layer": la.layer,
                    "kind": la.kind,
                    "layer_macs": la.macs,
                    **activity_json(la.activity),
                }
                for la in runner.layer_activity
            ],
            "outputs": {
                k: {
                    "shape": list(v.shape),
                    **({"argmax": v.argmax(axis=1).tolist()} if v.ndim == 2 else {}),
                }
                for k, v in outputs.items()
            },
            "host_wall_s": wall,
        }
        write_output(args.json, json.dumps(doc, indent=2) + "\n")
        con.print(f"wrote {args.json}", highlight=False)
    return 0
