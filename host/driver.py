"""The DPU's register-level driver: the one register sequence, for every board.

A board (the virtual board of sim/virtual_board.py, or host/pynq_board.py on PYNQ) gives the
driver what PYNQ gives any overlay driver:

    board.mmio.read(offset) / board.mmio.write(offset, value)   32-bit registers
    board.allocate(nbytes) -> buffer   contiguous uint8 ndarray with .physical_address,
                                       .flush(), .invalidate(), .freebuffer()
    board.has_interrupt, board.wait_interrupt(timeout_s) -> bool   the done interrupt
    board.now() -> seconds on the board's clock; board.clock_hz; board.address_bits
    board.name, board.close()

The driver places instruction streams and the data window in such buffers, checks the
DPU's config fingerprint against the program's, programs the windows and the instruction
base and count (host/regmap.py), starts, waits for done (the interrupt where the board has
one, otherwise polling STATUS), with a timeout derived from the cycle model's count, and
reads the counters and ERROR_CODE. A timeout or an error soft-resets the core and raises
an error that says what happened; the next program then runs.

Board-side code: Python 3.10, numpy < 2, no onnx (see BOARD_NOTES).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.isa import INSTR_BYTES
from dpukit.errors import ExecutionError, ProgramError
from dpukit.host import regmap

_CTRL = regmap.register("CTRL")
_STATUS = regmap.register("STATUS")
_IRQ_DONE = regmap.register("IRQ_STATUS").field("done").mask
START = _CTRL.field("start").mask
SOFT_RESET = _CTRL.field("soft_reset").mask
IRQ_ENABLE = _CTRL.field("irq_enable").mask
DONE = _STATUS.field("done").mask
ERROR = _STATUS.field("error").mask

# The timeout: the cycle model's count, with room for a slower DRAM than the model's, and a
# floor for tiny programs (its count is within a few % of the RTL's; bench/rtl.py).
TIMEOUT_FACTOR = 20
TIMEOUT_FLOOR_CYCLES = 100_000
POLL_S = 0.0005  # between STATUS reads when the board has no interrupt


class DpuTimeout(ExecutionError):
    """The DPU did not finish in time; the driver soft-reset it."""


class DpuFault(ExecutionError):
    """The DPU stopped on an error (ERROR_CODE); the driver soft-reset it."""

    def __init__(self, message: str, code: regmap.ErrorCode | int):
        super().__init__(message)
        self.code = code


@dataclass
class Finished:
    """What one run left in the registers."""

    registers: dict[str, int]  # every register; counters as full 64-bit values
    timed_out: bool = False

    @property
    def cycles(self) -> int:
        return self.registers["CYCLES"]

    @property
    def error_code(self) -> regmap.ErrorCode | int:
        """ERROR_CODE as the map names it (the raw value if the map has no such code)."""
        code = self.registers["ERROR_CODE"]
        return regmap.ErrorCode(code) if code in regmap.ErrorCode._value2member_map_ else code

    @property
    def done(self) -> bool:
        return bool(self.registers["STATUS"] & DONE)

    @property
    def error(self) -> bool:
        return bool(self.registers["STATUS"] & ERROR)


def timeout_cycles(expected_cycles: int) -> int:
    """How long the driver waits for a program the cycle model counts `expected_cycles` for."""
    return TIMEOUT_FACTOR * int(expected_cycles) + TIMEOUT_FLOOR_CYCLES


class DpuDriver:
    """Drives one DPU on `board`, for programs compiled for `cfg`."""

    def __init__(self, board, cfg: HwConfig):
        self.board, self.cfg = board, cfg
        self.mmio = board.mmio
        self._streams: dict[bytes, object] = {}  # instruction stream -> its buffer
        self._window = None  # the data window's buffer
        self._deadline: float | None = None  # board time by which a started run must end
        self._budget = 0  # cycles the started run may take
        self._expected = 0  # cycles the cycle model counts for it
        self.check_fingerprint()
        # a core left running or stopped by an earlier user of the board starts clean
        self.mmio.write(_CTRL.offset, SOFT_RESET)

    # -- identity ----------------------------------------------------------------------
    def fingerprint(self) -> int:
        lo = self.mmio.read(regmap.offset("CONFIG_FINGERPRINT_LO"))
        hi = self.mmio.read(regmap.offset("CONFIG_FINGERPRINT_HI"))
        return (hi << 32) | lo

    def check_fingerprint(self) -> None:
        """The DPU on the board is built from the config the programs were compiled for."""
        want = regmap.fingerprint_value(self.cfg.fingerprint)
        got = self.fingerprint()
        if got != want:
            raise ProgramError(
                f"{self.board.name}: the DPU has config fingerprint {got:016x}, the program was "
                f"compiled for '{self.cfg.name}' ({want:016x}): load the overlay built from "
                f"that config (`make overlay`), or recompile the model for this DPU's config"
            )

    # -- memory ------------------------------------------------------------------------
    def _allocate(self, nbytes: int, what: str):
        buf = self.board.allocate(nbytes)
        end = buf.physical_address + nbytes
        if end > 1 << self.cfg.axi_addr_bits:
            buf.freebuffer()
            raise ExecutionError(
                f"{self.board.name}: the {what} ({nbytes} bytes) got address "
                f"{buf.physical_address:#x}, beyond the DPU's {self.cfg.axi_addr_bits}-bit "
                f"bus (which ends at {1 << self.cfg.axi_addr_bits:#x}): free memory below it, "
                "or use a smaller model"
            )
        return buf

    def load(self, stream: bytes):
        """The buffer holding `stream` (placed on first use, then reused)."""
        buf = self._streams.get(stream)
        if buf is None:
            if not stream or len(stream) % INSTR_BYTES:
                raise ExecutionError(
                    f"instruction stream of {len(stream)} bytes is not whole instructions"
                )
            buf = self._allocate(len(stream), "instruction stream")
            buf[:] = np.frombuffer(stream, np.uint8)
            buf.flush()
            self._streams[stream] = buf
        return buf

    def window(self, nbytes: int) -> np.ndarray:
        """The data window's buffer, at least `nbytes` (zero-copy: write inputs into it and
        read outputs from it). A larger request replaces it; its contents are not kept."""
        if self._window is None or self._window.size < nbytes:
            if self._window is not None:
                self._window.freebuffer()
                self._window = None
            self._window = self._allocate(max(nbytes, 1), "data window")
        return self._window[:nbytes]

    # -- one run -----------------------------------------------------------------------
    def program(self, instr_address: int, count: int, data_address: int, limit: int) -> None:
        """Write the instruction base and count and the data window registers."""
        for name, value in (
            ("INSTR_BASE_LO", instr_address & 0xFFFF_FFFF),
            ("INSTR_BASE_HI", instr_address >> 32),
            ("INSTR_COUNT", count),
            ("DATA_BASE_LO", data_address & 0xFFFF_FFFF),
            ("DATA_BASE_HI", data_address >> 32),
            ("DATA_LIMIT", limit),
        ):
            self.mmio.write(regmap.offset(name), value)

    def start(self, expected_cycles: int, budget_cycles: int | None = None) -> None:
        """Start the programmed run; returns at once. `expected_cycles` is the cycle
        model's count, which sets the timeout (or `budget_cycles` directly)."""
        self._expected = int(expected_cycles)
        self._budget = timeout_cycles(expected_cycles) if budget_cycles is None else budget_cycles
        self.mmio.write(regmap.offset("IRQ_STATUS"), _IRQ_DONE)  # W1C: the last run's done
        started = self.board.now()
        self.mmio.write(_CTRL.offset, START | (IRQ_ENABLE if self.board.has_interrupt else 0))
        self._deadline = started + self._budget / self.board.clock_hz

    def wait_done(self) -> bool:
        """Block until the started run is done (True) or its time is up (False)."""
        if self._deadline is None:
            raise ExecutionError("wait without a started run")
        deadline, self._deadline = self._deadline, None
        if self.board.has_interrupt:
            # STATUS confirms each interrupt, as PYNQ's own DMA driver does: an interrupt
            # controller may hold the last run's line, so a wait can return early
            while not self.mmio.read(_STATUS.offset) & DONE:
                left = deadline - self.board.now()
                if left <= 0 or not self.board.wait_interrupt(left):
                    return bool(self.mmio.read(_STATUS.offset) & DONE)
            return True
        while not self.mmio.read(_STATUS.offset) & DONE:
            if self.board.now() >= deadline:  # one last look: it may have ended meanwhile
                return bool(self.mmio.read(_STATUS.offset) & DONE)
            time.sleep(POLL_S)
        return True

    def read_registers(self) -> dict[str, int]:
        """Every register of the map; each counter as one 64-bit value (LO latches HI)."""
        values = {r.name: self.mmio.read(r.offset) for r in regmap.CONTROL_REGISTERS}
        for name, _ in regmap.COUNTERS:
            lo = self.mmio.read(regmap.offset(name + "_LO"))
            hi = self.mmio.read(regmap.offset(name + "_HI"))
            values[name] = (hi << 32) | lo
        return values

    def soft_reset(self) -> None:
        self.mmio.write(_CTRL.offset, SOFT_RESET)
        self.mmio.write(regmap.offset("IRQ_STATUS"), _IRQ_DONE)

    def finish(self) -> Finished:
        """Wait for the started run and read what it left, as it left it (no recovery)."""
        return self.finished(self.wait_done())

    def finished(self, done: bool) -> Finished:
        """What a run left, read once `wait_done` said whether it is `done`."""
        regs = self.read_registers()
        if done:
            self.mmio.write(regmap.offset("IRQ_STATUS"), _IRQ_DONE)  # lower the line
        return Finished(regs, timed_out=not done)

    def wait(self) -> dict[str, int]:
        """Wait for the started run; its registers. On a timeout or an error the core is
        soft-reset (so the next run can start) and DpuTimeout or DpuFault says why."""
        return self.check(self.finish())

    def check(self, end: Finished) -> dict[str, int]:
        """The registers of a finished run, or, after a soft reset, the error it met."""
        if end.timed_out:
            self.soft_reset()
            raise DpuTimeout(
                f"{self.board.name}: the DPU did not finish within {self._budget} cycles "
                f"(the cycle model expects {self._expected}; {end.cycles} counted); it was "
                "soft-reset and takes the next program"
            )
        if end.error:
            code = end.error_code
            self.soft_reset()
            what = (
                f"{code.value} {code.name}: {regmap.ERROR_DOCS[code]}"
                if isinstance(code, regmap.ErrorCode)
                else f"code {code}, which this driver's register map does not know (a DPU "
                "built from a newer dpukit?)"
            )
            raise DpuFault(
                f"{self.board.name}: the DPU stopped with error {what} (after {end.cycles} "
                "cycles); it was soft-reset and takes the next program",
                code,
            )
        return end.registers

    def execute(
        self, stream: bytes, dram: np.ndarray, expected_cycles: int, timing: dict | None = None
    ) -> dict[str, int]:
        """Run `stream` over the data window `dram` (updated in place; zero-copy when it is
        this driver's window) and return the registers it left. `timing`, if given, adds up
        a successful run's times: "wall_s" from its start to its done, "driver_s" the
        driver's own around it (placing the run; reading the registers and the window)."""
        t0 = time.perf_counter()
        self.start_stream(stream, dram, expected_cycles)
        t1 = time.perf_counter()
        try:
            done = self.wait_done()
            t2 = time.perf_counter()
            registers = self.check(self.finished(done))
        finally:
            self.collect(dram)
        if timing is not None:
            timing["wall_s"] += t2 - t1
            timing["driver_s"] += (t1 - t0) + (time.perf_counter() - t2)
        return registers

    def start_stream(self, stream: bytes, dram: np.ndarray, expected_cycles: int) -> None:
        """Place `stream` and the window, flush, program, start; returns at once."""
        instr = self.load(stream)
        window = self.window(dram.size)
        if not np.shares_memory(window, dram):
            window[:] = dram
        window.flush()
        self.program(instr.physical_address, len(stream) // INSTR_BYTES,
                     window.physical_address, dram.size)  # fmt: skip
        self.start(expected_cycles)

    def collect(self, dram: np.ndarray) -> None:
        """After the run: the window as the DPU left it, into `dram`."""
        window = self.window(dram.size)
        window.invalidate()
        if not np.shares_memory(window, dram):
            dram[:] = window

    def close(self) -> None:
        for buf in self._streams.values():
            buf.freebuffer()
        self._streams.clear()
        if self._window is not None:
            self._window.freebuffer()
            self._window = None
