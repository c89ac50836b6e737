"""The virtual board: the DPU's RTL in Verilator, shaped like a PYNQ board to its driver.

sim/harness/dpu_vboard.cpp is the hardware around the DPU (clock, reset, a DRAM model on
its AXI masters, the AXI4-Lite path to its registers), built with the Verilator model into
a shared library with a small C ABI. This module loads it with ctypes and presents what
host/driver.py needs from any board (the same shape as PYNQ's `MMIO`, `allocate` and
`Interrupt`):

    board = VirtualBoard(cfg)              # out of reset, DRAM zeroed
    board.mmio.write(offset, value); board.mmio.read(offset)
    buf = board.allocate(nbytes)           # uint8 ndarray over the DRAM model itself
    buf.physical_address, buf.flush(), buf.invalidate(), buf.freebuffer()
    board.wait_interrupt(timeout_s)        # True on the done interrupt; simulated seconds

The clock runs on its own thread from a start write until the core is idle again, so a
driver that starts the DPU gets control back at once (execute_async is asynchronous), may
copy the next input meanwhile, and reads registers between slices of simulated time. The
foreign calls release the GIL; one lock orders every call into the model. Time on this
board is simulated time (cycles / clock), so a timeout is the same number of cycles on any
host, however slow.

One build per hardware config and RTL version, cached under sim_build/ (pytest workers
share it through a file lock). DPUKIT_VBOARD_LIB names a prebuilt library instead (an
environment without Verilator, e.g. the Python 3.10 board environment of the tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from dpukit.compiler.hwconfig import HwConfig
from dpukit.errors import ExecutionError
from dpukit.host import regmap

VBOARD_CPP = Path(__file__).resolve().parent / "harness" / "dpu_vboard.cpp"
BUILD = Path(__file__).resolve().parents[1] / "sim_build"
LIB_ENV = "DPUKIT_VBOARD_LIB"
# C++ optimization of the model: -O3 on its per-cycle code gives about 6 % more simulated
# cycles per second than -O2 (bench/rtl.py, pynq-z2), for a few more seconds of build
MAKE_OPT = "OPT_FAST=-O3 OPT_SLOW=-O1 OPT_GLOBAL=-O2"
CXX_OPT = "-O3"
# A shared library's calls between its own files go through the PLT unless its symbols are
# hidden (only the C ABI is exported): the model is split into many files.
VISIBILITY = "-fvisibility=hidden -fvisibility-inlines-hidden -fno-semantic-interposition"
NAME_CHARS = 40  # of the config name in a build directory's name
LIB_NAME = "libdpu_vboard.so"

# Where the DRAM model sits: a base that is not 0 (so nothing works only by accident at
# address 0) and, by default, as much memory as PYNQ-Z2 gives its contiguous allocator.
DEFAULT_BASE = 0x1000_0000
DEFAULT_MEMORY = 256 << 20
ALLOC_ALIGN = 4096
# Simulated cycles per slice of the clock thread: long enough that the lock costs nothing
# (~30 ms of wall time), short enough that register reads between slices are prompt.
SLICE_CYCLES = 20_000

_CTRL = regmap.register("CTRL")
_START = _CTRL.field("start").mask
_SOFT_RESET = _CTRL.field("soft_reset").mask
_BUSY = regmap.register("STATUS").field("busy").mask
_STATUS = regmap.offset("STATUS")


class _Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while a child process ran; raised once the child is gone."""


