"""The RTL harness's housekeeping (sim/rtl_harness.py, issue 8): an interrupted run leaves no
temporary file and no simulator process behind; the simulator's build says so once when
nobody sees a terminal; its build directory stays inside sim_build/ whatever the config's
name is."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dpukit.compiler.hwconfig import load_config
from dpukit.sim import rtl_harness

CFG = load_config("sim-small")

# A run of billions of cycles (one GEMM of 65535 x 65535 vectors): it is interrupted long
# before it ends.
LONG_RUN = textwrap.dedent(
    """
    import signal, sys
    import numpy as np
    # as a Python program run from a terminal has it (a non-interactive shell starts
    # background jobs with SIGINT ignored, and the harness leaves an ignored signal alone)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, sys.argv[1])
    from stream_helpers import instr
    from dpukit.compiler import isa
    from dpukit.compiler.hwconfig import load_config
    from dpukit.compiler.isa import Opcode
    from dpukit.sim.rtl_harness import run_program
    gemm = instr(Opcode.GEMM, reset=1, n_outer=65535, n_inner=65535)
    stream = isa.to_bytes([gemm, instr(Opcode.END)])
    run_program(load_config("sim-small"), stream, np.zeros(1 << 20, np.uint8),
                max_cycles=1 << 29)  # minutes: a simulator a failed test leaves ends anyway
    """
)


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:  # it ended while we looked
            pass
    return pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    rtl_harness.build(CFG)  # built here, so the script below only runs
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = tmp_path / "long_run.py"
    script.write_text(LONG_RUN)
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen(
        [sys.executable, str(script), tests], env=os.environ | {"TMPDIR": str(tmp)}
    )
    try:
        deadline = time.monotonic() + 60
        while not _processes_mentioning(str(tmp)):  # the simulator runs over its image
            assert proc.poll() is None, "the script ended before the simulator started"
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        assert list(tmp.rglob("*.bin")), "the DRAM image is not where TMPDIR says"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:  # whatever failed, leave no script and no simulator running
        proc.kill()
        proc.wait()
        left = _processes_mentioning(str(tmp))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # ends as SIGTERM does, after the cleanup
    else:
        assert proc.returncode != 0  # KeyboardInterrupt
    assert not left, "the simulator still ran"
    assert not list(tmp.iterdir()), "temporary files left behind"


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sim_build/ in tmp_path, and a Verilator that builds at once: it writes the executable
    its -o names."""
    verilator = tmp_path / "verilator"
    verilator.write_text('#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\necho > "$2"\n')
    verilator.chmod(0o755)
    build = tmp_path / "work" / "sim_build"
    monkeypatch.setattr(rtl_harness, "BUILD", build)
    monkeypatch.setattr(rtl_harness, "verilator_bin", lambda: verilator)
    return build


def test_build_says_so_once_when_not_on_a_terminal(
    fake_build: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exe = rtl_harness.build(CFG)
    assert exe.is_file() and not exe.with_name("dpu_harness.partial").exists()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("building the RTL simulator for sim-small")
    assert f"cached in sim_build/{exe.parent.name}" in lines[0]
    assert rtl_harness.build(CFG) == exe
    assert capsys.readouterr().err == ""  # a cache hit builds nothing and says nothing


@pytest.mark.parametrize("name", ["../../../x", "/abs/path", "..", "a/../../b", "x" * 300])
def test_build_dir_stays_inside_sim_build(fake_build: Path, name: str) -> None:
    # built directly: hwconfig.load_config may refuse such names, the build must not rely on it
    cfg = dataclasses.replace(CFG, name=name)
    exe = rtl_harness.build(cfg)
    assert exe.resolve().parent.parent == fake_build.resolve()
    assert sorted(p.name for p in fake_build.parent.parent.iterdir()) == ["verilator", "work"]
    assert [p.name for p in fake_build.parent.iterdir()] == ["sim_build"]
