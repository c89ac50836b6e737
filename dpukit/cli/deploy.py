"""`dpukit deploy`: copy a program, its overlay and images to a board over SSH, run the board
script there (dpukit.board_scripts.run_images), and bring its report back."""

from __future__ import annotations

import argparse
import shlex

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from dpukit.cli.common import positive_int
from dpukit.cli.render import fmt_pct
from dpukit.host.backends import BACKENDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "deploy",
        help="run a program on a board over SSH (the board needs `pip install dpukit[board]`)",
    )
    d.add_argument("program", help=".dpu program")
    d.add_argument("--board", required=True, metavar="[USER@]HOST", help="the board's SSH login")
    d.add_argument("--port", type=positive_int, default=22, metavar="N", help="SSH port (22)")
    d.add_argument("--identity", metavar="KEY", help="private key file (default: ssh's keys)")
    d.add_argument(
        "--known-hosts", metavar="FILE", help="trusted host keys (default ~/.ssh/known_hosts)"
    )
    d.add_argument(
        "--images", metavar="DIR", help="folder of images to copy (class/x.jpg or class.1.jpg)"
    )
    d.add_argument(
        "--random", type=positive_int, metavar="N", help="N random inputs instead of images"
    )
    d.add_argument("--overlay", metavar="NAME.bit", help="the overlay (its .hwh is copied too)")
    d.add_argument("--backend", choices=BACKENDS, default="pynq", help="default pynq")
    d.add_argument("--power", metavar="SENSOR[,SENSOR]", help="record these sensors on the board")
    d.add_argument(
        "--python",
        default="python3",
        metavar="CMD",
        help="the board's Python with dpukit (default python3; a PYNQ image's is "
        "/usr/local/share/pynq-venv/bin/python, as root)",
    )
    d.add_argument(
        "--remote-dir",
        default="dpukit-deploy",
        metavar="DIR",
        help="the board's working folder (default dpukit-deploy, in the login's home)",
    )
    d.add_argument(
        "--script-args",
        default="",
        metavar="ARGS",
        help="more options for the board script, e.g. '--batch 4 --color bgr'",
    )
    d.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="report folder")
    d.set_defaults(func=run)


def run(args, con: Console) -> int:
    from dpukit.deploy import Board, DeployError, deploy

    if (args.images is None) == (args.random is None):
        raise DeployError("give --images DIR or --random N (one of them)")
    script_args = shlex.split(args.script_args)
    if args.random:
        script_args = ["--random", str(args.random), *script_args]
    board = Board(args.board, args.port, args.identity, args.known_hosts)
    con.print(f"deploying [bold]{escape(args.program)}[/] to {escape(board.where)}")
    report = deploy(
        board,
        args.program,
        args.output,
        images=args.images,
        overlay=args.overlay,
        backend=args.backend,
        power=args.power,
        script_args=script_args,
        python=args.python,
        remote_dir=args.remote_dir,
        say=lambda line: con.print(line, markup=False, highlight=False, soft_wrap=True),
        board_says=lambda line: con.print(Text("  │ ", style="dim") + Text(line), soft_wrap=True),
    )
    accuracy = report.get("accuracy")
    latency = report["latency_ms_per_image"]["mean"]
    con.print(
        f"on {escape(board.where)}, {report['backend']} backend: {report['images']} images"
        + (f", top-1 [bold]{fmt_pct(accuracy)}[/]" if accuracy is not None else "")
        + f", {latency:.4g} ms per image, {report['throughput_images_per_s']:.4g} images/s "
        f"({escape(report['latency_kind'])}); report in {escape(str(args.output))}",
        highlight=False,
    )
    return 0