class _Children:
    """Runs child processes (the build) so that an interruption leaves nothing behind. For
    its duration SIGTERM and SIGINT, where Python's default handling applies, only kill the
    child's process group and are raised as _Interrupted once it is gone, so that `with`
    blocks around remove their temporary files; then the process ends as the signal would
    have ended it (SIGTERM by default ends Python at once, leaving the child behind). A
    handler never raises: raised from inside Popen, it would leave a child running that
    nothing kills any more."""

    DEFAULTS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that arrived
        self.child: subprocess.Popen | None = None  # running now
        self.taken: list[int] = []  # the signals handled here

    def __enter__(self) -> _Children:
        if threading.current_thread() is threading.main_thread():
            for sig, default in self.DEFAULTS.items():
                if signal.getsignal(sig) is default:
                    signal.signal(sig, self._handler)
                    self.taken.append(sig)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        for sig in self.taken:
            signal.signal(sig, self.DEFAULTS[sig])
        if kind is _Interrupted:
            if self.signum == signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGTERM)  # its default action: the process ends
            raise KeyboardInterrupt from None

    def _handler(self, signum: int, frame) -> None:
        self.signum = signum
        if self.child is not None and self.child.returncode is None:
            self._kill(self.child)

    @staticmethod
    def _kill(child: subprocess.Popen) -> None:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # its own group: make's compilers too
        except ProcessLookupError:
            pass

    def run(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run(cmd, capture_output=True, text=True), the child killed on an
        interruption or any exception."""
        if self.signum is not None:
            raise _Interrupted
        pipe = subprocess.PIPE
        child = subprocess.Popen(
            cmd, stdout=pipe, stderr=pipe, text=True, start_new_session=True, **kwargs
        )
        self.child = child
        try:
            if self.signum is not None:  # it came while the child started
                raise _Interrupted
            out, err = child.communicate()
            if self.signum is not None:
                raise _Interrupted
        except BaseException:
            self._kill(child)
            child.communicate()
            raise
        finally:
            self.child = None
        return subprocess.CompletedProcess(cmd, child.returncode, out, err)


def build_dir(cfg: HwConfig, digest: str) -> Path:
    """The build directory of `cfg`: always one directory right inside sim_build/, whatever
    the config's name holds (characters outside [A-Za-z0-9._-], such as '/', become '_';
    the prefix keeps '.' and '..' from being names of their own)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", cfg.name)[:NAME_CHARS]
    return BUILD / f"vboard_{name}_{digest}"


def build(cfg: HwConfig) -> Path:
    """The virtual board's shared library for `cfg`, built on first use (a few minutes for
    16x16), or the library DPUKIT_VBOARD_LIB names."""
    given = os.environ.get(LIB_ENV)
    if given:
        if not Path(given).is_file():
            raise ExecutionError(f"{LIB_ENV}={given}: no such virtual board library")
        return Path(given)
    # imported here: an environment with a prebuilt library needs no Verilator
    from dpukit.hw.params import rtl_files, top_parameters
    from dpukit.sim.verilator_env import verilator_bin, verilator_env

    params = top_parameters(cfg)
    sources = rtl_files()
    digest = hashlib.sha256()
    for p in [*sources, VBOARD_CPP]:
        digest.update(p.name.encode() + p.read_bytes())
    digest.update(repr(sorted(params.items())).encode())
    digest.update(verilator_bin().resolve().as_posix().encode())
    digest.update(f"{MAKE_OPT} {CXX_OPT} {VISIBILITY}".encode())
    out_dir = build_dir(cfg, digest.hexdigest()[:12])
    lib = out_dir / LIB_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        if not sys.stderr.isatty():  # on a terminal the CLI shows its own status line
            print(
                f"building the RTL simulator for {cfg.name} (Verilator, a few minutes on first "
                f"use; cached in {out_dir.relative_to(BUILD.parent)})",
                file=sys.stderr,
                flush=True,
            )
        env = verilator_env()
        env["MAKEFLAGS"] += " " + MAKE_OPT
        # linked under another name and renamed when complete: an interrupted link must not
        # leave a truncated library that later runs would take for the cached one
        partial = out_dir / (LIB_NAME + ".partial")
        cmd = [
            str(verilator_bin()),
            "--cc",
            "--exe",  # "an executable" that -shared below links as a shared library
            "--build",
            "--build-jobs",
            "2",
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "--noassert",
            "-Wno-fatal",
            "-Wno-lint",
            "-Wno-style",
            "--top-module",
            "dpu_top",
            "--Mdir",
            str(out_dir / "obj"),
            "-o",
            str(partial),
            *(f"-G{k}={v}" for k, v in params.items()),
            "-CFLAGS",
            f"{CXX_OPT} -fPIC {VISIBILITY} -DDPU_AXI_DATA_BITS={cfg.axi_data_bits}",
            "-LDFLAGS",
            "-shared",
            *map(str, sources),
            str(VBOARD_CPP),
        ]
        with _Children() as children:
            res = children.run(cmd, env=env)
        if res.returncode != 0 or not partial.exists():
            log = (res.stdout + res.stderr)[-4000:]
            raise ExecutionError(f"building the virtual board for {cfg.name} failed:\n{log}")
        partial.replace(lib)
    return lib


