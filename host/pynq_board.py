"""A PYNQ board under host/driver.py: the overlay's DPU through pynq (runs on the board).

`PynqBoard(bitfile)` loads the overlay with `pynq.Overlay` (which reads the `.hwh` beside
the `.bit`), finds the DPU in its `ip_dict` by the IP type the overlay build packages it
as (hw/overlay/boards.py), and gives the driver the board platform it drives on any board:
the DPU's registers through `pynq.MMIO`, physically contiguous buffers through
`pynq.allocate`, the done interrupt through `pynq.Interrupt` where the overlay routes it to
pynq, and time from the wall clock.

pynq is imported here only, and only when a board is opened: PYNQ images bring it (v3.1 on
PYNQ-Z2, v3.0.1 on Ultra96-V2; /work/shared/BOARD_NOTES.md), the laptop never installs it.
Whatever stops a board from opening, off the board or on it, becomes one BoardError line
that says what is missing (`board_error`). The pynq behaviour relied on here is pynq 3.1.2's
(overlay.py, bitstream.py, mmio.py, buffer.py, interrupt.py, uio.py, pl_server/).

Board-side code: Python 3.10, numpy < 2, no onnx.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dpukit.errors import BoardError, ExecutionError
from dpukit.hw.overlay.boards import INTERRUPT_PIN, IP_VLNV

# The PL clock that drives the DPU: FCLK_CLK0 on Zynq-7000, pl_clk0 on Zynq UltraScale+
# (hw/overlay/boards.py), which pynq.Clocks calls fclk0.
DPU_CLOCK_INDEX = 0
# pynq 3.1.2 and 4.0 never reserve less than 8 KiB (an XRT 2.17 workaround: smaller
# buffers could get addresses above 4 GiB); asking for it here gives every pynq the same.
MIN_ALLOC_BYTES = 8 << 10
ADDRESS_BITS_WITHOUT_CONFIG = 32  # the Zynq-7000 HP port's; a config gives its own

PREFIX = "pynq backend: "
NO_PYNQ = (
    "pynq is not installed here; a PYNQ board's image brings it: run on the board, in its "
    "pynq environment (`source /etc/profile.d/pynq_venv.sh`, then `pip install "
    "dpukit[board]`); on this machine use --backend rtl or golden"
)
NOT_ROOT = (
    "needs root (pynq maps the DPU's registers and buffers through /dev/mem and XRT): run "
    "as root, e.g. `sudo -i`, then `source /etc/profile.d/xrt_setup.sh` and `source "
    "/etc/profile.d/pynq_venv.sh`"
)
NO_DEVICE = (
    "pynq finds no FPGA (RuntimeError: No Devices Found): this is not a PYNQ board, or "
    "XRT's environment is not set up (`source /etc/profile.d/xrt_setup.sh`)"
)


class OverlayWithoutDpu(LookupError):
    """The overlay's ip_dict has no dpukit DPU, or several (`find_dpu`)."""

    def __init__(self, ip_types: Mapping[str, str], dpus: list[str]):
        super().__init__(f"{len(dpus)} IP of type {IP_VLNV} in {dict(ip_types)}")
        self.ip_types, self.dpus = dict(ip_types), dpus


