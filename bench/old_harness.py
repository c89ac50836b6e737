"""The C++ harness the virtual board replaced (commit 7b949b7), rebuilt from git in the
bench's own run, so the virtual board's simulation speed is compared with it on the same
machine, the same layers and the same compiler (issue 10: "old harness vs new in the same
run while both exist"). It had its own register driver in C++ and exchanged DRAM images
through files; its `wall_s` is the simulated run alone, as the virtual board's is.

Needs git and the repository's history; without them the comparison is left out, saying so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

OLD_COMMIT = "7b949b7"
ROOT = Path(__file__).resolve().parents[1]


def load_old_harness(workdir: Path):
    """The old sim/rtl_harness.py module, with its C++ beside it (built on first use, cached
    in sim_build/ as harness_*), or the reason it is not available."""
    sim = workdir / "old" / "sim"
    (sim / "harness").mkdir(parents=True, exist_ok=True)
    for path in ("sim/rtl_harness.py", "sim/harness/dpu_harness.cpp"):
        try:
            text = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{path}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
        except (OSError, subprocess.CalledProcessError) as exc:
            return f"git cannot give {path} at {OLD_COMMIT} ({exc})"
        (workdir / "old" / path).write_text(text)
    spec = importlib.util.spec_from_file_location("old_rtl_harness", sim / "rtl_harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    module.BUILD = ROOT / "sim_build"  # its builds cached beside the virtual board's
    return module