_LIBS: dict[str, ctypes.CDLL] = {}
_LIBS_LOCK = threading.Lock()


def _library(cfg: HwConfig) -> ctypes.CDLL:
    path = build(cfg)
    with _LIBS_LOCK:
        lib = _LIBS.get(str(path))
        if lib is None:
            lib = ctypes.CDLL(str(path))  # a CDLL call releases the GIL while it runs
            vp, u64, u32, uint = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint
            for name, res, args in (
                ("vb_create", vp, [u64, u64, uint, uint, uint]),
                ("vb_destroy", None, [vp]),
                ("vb_free_memory", None, [vp]),
                ("vb_memory", vp, [vp]),
                ("vb_set_fault", None, [vp, u64, u64]),
                ("vb_reg_read", u32, [vp, u32]),
                ("vb_reg_write", None, [vp, u32, u32]),
                ("vb_run", u64, [vp, u64]),
                ("vb_irq", ctypes.c_int, [vp]),
                ("vb_cycles", u64, [vp]),
                ("vb_bus_bytes", ctypes.c_int, []),
            ):
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            _LIBS[str(path)] = lib
    if lib.vb_bus_bytes() != cfg.bus_bytes:
        raise ExecutionError(
            f"{path} was built for a {8 * lib.vb_bus_bytes()}-bit bus, config '{cfg.name}' "
            f"has {cfg.axi_data_bits} bits"
        )
    return lib


class VirtualBuffer(np.ndarray):
    """A uint8 view of the board's DRAM, shaped like a `pynq.allocate` buffer. The DRAM model
    is the memory itself, so flush and invalidate have nothing to do (a board with caches
    needs both; the driver calls them all the same)."""

    physical_address: int
    _board: VirtualBoard | None

    def __array_finalize__(self, obj) -> None:
        # a slice starts where its first byte is
        base = getattr(obj, "physical_address", None)
        if base is not None and isinstance(obj, np.ndarray):
            self.physical_address = base + (self.ctypes.data - obj.ctypes.data)
        else:
            self.physical_address = 0
        self._board = getattr(obj, "_board", None)

    @property
    def device_address(self) -> int:
        return self.physical_address

    def flush(self) -> None:
        pass

    def invalidate(self) -> None:
        pass

    def freebuffer(self) -> None:
        if self._board is not None:
            self._board._free(self.physical_address)


class _Mmio:
    """`pynq.MMIO`-shaped access to the DPU's registers (32-bit words at byte offsets)."""

    def __init__(self, board: VirtualBoard):
        self._board = weakref.ref(board)  # no cycle: an unclosed board is freed at once

    def _live(self) -> VirtualBoard:
        board = self._board()
        if board is None:
            raise ExecutionError("the virtual board of this MMIO is gone")
        return board

    def read(self, offset: int, length: int = 4) -> int:
        if length != 4 or offset % 4:
            raise ExecutionError(f"MMIO read of {length} bytes at {offset:#x}: 4-byte words only")
        return self._live()._register_read(offset)

    def write(self, offset: int, value: int) -> None:
        if offset % 4:
            raise ExecutionError(f"MMIO write at {offset:#x}: offsets are 4-byte aligned")
        self._live()._register_write(offset, int(value) & 0xFFFF_FFFF)


