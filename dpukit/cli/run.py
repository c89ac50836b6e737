"""`dpukit run`: run a program on a backend; outputs, accuracy and the DPU's activity."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from rich.console import Console

from dpukit.cli.common import (
    UsageError,
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
    fmt_pct,
    fmt_si,
    layer_activity_table,
    model_macs,
    outputs_table,
    subgraph_activity_table,
)
from dpukit.cli.sensors import power_recording, report_power
from dpukit.compiler.energy import per_inference
from dpukit.host.backends import BACKENDS, CYCLES_KIND
from dpukit.options import add_power_options
from dpukit.outfiles import why_unwritable


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a program; print outputs and modeled activity")
    r.add_argument("program", help=".dpu program")
    r.add_argument(
        "--backend",
        choices=BACKENDS,
        default="golden",
        help="golden: the bit-exact model (modeled cycles); rtl: the DPU's RTL in Verilator "
        "behind the board driver (measured cycles; builds the simulator on first use, "
        "minutes); pynq: the overlay's DPU on a PYNQ board (--overlay)",
    )
    r.add_argument(
        "--overlay", metavar="FILE.bit", help="pynq: the overlay's .bit (its .hwh beside it)"
    )
    add_input_options(r)
    r.add_argument("--batch", type=positive_int, default=32, metavar="B", help="default 32")
    r.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    r.add_argument(
        "--output",
        metavar="FILE.npz",
        help="save the outputs, one array per output name (numpy.load reads them)",
    )
    add_config_option(r)
    add_power_options(r)
    r.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.compiler.program import Program
    from dpukit.host.runner import create_runner

    _refuse_unwritable(args)
    program = Program.load(args.program)
    with create_runner(
        program, backend=args.backend, config=args.config, overlay=args.overlay
    ) as runner:
        return _run(args, con, program, runner)


def _run(args, con: Console, program, runner) -> int:
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
    kind = CYCLES_KIND[args.backend]
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
    if args.output:
        write_output(args.output, npz_bytes(outputs))
        con.print(f"wrote {args.output} ({', '.join(outputs)})", highlight=False)
    return 0


def _refuse_unwritable(args) -> None:
    """The run's output files are checked before it runs, not after."""
    if args.output and Path(args.output).suffix.lower() != ".npz":
        raise UsageError(
            f"--output {args.output}: the outputs are saved as .npz (one array per output "
            "name); give a FILE.npz"
        )
    for option, path in (("--output", args.output), ("--json", args.json)):
        why = path and why_unwritable(path)
        if why:
            raise UsageError(f"{option} {path}: cannot write it there ({why}); choose another path")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """`arrays` as an .npz file, by name, as numpy.savez writes it (which would take a name
    such as "file" for its own parameter)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
    return buf.getvalue()
