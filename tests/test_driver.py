"""The board driver (host/driver.py) on the virtual board: the errors a board meets, each
with the driver's recovery, and asynchronous runs.

References: the golden model for every result (the next program after a fault must give
its bytes), the ISA's error codes for every fault, and the driver's own timeout rule for
a hung DPU. Time on the virtual board is simulated, so the timeouts here are cycle counts,
the same on any host.
"""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import instr

from dpukit.compiler import isa
from dpukit.compiler.compile import compile_model
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import Buffer, Opcode
from dpukit.errors import ExecutionError, ProgramError
from dpukit.host import regmap
from dpukit.host.board_backend import BoardDPU
from dpukit.host.driver import DpuDriver, DpuFault, DpuTimeout, timeout_cycles
from dpukit.host.runner import Runner
from dpukit.models.digits import load_digits_split
from dpukit.sim.virtual_board import VirtualBoard

CFG = load_config("sim-small")
# One GEMM over 65535 x 65535 vectors: billions of cycles, a DPU that never finishes
HUNG = isa.to_bytes([instr(Opcode.GEMM, reset=1, n_outer=65535, n_inner=65535), instr(Opcode.END)])
BUSY = regmap.register("STATUS").field("busy").mask


@pytest.fixture(scope="module")
def digits(digits_qdq):
    program = compile_model(digits_qdq, "sim-small")
    x = load_digits_split()[2][:3]
    feed = {program.inputs[0].name: x}
    want = Runner(program, "golden", CFG).run(feed)
    return program, feed, want


def _runs_like_golden(board: VirtualBoard, digits) -> None:
    """The digits CNN on `board` gives the golden model's outputs and counters."""
    program, feed, want = digits
    with Runner(program, BoardDPU(board, CFG), CFG) as runner:
        got = runner.run(feed)
    for name, value in want.outputs.items():
        np.testing.assert_array_equal(got.outputs[name], value)
    assert got.activity.mac_cycles == want.activity.mac_cycles
    assert got.activity.buffer_reads == want.activity.buffer_reads


def test_the_driver_runs_programs_on_a_board_without_interrupts(digits) -> None:
    _runs_like_golden(VirtualBoard(CFG, interrupts=False), digits)


def test_wrong_overlay_is_refused_by_its_fingerprint() -> None:
    board = VirtualBoard(CFG)
    other = load_config("pynq-z2")
    with pytest.raises(ProgramError) as err:
        DpuDriver(board, other)
    msg = str(err.value)
    assert CFG.fingerprint in msg and other.fingerprint in msg
    assert "'pynq-z2'" in msg and "overlay" in msg
    board.close()


@pytest.mark.parametrize("interrupts", [True, False], ids=["interrupt", "polling"])
def test_hung_dpu_times_out_is_soft_reset_and_the_next_program_runs(
    interrupts: bool, digits
) -> None:
    board = VirtualBoard(CFG, interrupts=interrupts)
    driver = DpuDriver(board, CFG)
    expected = 1_000  # what the cycle model would have said
    before = board.cycles()
    with pytest.raises(DpuTimeout) as err:
        driver.execute(HUNG, np.zeros(4096, np.uint8), expected)
    assert f"did not finish within {timeout_cycles(expected)} cycles" in str(err.value)
    assert "soft-reset" in str(err.value)
    # it waited the budget on the board's clock, not less
    assert board.cycles() - before >= timeout_cycles(expected)
    assert not board.mmio.read(regmap.offset("STATUS")) & BUSY
    _runs_like_golden(board, digits)


def test_axi_error_is_reported_and_the_next_program_runs(digits) -> None:
    program, feed, _ = digits
    board = VirtualBoard(CFG)
    dpu = BoardDPU(board, CFG)
    runner = Runner(program, dpu, CFG)
    window = runner.dram
    board.set_fault(window.physical_address, window.size)  # the DDR answers SLVERR
    with pytest.raises(DpuFault) as err:
        runner.run(feed)
    assert err.value.code == regmap.ErrorCode.LOAD_AXI
    assert "LOAD_AXI" in str(err.value) and "soft-reset" in str(err.value)
    board.set_fault(0, 0)
    runner.close()
    _runs_like_golden(board, digits)


def test_access_outside_the_window_is_reported(digits) -> None:
    board = VirtualBoard(CFG)
    driver = DpuDriver(board, CFG)
    beyond = instr(Opcode.LOAD, buffer=Buffer.INP, dram_offset=8192, y_size=1, x_size=1,
                   elem_bytes=CFG.rows)  # fmt: skip
    with pytest.raises(DpuFault) as err:
        driver.execute(isa.to_bytes([beyond, instr(Opcode.END)]), np.zeros(4096, np.uint8), 100)
    assert err.value.code == regmap.ErrorCode.LOAD_RANGE
    assert "outside the data window" in str(err.value)
    _runs_like_golden(board, digits)


def test_a_buffer_larger_than_the_boards_memory_is_refused() -> None:
    board = VirtualBoard(CFG, memory_bytes=1 << 20)
    driver = DpuDriver(board, CFG)
    with pytest.raises(
        ExecutionError, match=r"2097152 bytes does not fit in its DRAM of 1048576 bytes"
    ):
        driver.window(2 << 20)
    assert driver.window(512 << 10).size == 512 << 10  # what fits still does


def test_start_returns_while_the_dpu_runs() -> None:
    board = VirtualBoard(CFG)
    driver = DpuDriver(board, CFG)
    driver.start_stream(HUNG, np.zeros(4096, np.uint8), expected_cycles=10**9)
    # back at once, with the DPU running on its own clock
    assert board.mmio.read(regmap.offset("STATUS")) & BUSY
    assert not board.idle()
    driver.soft_reset()
    assert not board.mmio.read(regmap.offset("STATUS")) & BUSY
    board.close()


def test_jobs_run_in_order_and_wait_in_any_order(digits) -> None:
    program, feed, want = digits
    ((name, x),) = feed.items()
    with Runner(program, "rtl", CFG) as runner:
        jobs = [runner.execute_async({name: x[k : k + 1]}) for k in range(len(x))]
        results = [runner.wait(j) for j in reversed(jobs)][::-1]
        for job in (jobs[0], 10**6, "1"):
            with pytest.raises(ExecutionError, match="no job"):
                runner.wait(job)
    for out, value in want.outputs.items():
        np.testing.assert_array_equal(np.concatenate([r.outputs[out] for r in results]), value)


def test_a_started_job_keeps_its_inputs_when_the_caller_refills_them(digits) -> None:
    """execute_async copies: the next batch may be written into the same array while the
    current one runs (the overlap the asynchronous API is for)."""
    program, feed, want = digits
    ((name, x),) = feed.items()
    batch = x.copy()
    with Runner(program, "golden", CFG) as runner:
        busy = runner.execute_async({name: np.repeat(x, 50, axis=0)})  # keeps the worker busy
        job = runner.execute_async({name: batch})
        batch[:] = 0  # the caller's next batch
        runner.wait(busy)
        got = runner.wait(job)
    for out, value in want.outputs.items():
        np.testing.assert_array_equal(got.outputs[out], value)