def _said(exc: BaseException) -> str:
    """What an exception said, on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def board_error(exc: BaseException, bitfile: str | os.PathLike) -> BoardError:
    """The one-line BoardError for `exc`, which stopped the PYNQ backend from opening the
    overlay `bitfile`: raised by `open_pynq`'s checks, by `find_dpu`, or by pynq itself (its
    own exception types and words, pynq 3.1.2)."""
    if isinstance(exc, BoardError):
        return exc
    bit = Path(bitfile)
    hwh = bit.with_suffix(".hwh")
    said = _said(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").partition(".")[0] == "pynq":
        why = NO_PYNQ
    elif isinstance(exc, ImportError):
        why = f"pynq is installed but does not import ({said}): reinstall the board image's pynq"
    elif (isinstance(exc, FileNotFoundError) and exc.filename == str(hwh)) or (
        isinstance(exc, RuntimeError) and "Unable to find metadata" in str(exc)  # pynq's
    ):
        why = (
            f"the overlay {bit} has no .hwh beside it: pynq reads the DPU's address and "
            f"interrupt from {hwh} (same folder, same basename); copy the .hwh that `make "
            "overlay` wrote with the .bit"
        )
    elif isinstance(exc, FileNotFoundError) or (
        isinstance(exc, OSError) and "does not exist" in str(exc)  # pynq's Bitstream
    ):
        why = (
            f"no overlay {bit}: give the .bit that `make overlay` built (its .hwh beside it), "
            "copied to the board"
        )
    elif isinstance(exc, RuntimeError) and "Unknown file format" in str(exc):
        why = f"{bit} is not a .bit file: give the overlay's .bit (its .hwh beside it)"
    elif isinstance(exc, PermissionError) or "Root permissions required" in str(exc):
        why = NOT_ROOT
    elif isinstance(exc, RuntimeError) and "No Devices Found" in str(exc):
        why = NO_DEVICE
    elif isinstance(exc, OverlayWithoutDpu):
        listed = ", ".join(f"{name} ({kind})" for name, kind in sorted(exc.ip_types.items()))
        found = (
            f"several DPUs ({', '.join(exc.dpus)}), and the driver drives one"
            if exc.dpus
            else f"no dpukit DPU (IP type {IP_VLNV}); its ip_dict has {listed or 'nothing'}"
        )
        why = f"the overlay {bit.name} has {found}: load an overlay built by `make overlay`"
    else:
        why = f"pynq could not open the overlay {bit} ({said})"
    return BoardError(PREFIX + why)


def open_pynq(bitfile: str | os.PathLike, *, euid: int | None = None):
    """The pynq module, once what pynq needs before it touches the board holds, checked in
    the order a user fixes it: the .bit, the .hwh beside it, pynq itself, root. Otherwise a
    BoardError saying which is missing. `euid` stands in for the process's (tests)."""
    bit = Path(bitfile)
    try:
        if bit.suffix != ".bit":
            raise RuntimeError("Unknown file format")  # pynq's words for it
        for path in (bit, bit.with_suffix(".hwh")):
            if not path.is_file():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        import pynq

        if (os.geteuid() if euid is None else euid) != 0:
            raise PermissionError(errno.EPERM, "Root permissions required.")
        return pynq
    except Exception as exc:
        raise board_error(exc, bit) from exc


def find_dpu(ip_dict: Mapping[str, Mapping]) -> tuple[str, Mapping]:
    """The DPU's name and entry in an overlay's ip_dict, found by its IP type (the key is the
    block design cell's path, whatever the design calls it); OverlayWithoutDpu otherwise."""
    dpus = sorted(name for name, ip in ip_dict.items() if ip.get("type") == IP_VLNV)
    if len(dpus) != 1:
        types = {name: str(ip.get("type", "?")) for name, ip in ip_dict.items()}
        raise OverlayWithoutDpu(types, dpus)
    return dpus[0], ip_dict[dpus[0]]


