"""`dpukit flow`: a model through every optimization stage (float, pruning steps,
eliminations, quantized, the DPU), with accuracy, latency and energy at each, into a report
folder (dpukit.optimize.flow; the report: dpukit.optimize.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dpukit.cli.common import UsageError, build_simulator, positive_int
from dpukit.cli.render import fmt_bytes, fmt_int, fmt_pct, fmt_si, progress
from dpukit.compiler.hwconfig import DEFAULT_CONFIG
from dpukit.host.backends import BACKENDS
from dpukit.options import add_power_options, seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "flow",
        help="prune, eliminate neurons, quantize, run on the DPU: accuracy, latency and "
        "energy at every stage, in a report",
        description="Runs every stage (float; each pruning step, for a PyTorch model; each "
        "--eliminate; quantized; the compiled program on the DPU backend) and records top-1 "
        "accuracy on the test split, parameters, MACs, latency per image and energy per "
        "inference, each labelled modeled or measured. A stage whose inputs are unchanged "
        "is read back from REPORT_DIR, not recomputed.",
    )
    f.add_argument(
        "model",
        metavar="MODEL.onnx|MODEL.pt|MODEL.py",
        help="a float ONNX model, or a PyTorch model: a TorchScript or torch.export archive, "
        "or a .py file defining build_model() or model",
    )
    f.add_argument(
        "--data",
        required=True,
        metavar="digits|DIR",
        help="scikit-learn's digits, or a folder of images (class/x.jpg or class.123.jpg), "
        "split 70/15/15 into train, validation and test",
    )
    f.add_argument("-o", "--out", required=True, metavar="REPORT_DIR", help="the report folder")
    g = f.add_argument_group("pruning with fine-tuning (a PyTorch model)")
    g.add_argument(
        "--prune-steps",
        type=int,
        metavar="N",
        help="pruning steps, each followed by fine-tuning (default 6 for a PyTorch model)",
    )
    g.add_argument(
        "--prune-ratio",
        type=float,
        default=0.1,
        metavar="R",
        help="share of each layer's channels removed per step (default 0.1)",
    )
    g.add_argument("--importance", default="l2", help="l1, l2 (default), lamp or taylor")
    g.add_argument(
        "--finetune-epochs", type=positive_int, metavar="E", help="after each step (default 3)"
    )
    e = f.add_argument_group("neuron elimination (seed 001)")
    e.add_argument(
        "--eliminate",
        action="append",
        default=[],
        metavar="LAYER:P",
        help="keep P neurons (channels) of layer LAYER, chosen by SVD and QR, the next layer "
        "re-solved by least squares; repeat for more layers (applied in order)",
    )
    e.add_argument(
        "--sweep",
        action="store_true",
        help="draw the elimination curve of every eliminable layer (default: of the "
        "--eliminate layers)",
    )
    d = f.add_argument_group("quantization and the DPU")
    d.add_argument("--config", default=DEFAULT_CONFIG, help=f"hardware config ({DEFAULT_CONFIG})")
    d.add_argument(
        "--backend",
        choices=BACKENDS,
        default="golden",
        help="the DPU stage's backend: golden (modeled cycles), rtl (the RTL in Verilator: "
        "measured cycles), pynq (a board, --overlay)",
    )
    d.add_argument("--overlay", metavar="FILE.bit", help="pynq: the overlay's .bit")
    i = f.add_argument_group("data")
    i.add_argument(
        "--size", metavar="H,W", help="images' height and width (a folder, for a PyTorch model)"
    )
    i.add_argument("--limit", type=positive_int, metavar="N", help="use at most N images")
    i.add_argument("--seed", type=int, default=0, help="the split's and training's seed")
    p = add_power_options(
        f,
        trace=False,
        power_help="record these sensors while each stage runs inference: measured power and "
        "energy per inference beside the modeled ones",
        idle_help="idle baseline recorded before each stage (default 1 s)",
    )
    p.add_argument(
        "--measure-s",
        type=seconds,
        default=2.0,
        metavar="S",
        help="each stage's inference repeats until it has lasted S (default 2 s)",
    )
    f.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.optimize.flow import Flow

    options = flow_options(args)
    flow = Flow(
        args.model,
        args.data,
        config=args.config,
        backend=args.backend,
        sensors=args.power,
        report_dir=args.out,
        options=options,
        sysfs=args.sysfs,
        overlay=args.overlay,
        size=parse_size(args.size),
        limit=args.limit,
    )
    with flow:
        con.rule(f"dpukit flow: {flow.source.label} on {flow.data.name}")
        con.print(flow.data.describe(), highlight=False)
        build_simulator(con, args.backend, flow.cfg)
        run_flow(con, flow)
    return 0


def flow_options(args):
    """The FlowOptions of the command line; a malformed option is one UsageError."""
    from dpukit.optimize.flow import FlowOptions
    from dpukit.optimize.prune import IMPORTANCES

    if args.prune_steps is not None and args.prune_steps < 0:
        raise UsageError(f"--prune-steps {args.prune_steps}: give 0 or more steps")
    if not 0 < args.prune_ratio < 1:
        raise UsageError(f"--prune-ratio {args.prune_ratio}: give a share between 0 and 1")
    if (args.prune_steps or 0) * args.prune_ratio >= 1:
        raise UsageError(
            f"--prune-steps {args.prune_steps} x --prune-ratio {args.prune_ratio} removes every "
            "channel; take fewer steps or a smaller ratio"
        )
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: give 0 or more")
    if args.importance not in IMPORTANCES:
        raise UsageError(f"--importance {args.importance}: one of {', '.join(IMPORTANCES)}")
    return FlowOptions(
        prune_steps=args.prune_steps,
        prune_ratio=args.prune_ratio,
        importance=args.importance,
        finetune_epochs=args.finetune_epochs,
        eliminate=tuple(parse_elimination(text) for text in args.eliminate),
        sweep_all=args.sweep,
        idle_s=args.idle_s,
        measure_s=args.measure_s,
        seed=args.seed,
    )


def parse_elimination(text: str) -> tuple[str, int]:
    """LAYER:P -> (LAYER, P); the layer's name may itself hold colons."""
    layer, colon, keep = text.rpartition(":")
    if not colon or not layer or not keep.strip().isdigit() or int(keep) < 1:
        raise UsageError(
            f"--eliminate {text}: give LAYER:P, the layer's node name and the number of "
            "neurons to keep (P >= 1), e.g. --eliminate fc1:32"
        )
    return layer, int(keep)


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--size {text}: give the height and width in pixels, e.g. 64,64")
    return int(parts[0]), int(parts[1])


