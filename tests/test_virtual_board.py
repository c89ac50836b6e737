"""The virtual board's housekeeping (sim/virtual_board.py): an interrupted run ends the
program at once and leaves no temporary file behind; its memory behaves as PYNQ's
contiguous allocator does; the simulator's build says so once when nobody sees a terminal;
its build directory stays inside sim_build/ whatever the config's name is."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dpukit.compiler.hwconfig import load_config
from dpukit.errors import ExecutionError
from dpukit.sim import verilator_env, virtual_board
from dpukit.sim.virtual_board import VirtualBoard

CFG = load_config("sim-small")

# A run of billions of cycles (one GEMM of 65535 x 65535 vectors), waited for with the
# driver's timeout far away: it is interrupted long before it ends.
LONG_RUN = textwrap.dedent(
    """
    import signal, sys
    import numpy as np
    # as a Python program run from a terminal has it (a non-interactive shell starts
    # background jobs with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, sys.argv[1])
    from stream_helpers import instr
    from dpukit.compiler import isa
    from dpukit.compiler.hwconfig import load_config
    from dpukit.compiler.isa import Opcode
    from dpukit.host.driver import DpuDriver
    from dpukit.sim.virtual_board import VirtualBoard
    cfg = load_config("sim-small")
    gemm = instr(Opcode.GEMM, reset=1, n_outer=65535, n_inner=65535)
    stream = isa.to_bytes([gemm, instr(Opcode.END)])
    driver = DpuDriver(VirtualBoard(cfg), cfg)
    driver.start_stream(stream, np.zeros(1 << 20, np.uint8), expected_cycles=1 << 40)
    print("started", flush=True)
    driver.wait()
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_ends_at_once_and_leaves_nothing_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    virtual_board.build(CFG)  # built here, so the script below only runs
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = tmp_path / "long_run.py"
    script.write_text(LONG_RUN)
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen(
        [sys.executable, str(script), tests],
        env=os.environ | {"TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "started\n", proc.stderr.read()
        proc.send_signal(sig)
        proc.wait(timeout=60)  # the simulation would run for hours
    finally:  # whatever failed, leave no script running
        proc.kill()
        proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
    assert not list(tmp.iterdir()), "temporary files left behind"


def test_memory_is_allocated_like_pynq_allocate() -> None:
    board = VirtualBoard(CFG, memory_bytes=64 << 10)
    a, b = board.allocate(100), board.allocate(5000)
    assert a.dtype == np.uint8 and a.shape == (100,) and b.shape == (5000,)
    # contiguous, page-aligned, apart, inside the board's DRAM (not at address 0)
    assert a.physical_address == virtual_board.DEFAULT_BASE
    assert b.physical_address == a.physical_address + 4096
    a[:] = 7
    assert (board.memory(a.physical_address, 100) == 7).all()  # the DPU's DRAM itself
    assert b[1000:].physical_address == b.physical_address + 1000  # a slice's own address
    a.freebuffer()
    c = board.allocate(4096)  # the freed page is used again, zeroed
    assert c.physical_address == a.physical_address and not c.any()
    with pytest.raises(
        ExecutionError, match=r"70000 bytes does not fit in its DRAM of 65536 bytes \(53248 free\)"
    ):
        board.allocate(70_000)
    board.close()
    with pytest.raises(ExecutionError, match="is closed"):
        board.mmio.read(0)


def test_a_missing_prebuilt_library_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(virtual_board.LIB_ENV, "/nonexistent/libdpu_vboard.so")
    with pytest.raises(ExecutionError, match="DPUKIT_VBOARD_LIB=/nonexistent/libdpu_vboard.so"):
        VirtualBoard(CFG)


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sim_build/ in tmp_path, and a Verilator that builds at once: it writes the executable
    its -o names."""
    verilator = tmp_path / "verilator"
    verilator.write_text('#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\necho > "$2"\n')
    verilator.chmod(0o755)
    build = tmp_path / "work" / "sim_build"
    monkeypatch.setattr(virtual_board, "BUILD", build)
    monkeypatch.setattr(verilator_env, "verilator_bin", lambda: verilator)
    monkeypatch.delenv(virtual_board.LIB_ENV, raising=False)
    return build


def test_build_says_so_once_when_not_on_a_terminal(
    fake_build: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exe = virtual_board.build(CFG)
    assert exe.is_file() and not exe.with_name(exe.name + ".partial").exists()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("building the RTL simulator for sim-small")
    assert f"cached in sim_build/{exe.parent.name}" in lines[0]
    assert virtual_board.build(CFG) == exe
    assert capsys.readouterr().err == ""  # a cache hit builds nothing and says nothing


@pytest.mark.parametrize("name", ["../../../x", "/abs/path", "..", "a/../../b", "x" * 300])
def test_build_dir_stays_inside_sim_build(fake_build: Path, name: str) -> None:
    # built directly: hwconfig.load_config may refuse such names, the build must not rely on it
    cfg = dataclasses.replace(CFG, name=name)
    exe = virtual_board.build(cfg)
    assert exe.resolve().parent.parent == fake_build.resolve()
    assert sorted(p.name for p in fake_build.parent.parent.iterdir()) == ["verilator", "work"]
    assert [p.name for p in fake_build.parent.iterdir()] == ["sim_build"]