class VirtualBoard:
    """The DPU's RTL with DRAM, registers and its interrupt, for host/driver.py.

    `interrupts=False` gives a board whose driver must poll (the done interrupt is not
    wired). `latency`, `stall_pct` and `seed` shape the DRAM model (defaults: the config's
    latency, no stalls). `base` and `memory_bytes` place the DRAM in the physical address
    space."""

    def __init__(
        self,
        cfg: HwConfig,
        *,
        interrupts: bool = True,
        base: int = DEFAULT_BASE,
        memory_bytes: int = DEFAULT_MEMORY,
        latency: int | None = None,
        stall_pct: int = 0,
        seed: int = 1,
    ):
        if base % ALLOC_ALIGN or base < 0 or memory_bytes <= 0:
            raise ExecutionError(f"virtual board memory at {base:#x}, {memory_bytes} bytes")
        if base + memory_bytes > 1 << cfg.axi_addr_bits:
            raise ExecutionError(
                f"virtual board memory up to {base + memory_bytes:#x} is beyond the "
                f"{cfg.axi_addr_bits}-bit address space of config '{cfg.name}'"
            )
        self.cfg = cfg
        self.name = f"virtual board ({cfg.name}, RTL in Verilator)"
        self.has_interrupt = interrupts
        self.clock_hz = cfg.clock_mhz * 1e6
        self.address_bits = cfg.axi_addr_bits
        self.base, self.memory_bytes = base, memory_bytes
        self._lib = _library(cfg)
        latency = cfg.dram_latency_cycles if latency is None else latency
        handle = self._lib.vb_create(base, memory_bytes, latency, stall_pct, seed)
        if not handle:
            raise ExecutionError(f"{self.name}: cannot reserve {memory_bytes} bytes of DRAM")
        self._handle = handle
        self._memory_ptr = self._lib.vb_memory(handle)  # freed when no buffer can see it
        self._lock = threading.Lock()  # one call into the model at a time
        self._life_lock = threading.Lock()  # the model exists (cycles() reads it lock-free)
        self._memory = np.ctypeslib.as_array(
            ctypes.cast(self._memory_ptr, ctypes.POINTER(ctypes.c_uint8)),
            shape=(memory_bytes,),
        )
        self._allocated: dict[int, int] = {}  # physical address -> bytes, in use
        # The clock thread and its state, all changed under _lock: started by a start write
        # when none runs, ended by the thread itself once the core is idle.
        self._clock: threading.Thread | None = None
        self._clock_running = False
        self._clock_error: BaseException | None = None
        self._waiting = 0  # threads waiting for _lock: the clock thread lets them in
        self._done = threading.Event()  # the interrupt line rose since the last start
        self.mmio = _Mmio(self)

    # -- memory ------------------------------------------------------------------------
    def allocate(self, nbytes: int) -> VirtualBuffer:
        """`nbytes` of contiguous DRAM (first fit, 4 KiB aligned), zeroed."""
        nbytes = int(nbytes)
        if nbytes <= 0:
            raise ExecutionError(f"{self.name}: cannot allocate {nbytes} bytes")
        size = -(-nbytes // ALLOC_ALIGN) * ALLOC_ALIGN
        at = self.base
        for addr, used in sorted(self._allocated.items()):
            if addr - at >= size:
                break
            at = addr + used
        if at + size > self.base + self.memory_bytes:
            free = self.memory_bytes - sum(self._allocated.values())
            raise ExecutionError(
                f"{self.name}: a buffer of {nbytes} bytes does not fit in its DRAM of "
                f"{self.memory_bytes} bytes ({free} free)"
            )
        self._allocated[at] = size
        off = at - self.base
        self._memory[off : off + size] = 0
        buf = self._memory[off : off + nbytes].view(VirtualBuffer)
        buf.physical_address = at
        buf._board = self
        return buf

    def _free(self, address: int) -> None:
        self._allocated.pop(address, None)

    def memory(self, address: int, nbytes: int) -> np.ndarray:
        """The DRAM bytes at [address, address + nbytes) (a view; tests and the harness)."""
        off = address - self.base
        if off < 0 or off + nbytes > self.memory_bytes:
            raise ExecutionError(f"{self.name}: [{address:#x}, +{nbytes}) is not in its DRAM")
        view = self._memory[off : off + nbytes].view(VirtualBuffer)
        view.physical_address, view._board = address, self  # keeps the DRAM alive
        return view

    def set_fault(self, address: int, nbytes: int) -> None:
        """Make [address, address + nbytes) answer every AXI access with SLVERR (fault
        injection: an AXI error as a broken interconnect or DDR controller gives one)."""
        self._call("vb_set_fault", address, address + nbytes)

    # -- registers and the clock -------------------------------------------------------
    @contextlib.contextmanager
    def _model(self):
        """The model's handle, held alone (the clock thread steps aside between its slices
        for a caller waiting here: `_waiting` is a hint, exact enough under the GIL)."""
        self._waiting += 1
        with self._lock:
            self._waiting -= 1
            if not self._handle:
                raise ExecutionError(f"{self.name} is closed")
            yield self._handle

    def _call(self, name: str, *args):
        with self._model() as handle:
            return getattr(self._lib, name)(handle, *args)

    def _register_read(self, offset: int) -> int:
        return self._call("vb_reg_read", offset)

    def _register_write(self, offset: int, value: int) -> None:
        with self._model() as handle:
            self._lib.vb_reg_write(handle, offset, value)
            if offset == _CTRL.offset and value & _START and not self._clock_running:
                # under the lock: a clock thread that is ending has said so already
                self._clock_running = True
                self._done.clear()
                self._clock_error = None
                self._clock = threading.Thread(
                    target=self._run_clock, args=(handle,), name="vboard-clock", daemon=True
                )
                self._clock.start()

    def _run_clock(self, handle: int) -> None:
        """Run the clock in slices until the core is idle (done, stopped on an error, or
        soft-reset), raising the done event with the interrupt line."""
        lib = self._lib
        try:
            while True:
                with self._lock:
                    lib.vb_run(handle, SLICE_CYCLES)  # returns early when the line rises
                    irq = lib.vb_irq(handle)
                    busy = lib.vb_reg_read(handle, _STATUS) & _BUSY
                    if irq and self.has_interrupt:
                        self._done.set()
                    if not busy:
                        self._clock_running = False
                        return
                if self._waiting:
                    time.sleep(0.0001)  # a register access is waiting: let it in
        except BaseException as exc:  # reported to whoever waits
            with self._lock:
                self._clock_error = exc
                self._clock_running = False
            self._done.set()

    def cycles(self) -> int:
        """Clock cycles since the board came out of reset (read without waiting for the
        clock thread's slice; _life_lock keeps the model alive meanwhile)."""
        with self._life_lock:
            if not self._handle:
                raise ExecutionError(f"{self.name} is closed")
            return int(self._lib.vb_cycles(self._handle))

    def now(self) -> float:
        """Seconds on the board's clock: simulated time."""
        return self.cycles() / self.clock_hz

    def idle(self) -> bool:
        """The clock has stopped: the core is not running a program."""
        return not self._clock_running

    def wait_interrupt(self, timeout_s: float) -> bool:
        """Block until the done interrupt (True) or `timeout_s` simulated seconds (False)."""
        if not self.has_interrupt:
            raise ExecutionError(f"{self.name}: its interrupt is not wired; poll STATUS")
        deadline = self.now() + timeout_s
        while not self._done.wait(0.005):
            if self.now() >= deadline or self.idle():
                break
        if self._clock_error is not None:
            raise ExecutionError(f"{self.name}: the simulation failed: {self._clock_error!r}")
        return self._done.is_set()

    def close(self) -> None:
        """Stop the clock and release the model. Its DRAM lives on while buffers (which
        hold the board) may still be read; the garbage collector frees it."""
        if not getattr(self, "_handle", None):
            return
        with self._lock:
            if self._clock_running:  # hold the core in soft reset so the clock thread ends
                self._lib.vb_reg_write(self._handle, _CTRL.offset, _SOFT_RESET)
            clock = self._clock
        if clock is not None and clock is not threading.current_thread():  # (the GC may
            clock.join()  # run this in the clock thread, after its last slice)
        with self._lock, self._life_lock:
            handle, self._handle = self._handle, None
            if handle:
                self._lib.vb_destroy(handle)

    def __del__(self) -> None:
        try:
            self.close()
        finally:
            ptr, self._memory_ptr = getattr(self, "_memory_ptr", None), None
            if ptr:
                self._lib.vb_free_memory(ptr)

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