def run_flow(con: Console, flow) -> list[dict]:
    """Every stage under a progress bar, a line per stage, the report, and the table."""
    results = []
    with progress(con) as bar:
        task = bar.add_task("", total=None)

        def show(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total or None)

        flow.progress = show
        for stage in flow.stages:
            bar.update(task, description=stage.name, completed=0, total=None)
            computed = len(flow.computed)
            result = flow.run_stage(stage)
            results.append(result)
            how = (
                f"computed {result['compute_s']:6.1f} s"
                if len(flow.computed) > computed
                else "cached          "
            )
            con.print(
                f"  {stage.name:<24} {how}   top-1 "
                f"{fmt_pct(result['accuracy']):>7}   {fmt_int(result['macs']):>12} MACs",
                highlight=False,
            )
        flow.progress = None
    files = flow.write_report()
    con.print(stage_table(results, flow))
    choice = flow.elimination_choice()
    if choice:
        con.print(
            f"neuron elimination (seed 001): within 2 points of the unreduced validation "
            f"accuracy, keeping {choice['keep']} neurons of {choice['layer']} saves the most "
            "energy (modeled, network level)",
            highlight=False,
        )
    report = Path(files["report.html"])
    con.print(
        f"report: [bold]{report}[/] (self-contained), with {report.parent / 'stages.csv'}, "
        f"{report.parent / 'report.json'} and the plots in {report.parent / 'plots'}",
        highlight=False,
    )
    return results


def stage_table(results: list[dict], flow) -> Table:
    """Seed 000's table (stage, power, accuracy) with latency, energy and size; every
    figure's kind in its cell."""
    from dpukit.optimize.report import table_row

    table = Table(
        title=f"stages: {flow.source.label} on {flow.data.name}, DPU {flow.cfg.name} "
        f"({flow.backend})",
        title_justify="left",
        caption_justify="left",
    )
    for col in ("stage", "power", "top-1", "latency / image", "DPU latency\nmodeled",
                "energy / inference", "measured energy", "params", "param bytes",
                "MACs"):  # fmt: skip
        table.add_column(col, justify="left" if col == "stage" else "right", no_wrap=True)
    kinds = set()
    for r in results:
        row = table_row(r)
        kinds |= {row["power_kind"], row["latency_kind"], row["energy_kind"]}
        power = "-" if row["power_w"] is None else fmt_si(row["power_w"], "W")
        measured = row["energy_measured_j"]
        modeled_ms = row["dpu_latency_modeled_ms"]
        table.add_row(
            row["stage"],
            f"{power} {_short(row['power_kind'])}",
            f"{row['accuracy_pct']:.1f} %",
            f"{row['latency_ms']:.4g} ms {_short(row['latency_kind'])}",
            "-" if modeled_ms is None else f"{modeled_ms:.4g} ms",
            f"{fmt_si(row['energy_per_inference_j'], 'J')} {_short(row['energy_kind'])}",
            "-" if measured is None else f"{fmt_si(measured, 'J')} measured",
            fmt_int(row["params"]),
            fmt_bytes(row["size_bytes"]),
            fmt_int(row["macs"]),
        )
    table.caption = "; ".join(sorted(k for k in kinds if k))
    return table


def _short(kind: str | None) -> str:
    """A cell's kind in one word; the caption spells each out."""
    if not kind:
        return ""
    return "measured" if kind.startswith("measured") else "modeled"