def interrupt_path(name: str, ip: Mapping, interrupt_pins: Mapping) -> str | None:
    """The DPU's done-interrupt pin as `pynq.Interrupt` names it, or None when the overlay
    does not route it where pynq can wait on it. pynq 3.1 lists a pin only behind an AXI
    interrupt controller (axi_intc; metadata/interrupt_pins_view.py): a line wired straight
    to the PS's IRQ input is not listed, and the driver polls."""
    pin = (ip.get("interrupts") or {}).get(INTERRUPT_PIN)
    path = (pin or {}).get("fullpath") or f"{name}/{INTERRUPT_PIN}"
    return path if path in interrupt_pins else None


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _interrupt_loop() -> asyncio.AbstractEventLoop:
    """The event loop, on a daemon thread, that every pynq interrupt of this process lives
    on. A pynq Interrupt's UIO reader is added to the event loop current when the Interrupt
    is made and is kept per IRQ for the rest of the process (uio.py, interrupt.py), so one
    loop that runs as long as the process serves every board opened in it."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="dpukit-pynq-irq", daemon=True).start()
            _loop = loop
        return _loop


class _DoneInterrupt:
    """The DPU's done interrupt (`pynq.Interrupt`, asyncio) waited on from plain code.

    Each wait is submitted to the interrupt loop's thread and the caller blocks on its
    future, so it works whether or not an event loop already runs in the caller's thread
    (Jupyter's does, where asyncio.run and run_until_complete refuse to run)."""

    def __init__(self, pynq, path: str):
        self._pynq, self.path = pynq, path
        self._interrupt = self._renew()

    def _renew(self):
        async def make():  # on the loop, so pynq attaches the UIO reader to it
            return self._pynq.Interrupt(self.path)

        return asyncio.run_coroutine_threadsafe(make(), _interrupt_loop()).result()

    def wait(self, timeout_s: float) -> bool:
        waiting = asyncio.wait_for(self._interrupt.wait(), max(0.0, timeout_s))
        try:
            asyncio.run_coroutine_threadsafe(waiting, _interrupt_loop()).result()
            return True
        except (asyncio.TimeoutError, concurrent.futures.TimeoutError):
            # After a cancelled wait pynq's Interrupt stays armed, and its next wait would
            # return at once on this run's late interrupt: the next run waits on a new one.
            self._interrupt = self._renew()
            return False


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """Linux's memory figures (MemAvailable, CmaTotal, CmaFree, ...) in bytes; {} where
    there are none (another OS, an unreadable file)."""
    info = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields = value.split()
                if fields and fields[0].isdigit():
                    info[key.strip()] = int(fields[0]) << (10 if fields[1:] == ["kB"] else 0)
    except OSError:
        return {}
    return info


def contiguous_memory() -> str:
    """The board's contiguous memory (the CMA pool that pynq's buffers come from), for
    messages about buffers that do not fit."""
    info = meminfo()
    if "CmaTotal" not in info or "CmaFree" not in info:
        return "the board's contiguous memory (CMA) is of unknown size"
    total, free = info["CmaTotal"], info["CmaFree"]
    return f"{free >> 20} MiB of the board's {total >> 20} MiB contiguous memory (CMA) are free"


class BoardBuffer(np.ndarray):
    """`nbytes` of a pynq buffer (which may reserve more), shaped like the buffers the
    driver uses on any board: uint8, `physical_address`, `flush`, `invalidate`,
    `freebuffer`. A slice keeps the physical address of its own first byte."""

    physical_address: int | None

    def __array_finalize__(self, obj) -> None:
        self._owner = getattr(obj, "_owner", None)  # the pynq buffer; None: not board memory
        self._board = getattr(obj, "_board", None)
        base = getattr(obj, "physical_address", None)
        if base is not None:
            base += self.__array_interface__["data"][0] - obj.__array_interface__["data"][0]
        self.physical_address = base

    @property
    def device_address(self) -> int | None:
        return self.physical_address

    def flush(self) -> None:
        if self._owner is not None:
            self._owner.flush()

    def invalidate(self) -> None:
        if self._owner is not None:
            self._owner.invalidate()

    def freebuffer(self) -> None:
        if self._board is not None:
            self._board._free(self._owner)


class _Registers:
    """The DPU's registers through pynq.MMIO, whose write takes a Python int only (a numpy
    integer is refused with ValueError)."""

    def __init__(self, mmio):
        self._mmio = mmio

    def read(self, offset: int) -> int:
        return int(self._mmio.read(offset))  # a Python int, whatever pynq returns

    def write(self, offset: int, value: int) -> None:
        self._mmio.write(offset, int(value))


class PynqBoard:
    """A PYNQ board with a dpukit overlay, as host/driver.py drives a board.

    `bitfile` is the overlay's .bit, its .hwh beside it under the same basename. `cfg` (the
    hardware config) gives the DPU's address width and the clock when pynq cannot read it.
    `download=False` uses the bitstream already in the PL."""

    def __init__(self, bitfile: str | os.PathLike, *, cfg=None, download: bool = True):
        bit = Path(bitfile)
        self.address_bits = ADDRESS_BITS_WITHOUT_CONFIG if cfg is None else cfg.axi_addr_bits
        self._owners: dict[int, object] = {}  # id -> pynq buffer, until freed
        pynq = open_pynq(bit)
        try:
            self.overlay = pynq.Overlay(str(bit.resolve()), download=download)
            name, ip = find_dpu(self.overlay.ip_dict)
            self.mmio = _Registers(pynq.MMIO(ip["phys_addr"], ip["addr_range"]))
        except Exception as exc:
            raise board_error(exc, bit) from exc
        self._pynq = pynq
        self.name = f"PYNQ board ({bit.name}: DPU {name} at {ip['phys_addr']:#x})"
        self._interrupt, self.interrupt_note = self._open_interrupt(name, ip)
        self.has_interrupt = self._interrupt is not None
        self.clock_hz = self._clock_hz(cfg)

    def _open_interrupt(self, name: str, ip: Mapping) -> tuple[_DoneInterrupt | None, str]:
        """The DPU's done interrupt and how the driver waits ("interrupt ..." or "polling
        STATUS: why"). An interrupt pynq cannot open (no UIO device for its IRQ in the
        board's device tree) leaves the driver polling, which is slower but as correct."""
        path = interrupt_path(name, ip, self.overlay.interrupt_pins)
        if path is None:
            return None, (
                f"polling STATUS: the overlay routes no {name}/{INTERRUPT_PIN} to pynq (it "
                "lists interrupts behind an AXI interrupt controller only)"
            )
        try:
            return _DoneInterrupt(self._pynq, path), f"interrupt {path} (pynq.Interrupt)"
        except (ValueError, RuntimeError, OSError) as exc:
            return None, f"polling STATUS: pynq cannot open the interrupt {path} ({_said(exc)})"

    def _clock_hz(self, cfg) -> float:
        """The DPU's clock as the PS runs it now (pynq.Clocks reads its PLL and dividers,
        which Overlay.download set from the .hwh), or the config's where pynq cannot say."""
        try:
            mhz = float(getattr(self._pynq.Clocks, f"fclk{DPU_CLOCK_INDEX}_mhz"))
        except (AttributeError, RuntimeError, OSError, ValueError, TypeError):
            mhz = 0.0
        if mhz > 0:
            return mhz * 1e6
        if cfg is not None:
            return cfg.clock_mhz * 1e6
        raise BoardError(
            PREFIX + f"{self.name}: pynq.Clocks cannot read the DPU's clock (fclk"
            f"{DPU_CLOCK_INDEX}) and no hardware config gives it"
        )

    # -- the platform host/driver.py drives -------------------------------------------------
    def allocate(self, nbytes: int) -> BoardBuffer:
        """`nbytes` of physically contiguous memory the DPU can address (pynq reserves at
        least MIN_ALLOC_BYTES); ExecutionError naming the sizes when the board has no room
        or pynq places it beyond the DPU's address bits."""
        nbytes = int(nbytes)
        limit = 1 << self.address_bits
        if not 0 < nbytes <= limit:
            raise ExecutionError(
                f"{self.name}: cannot allocate a buffer of {nbytes} bytes; the DPU addresses "
                f"{limit} bytes ({self.address_bits} address bits)"
            )
        reserved = max(nbytes, MIN_ALLOC_BYTES)
        try:
            owner = self._pynq.allocate(shape=(reserved,), dtype=np.uint8)
        except (RuntimeError, MemoryError, OSError) as exc:
            raise ExecutionError(
                f"{self.name}: a buffer of {nbytes} bytes does not fit: {contiguous_memory()} "
                f"(pynq: {_said(exc)}); use a smaller "
                "model or batch, or close other programs' buffers"
            ) from exc
        address = int(owner.physical_address)  # the driver checks the DPU's bus reaches it
        self._owners[id(owner)] = owner
        buf = owner[:nbytes].view(BoardBuffer)
        buf._owner, buf._board, buf.physical_address = owner, self, address
        return buf

    def _free(self, owner) -> None:
        if self._owners.pop(id(owner), None) is not None:
            owner.freebuffer()

    def now(self) -> float:
        """Seconds on the board's clock: the wall clock (monotonic)."""
        return time.monotonic()

    def wait_interrupt(self, timeout_s: float) -> bool:
        """Block until the DPU's done interrupt (True) or `timeout_s` seconds (False)."""
        if self._interrupt is None:
            raise ExecutionError(f"{self.name}: no interrupt to wait on; {self.interrupt_note}")
        try:
            return self._interrupt.wait(timeout_s)
        except Exception as exc:  # e.g. pynq: "Interrupt invalidated by Overlay change"
            raise ExecutionError(
                f"{self.name}: waiting for the DPU's interrupt {self._interrupt.path} failed "
                f"({_said(exc)})"
            ) from exc

    def close(self) -> None:
        """Free every buffer still allocated (the overlay stays in the PL)."""
        for owner in list(self._owners.values()):
            self._free(owner)

    def __enter__(self) -> PynqBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
