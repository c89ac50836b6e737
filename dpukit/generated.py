"""Files generated from Python sources of truth (the ISA, the register map): writing them,
checking they are current, and the Markdown tables their documents share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, followed by a blank line."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def write_or_check(
    outputs: dict[Path, str],
    command: str,
    description: str,
    argv: list[str] | None = None,
    root: Path = ROOT,
) -> int:
    """The `main` of a generator: write the files, or with --check exit 1 naming stale ones
    (paths are shown relative to `root`)."""
    parser = argparse.ArgumentParser(prog=command, description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
        for p in stale:
            print(f"{p.relative_to(root)} is out of date; run {command}", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        print(f"wrote {p.relative_to(root)}")
    return 0
