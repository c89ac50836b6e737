"""The PYNQ backend (host/pynq_board.py) off the board.

pynq is never installed here (it pins numpy < 2 and needs a PYNQ board's FPGA), so:
- the messages a user meets off the board are checked against the real absence of pynq and
  real files in tmp_path;
- `board_error`, which maps what pynq raises to one line, is checked with the exception
  types and words of pynq 3.1.2's own sources (overlay.py, bitstream.py, mmio.py,
  pl_server/device.py, pl_server/embedded_device.py);
- the real call sequence runs in a child process against a stand-in `pynq` package written
  into tmp_path: Overlay, ip_dict, MMIO, allocate, Interrupt and Clocks shaped and behaving
  as pynq 3.1.2's (its errors, the 8 KiB minimum allocation, Interrupt's asyncio wait with
  its UIO reader bound to the event loop current when it is made), over the virtual board
  (sim/virtual_board.py: the DPU's RTL). Programs run through it end to end must give the
  golden model's bytes.
What only a board can check: HWH parsing, the bitstream download and clocks, /dev/mem and
XRT buffers, cache flushes, and the interrupt's route through the device tree's UIO.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dpukit.compiler.compile import compile_model
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.errors import BoardError, ExecutionError
from dpukit.host import pynq_board
from dpukit.host.pynq_board import (
    NO_DEVICE,
    NO_PYNQ,
    NOT_ROOT,
    PREFIX,
    OverlayWithoutDpu,
    PynqBoard,
    board_error,
    find_dpu,
    interrupt_path,
    open_pynq,
)
from dpukit.hw.overlay.boards import INTERRUPT_PIN, IP_INSTANCE, IP_VLNV

CFG = load_config("sim-small")  # the virtual board's fastest config
DPU_BASE, DPU_RANGE = 0x4000_0000, 0x1_0000

STAND_IN = r'''
"""A stand-in for pynq 3.1.2 over dpukit's virtual board (tests/test_pynq_board.py).

What matters to a driver is as pynq 3.1.2 has it: the ip_dict entries' keys (interrupts
listed only behind an AXI interrupt controller), MMIO's checks (root, 4-byte alignment,
Python ints only), allocate's 8 KiB minimum and PynqBuffer (device_address, flush,
invalidate, freebuffer, views), Interrupt's asyncio wait whose UIO reader is on the event
loop current when the Interrupt was made, Clocks.fclk0_mhz, and pynq's exceptions off a
board. The overlay's .hwh here is JSON ({"ip": {name: {type, phys_addr, addr_range,
interrupt}}}), not Vivado's XML.
"""
import asyncio
import json
import os
from pathlib import Path

import numpy as np

MIN_BO_BYTES = 8192  # pl_server/xrt_device.py: allocate_bo's minimum
SIM_BUDGET_S = 10.0  # simulated seconds one step of Interrupt.wait may run the DPU for
PL = {"ip_dict": {}, "interrupt_pins": {}}  # the overlay in the "PL", and the board
LIVE = {}  # physical address -> bytes reserved, of the buffers not freed


def _device():
    if os.environ.get("STAND_IN_NO_DEVICE"):
        raise RuntimeError("No Devices Found")  # pl_server/device.py, off a board


def _board():
    if "board" not in PL:
        from dpukit.compiler.hwconfig import config_from_dict, load_config
        from dpukit.sim.virtual_board import VirtualBoard

        name = os.environ["STAND_IN_CONFIG"]  # a config's name, or its fields as JSON
        if name.endswith(".json"):  # (Python 3.10 reads no .toml)
            PL["cfg"] = config_from_dict(json.loads(Path(name).read_text()), name)
        else:
            PL["cfg"] = load_config(name)
        PL["board"] = VirtualBoard(PL["cfg"], interrupts=True)
    return PL["board"]


def _views(design):
    """ip_dict and interrupt_pins as pynq 3.1.2's metadata views make them."""
    ip_dict, pins = {}, {}
    for name, ip in design["ip"].items():
        entry = {
            "type": ip["type"], "mem_id": "s_axi_control", "memtype": "REGISTER", "gpio": {},
            "interrupts": {}, "parameters": {}, "registers": {}, "driver": None,
            "device": None, "state": None, "bdtype": None, "phys_addr": ip["phys_addr"],
            "addr_range": ip["addr_range"], "fullpath": name,
        }
        if ip.get("interrupt"):
            path = f"{name}/{ip['interrupt']}"
            pins[path] = {"controller": "axi_intc_0", "index": len(pins), "fullpath": path}
            entry["interrupts"][ip["interrupt"]] = pins[path]
        ip_dict[name] = entry
    if pins:
        ip_dict["axi_intc_0"] = dict(
            entry, type="xilinx.com:ip:axi_intc:4.1", interrupts={}, fullpath="axi_intc_0",
            phys_addr=0x4180_0000, addr_range=0x1_0000,
        )
    ip_dict["processing_system7_0"] = {
        "type": "xilinx.com:ip:processing_system7:5.5", "gpio": {}, "interrupts": {},
        "parameters": {}, "driver": None, "device": None,
    }
    return ip_dict, pins


class Overlay:
    def __init__(self, bitfile_name, dtbo=None, download=True, ignore_version=False,
                 device=None, gen_cache=False):
        if not isinstance(bitfile_name, str):
            raise TypeError("Bitstream name has to be a string.")
        _device()
        if not os.path.exists(bitfile_name):
            raise IOError("Bitstream file {} does not exist.".format(bitfile_name))
        bit = Path(bitfile_name)
        if bit.suffix not in (".bit", ".xclbin", ".xsa"):
            raise RuntimeError("Unknown file format")
        if not bit.with_suffix(".hwh").exists():
            raise RuntimeError("Unable to find metadata for bitstream")
        self.bitfile_name = bitfile_name
        self.ip_dict, self.interrupt_pins = _views(json.loads(bit.with_suffix(".hwh").read_text()))
        self.clock_dict = {i: {"enable": int(i == 0), "divisor0": 10, "divisor1": 1}
                           for i in range(4)}
        PL.update(ip_dict=self.ip_dict, interrupt_pins=self.interrupt_pins)
        if download:
            self.download()

    def download(self, dtbo=None):
        if os.geteuid() != 0:
            raise PermissionError(13, "Permission denied", "/lib/firmware/overlay.bin")


class _ClocksMeta(type):
    @property
    def fclk0_mhz(cls):
        """The PL clock the DPU really runs at. Here that is the simulation's pace, some
        1e5 cycles per second of wall time: reported lower still, so that the driver's
        wall-clock deadlines (cycles / clock) leave the simulation ample time."""
        _device()
        return float(os.environ.get("STAND_IN_FCLK0_MHZ", "0.001"))


class Clocks(metaclass=_ClocksMeta):
    pass


class MMIO:
    def __init__(self, base_addr, length=4, device=None, **kwargs):
        _device()
        if base_addr < 0 or length < 0:
            raise ValueError("Base address or length cannot be negative.")
        if os.geteuid() != 0:
            raise EnvironmentError("Root permissions required.")
        if not any(ip.get("phys_addr") == base_addr for ip in PL["ip_dict"].values()):
            raise ValueError(f"stand-in: no IP of the overlay at {base_addr:#x}")
        self.base_addr, self.length = base_addr, length
        self._registers = _board().mmio

    def read(self, offset=0, length=4, word_order="little"):
        if length not in [1, 2, 4, 8]:
            raise ValueError("MMIO currently only supports 1, 2, 4 and 8-byte reads.")
        if offset < 0:
            raise ValueError("Offset cannot be negative.")
        if offset % 4:
            raise MemoryError("Unaligned read: offset must be multiple of 4.")
        if offset + length > self.length:
            raise IndexError(f"index {offset >> 2} is out of bounds")
        low = self._registers.read(offset)
        if length == 8:
            return (self._registers.read(offset + 4) << 32) + low
        return low & ((2 ** (8 * length)) - 1)

    def write(self, offset, data):
        if offset < 0:
            raise ValueError("Offset cannot be negative.")
        if offset % 4:
            raise MemoryError("Unaligned write: offset must be multiple of 4.")
        if type(data) is int:
            self._registers.write(offset, int(np.uint32(data)))
        else:
            raise ValueError("Data type must be int or bytes.")


class PynqBuffer(np.ndarray):
    def __new__(cls, *args, device=None, device_address=0, bo=0, coherent=False, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        # (pynq also keeps `device`: numpy 2 has an ndarray.device of its own)
        self.device_address, self.coherent, self.bo = device_address, coherent, bo
        self.offset, self.freed = 0, False
        return self

    def __array_finalize__(self, obj):
        if isinstance(obj, PynqBuffer) and obj.coherent is not None:
            self.coherent = obj.coherent
            offset = self.virtual_address - obj.virtual_address
            self.device_address = obj.device_address + offset
            self.offset = obj.offset + offset
            self.bo, self.freed = obj.bo, False
        else:
            self.device_address = None
            self.coherent = None

    def __del__(self):
        self.freebuffer()

    def freebuffer(self):
        if hasattr(self, "memory") and not self.freed:  # a view frees nothing
            self.freed = True
            LIVE.pop(self.bo.physical_address, None)
            self.bo.freebuffer()

    @property
    def physical_address(self):
        return self.device_address

    @property
    def virtual_address(self):
        return self.__array_interface__["data"][0]

    def flush(self):
        if not self.coherent:
            self.bo.flush()

    def invalidate(self):
        if not self.coherent:
            self.bo.invalidate()

    def sync_to_device(self):
        self.flush()

    def sync_from_device(self):
        self.invalidate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.freebuffer()
        return 0


def allocate(shape, dtype="u4", target=None, **kwargs):
    _device()
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    reserved = max(size, MIN_BO_BYTES)
    try:
        bo = _board().allocate(reserved)
    except Exception as e:  # pyxrt's failure, as xrt_device.allocate_bo reports it
        raise RuntimeError(f"BO allocation failed: {e}")
    high = int(os.environ.get("STAND_IN_ADDRESS_OFFSET", "0"))  # XRT's 64-bit addresses
    buf = PynqBuffer(shape, dtype, buffer=bo, bo=bo, device_address=bo.physical_address + high)
    buf.memory = "stand-in"
    LIVE[bo.physical_address] = reserved
    return buf


def _line_high():
    """The DPU's level-high interrupt line: irq = CTRL.irq_enable & IRQ_STATUS.done (the
    virtual board's wait reports any rise since the last start, even once lowered)."""
    from dpukit.host import regmap

    ctrl, status = regmap.register("CTRL"), regmap.register("IRQ_STATUS")
    regs = _board().mmio
    enabled = regs.read(ctrl.offset) & ctrl.field("irq_enable").mask
    return bool(enabled and regs.read(status.offset) & status.field("done").mask)


class Interrupt:
    def __init__(self, pinname):
        if pinname not in PL["interrupt_pins"]:
            raise ValueError("No Pin of name {} found".format(pinname))
        if os.environ.get("STAND_IN_NO_UIO"):  # no generic-uio node in the device tree
            raise ValueError("Could not find UIO device for interrupt pin for IRQ number 61")
        # uio.py: UioController adds its reader to the loop current when it is made
        self._reader_loop = asyncio.get_event_loop()
        self.event = asyncio.Event()
        self.waiting = False

    async def wait(self):
        if asyncio.get_running_loop() is not self._reader_loop:
            raise RuntimeError("stand-in: the UIO reader is on another event loop; on a "
                               "board this wait would never wake")
        if not self.waiting:
            self.event.clear()
            self.waiting = True
        while not self.event.is_set():
            if _board().wait_interrupt(SIM_BUDGET_S) and _line_high():  # the DPU ran
                self.event.set()
            else:  # nothing running: only wait_for's timeout ends this wait
                await asyncio.sleep(0.001)
        self.waiting = False
'''


def _overlay(folder: Path, *, ip: dict | None = None, hwh: bool = True) -> Path:
    """An overlay .bit, with its stand-in .hwh (JSON) listing `ip` unless `hwh` is False."""
    folder.mkdir(parents=True, exist_ok=True)
    bit = folder / "dpukit_test.bit"
    bit.write_bytes(b"\x00\x09\x0f\xf0")
    if ip is None:
        ip = {IP_INSTANCE: _dpu()}
    if hwh:
        bit.with_suffix(".hwh").write_text(json.dumps({"ip": ip}))
    return bit


def _dpu(vlnv: str = IP_VLNV, interrupt: str | None = INTERRUPT_PIN) -> dict:
    return {"type": vlnv, "phys_addr": DPU_BASE, "addr_range": DPU_RANGE, "interrupt": interrupt}


def _child(tmp_path: Path, code: str, **env: str) -> dict:
    """Run `code` in a child whose `pynq` is the stand-in; the JSON it prints last."""
    (tmp_path / "pynq").mkdir(exist_ok=True)
    (tmp_path / "pynq" / "__init__.py").write_text(STAND_IN)
    child_env = dict(os.environ, PYTHONPATH=str(tmp_path), STAND_IN_CONFIG=CFG.name, **env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(PREFIX), msg
    return msg


# --- off the board: the real absence of pynq, real files --------------------------------------


def test_without_pynq_the_backend_says_where_it_runs(tmp_path: Path) -> None:
    if importlib.util.find_spec("pynq") is not None:
        pytest.skip("pynq is installed here; this checks its absence")
    with pytest.raises(BoardError) as err:
        PynqBoard(_overlay(tmp_path))
    assert _one_line(err) == PREFIX + NO_PYNQ
    assert "pip install dpukit[board]" in NO_PYNQ and "--backend rtl" in NO_PYNQ


def test_a_missing_bit_is_named(tmp_path: Path) -> None:
    bit = tmp_path / "nowhere" / "dpukit_pynq-z2.bit"
    with pytest.raises(BoardError) as err:
        PynqBoard(bit, cfg=CFG)
    assert f"no overlay {bit}:" in _one_line(err)


def test_a_bit_without_its_hwh_names_the_hwh_it_needs(tmp_path: Path) -> None:
    bit = _overlay(tmp_path, hwh=False)
    (tmp_path / "other.hwh").write_text("{}")  # beside it, but not its basename
    with pytest.raises(BoardError) as err:
        PynqBoard(bit)
    msg = _one_line(err)
    assert "has no .hwh beside it" in msg and str(bit.with_suffix(".hwh")) in msg
    assert "same basename" in msg


@pytest.mark.parametrize("name", ["dpukit_test.hwh", "dpukit_test.xclbin", "dpukit_test"])
def test_only_a_bit_file_opens(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("{}")
    with pytest.raises(BoardError) as err:
        PynqBoard(path)
    assert f"{path} is not a .bit file" in _one_line(err)


def test_a_folder_named_like_a_bit_is_no_overlay(tmp_path: Path) -> None:
    bit = tmp_path / "dpukit_test.bit"
    bit.mkdir()
    bit.with_suffix(".hwh").write_text("{}")
    with pytest.raises(BoardError) as err:
        PynqBoard(bit)
    assert f"no overlay {bit}:" in _one_line(err)


@pytest.fixture
def stand_in_pynq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in pynq importable in this process (no virtual board is made by importing
    it), and gone from sys.modules afterwards."""
    (tmp_path / "pkg" / "pynq").mkdir(parents=True)
    (tmp_path / "pkg" / "pynq" / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    yield
    sys.modules.pop("pynq", None)


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root: see the injected-uid test")
def test_not_root_is_said(tmp_path: Path, stand_in_pynq) -> None:
    with pytest.raises(BoardError) as err:
        PynqBoard(_overlay(tmp_path / "overlay"))
    assert _one_line(err) == PREFIX + NOT_ROOT


def test_the_root_check_with_an_injected_uid(tmp_path: Path, stand_in_pynq) -> None:
    bit = _overlay(tmp_path / "overlay")
    with pytest.raises(BoardError) as err:
        open_pynq(bit, euid=1000)
    assert _one_line(err) == PREFIX + NOT_ROOT
    assert "sudo" in NOT_ROOT
    assert open_pynq(bit, euid=0).__name__ == "pynq"


# --- what pynq raises, mapped to one line -----------------------------------------------------

BIT = Path("/home/xilinx/dpukit_pynq-z2.bit")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ModuleNotFoundError("No module named 'pynq'", name="pynq"), NO_PYNQ),
        (RuntimeError("No Devices Found"), NO_DEVICE),
        (OSError("Root permissions required."), NOT_ROOT),  # mmio's EnvironmentError
        (PermissionError(13, "Permission denied", "/lib/firmware/x.bin"), NOT_ROOT),
        (
            OSError(f"Bitstream file {BIT} does not exist."),  # bitstream.py's IOError
            f"no overlay {BIT}:",
        ),
        (
            RuntimeError("Unable to find metadata for bitstream"),  # pl_server, no .hwh
            f"the overlay {BIT} has no .hwh beside it: pynq reads the DPU's address and "
            f"interrupt from {BIT.with_suffix('.hwh')}",
        ),
        (RuntimeError("Unknown file format"), f"{BIT} is not a .bit file"),
        (
            ModuleNotFoundError("No module named 'pynqmetadata'", name="pynqmetadata"),
            "pynq is installed but does not import (ModuleNotFoundError: No module named "
            "'pynqmetadata')",
        ),
        (
            ImportError("numpy.core.multiarray failed to import"),
            "pynq is installed but does not import (ImportError: numpy.core.multiarray",
        ),
        (
            ValueError("Cannot find\nsomething"),
            f"pynq could not open the overlay {BIT} (ValueError: Cannot find something)",
        ),
    ],
)
def test_what_pynq_raises_is_one_line(raised: BaseException, expected: str) -> None:
    err = board_error(raised, BIT)
    assert isinstance(err, BoardError) and isinstance(err, ExecutionError)
    msg = str(err)
    assert "\n" not in msg and msg.startswith(PREFIX + expected), msg


def test_a_board_error_passes_through_unchanged() -> None:
    err = BoardError("pynq backend: already said")
    assert board_error(err, BIT) is err


def _ip_dict(**ips: str) -> dict:
    """An ip_dict with pynq 3.1.2's keys: `name=type` entries, addressable, and the PS."""
    entries = {
        name: {
            "type": vlnv,
            "phys_addr": DPU_BASE + i * DPU_RANGE,
            "addr_range": DPU_RANGE,
            "interrupts": {},
            "fullpath": name,
        }
        for i, (name, vlnv) in enumerate(ips.items())
    }
    entries["processing_system7_0"] = {"type": "xilinx.com:ip:processing_system7:5.5"}
    return entries


def test_an_overlay_without_the_dpu_lists_what_it_has() -> None:
    ip_dict = _ip_dict(axi_gpio_0="xilinx.com:ip:axi_gpio:2.0", dpu="dpukit.org:dpukit:dpu:0.9")
    with pytest.raises(OverlayWithoutDpu) as raised:
        find_dpu(ip_dict)
    msg = str(board_error(raised.value, BIT))
    assert msg == (
        f"{PREFIX}the overlay {BIT.name} has no dpukit DPU (IP type {IP_VLNV}); its ip_dict "
        "has axi_gpio_0 (xilinx.com:ip:axi_gpio:2.0), dpu (dpukit.org:dpukit:dpu:0.9), "
        "processing_system7_0 (xilinx.com:ip:processing_system7:5.5): load an overlay built "
        "by `make overlay`"
    )


def test_an_overlay_with_two_dpus_is_refused() -> None:
    with pytest.raises(OverlayWithoutDpu) as raised:
        find_dpu(_ip_dict(dpu_b=IP_VLNV, dpu_a=IP_VLNV))
    assert "has several DPUs (dpu_a, dpu_b), and the driver drives one" in str(
        board_error(raised.value, BIT)
    )


def test_the_dpu_is_found_by_its_type_whatever_its_cell_is_called() -> None:
    ip_dict = _ip_dict(axi_intc_0="xilinx.com:ip:axi_intc:4.1", **{"hier/dpu_9": IP_VLNV})
    name, ip = find_dpu(ip_dict)
    assert name == "hier/dpu_9" and ip["phys_addr"] == DPU_BASE + DPU_RANGE


def test_the_interrupt_is_used_only_where_pynq_lists_it() -> None:
    name, ip = find_dpu(_ip_dict(**{IP_INSTANCE: IP_VLNV}))
    path = f"{IP_INSTANCE}/{INTERRUPT_PIN}"
    listed = {path: {"controller": "axi_intc_0", "index": 0, "fullpath": path}}
    ip["interrupts"][INTERRUPT_PIN] = listed[path]
    assert interrupt_path(name, ip, listed) == path
    # a line straight to the PS: pynq 3.1 lists no pin for it, so the driver polls
    ip["interrupts"].clear()
    assert interrupt_path(name, ip, {}) is None


# --- the real call sequence, on the stand-in pynq over the virtual board ----------------------

OPEN = """
import json
from dpukit.compiler.hwconfig import load_config
from dpukit.errors import BoardError
from dpukit.host.pynq_board import PynqBoard
try:
    PynqBoard({bit!r}, cfg=load_config("sim-small"))
    print(json.dumps({{"error": None}}))
except BoardError as exc:
    print(json.dumps({{"error": str(exc)}}))
"""


def test_off_a_pynq_board_pynq_finds_no_device(tmp_path: Path) -> None:
    bit = _overlay(tmp_path / "overlay")
    doc = _child(tmp_path, OPEN.format(bit=str(bit)), STAND_IN_NO_DEVICE="1")
    assert doc["error"] == PREFIX + NO_DEVICE


def test_an_overlay_without_the_dpu_through_pynq(tmp_path: Path) -> None:
    gpio = {"type": "xilinx.com:ip:axi_gpio:2.0", "phys_addr": 0x4120_0000, "addr_range": 4096}
    bit = _overlay(tmp_path / "overlay", ip={"axi_gpio_0": gpio})
    doc = _child(tmp_path, OPEN.format(bit=str(bit)))
    assert doc["error"].startswith(f"{PREFIX}the overlay dpukit_test.bit has no dpukit DPU")
    assert "axi_gpio_0 (xilinx.com:ip:axi_gpio:2.0)" in doc["error"]


BOARD = """
import asyncio, json
import numpy as np
from dpukit.compiler import isa
from dpukit.compiler.hwconfig import load_config
from dpukit.errors import ExecutionError
from dpukit.host import regmap
from dpukit.host.pynq_board import PynqBoard
import pynq

cfg = load_config("sim-small")
board = PynqBoard({bit!r}, cfg=cfg)
mmio = board.mmio
doc = {{"name": board.name, "has_interrupt": board.has_interrupt, "note": board.interrupt_note,
       "clock_hz": board.clock_hz, "address_bits": board.address_bits}}
doc["fingerprint"] = (mmio.read(regmap.offset("CONFIG_FINGERPRINT_HI")) << 32
                      | mmio.read(regmap.offset("CONFIG_FINGERPRINT_LO")))

small = board.allocate(100)
doc["small"] = [len(small), str(small.dtype), small.physical_address,
                pynq.LIVE[small._owner.bo.physical_address]]
whole = board.allocate(20000)
window = whole[4096:]  # a slice: the physical address of its own first byte
doc["slice"] = [window.physical_address - whole.physical_address, len(window)]

if board.has_interrupt:
    # nothing started: the wait times out, and the next one still sees its interrupt
    doc["idle_wait"] = board.wait_interrupt(0.05)
    end = isa.to_bytes([isa.make(isa.Opcode.END)])
    small[: len(end)] = np.frombuffer(end, np.uint8)
    small.flush()
    for name, value in (("INSTR_BASE_LO", small.physical_address), ("INSTR_BASE_HI", 0),
                        ("INSTR_COUNT", 1), ("DATA_BASE_LO", small.physical_address),
                        ("DATA_BASE_HI", 0), ("DATA_LIMIT", 4096)):
        mmio.write(regmap.offset(name), np.uint32(value))  # numpy ints, as pynq refuses them
    ctrl = regmap.register("CTRL")
    mmio.write(ctrl.offset, ctrl.field("start").mask | ctrl.field("irq_enable").mask)

    async def notebook_cell():  # Jupyter's loop runs while a cell blocks in the driver
        return board.wait_interrupt(5.0)

    doc["started_wait"] = asyncio.run(notebook_cell())
    doc["status"] = mmio.read(regmap.offset("STATUS"))

for nbytes in (300 << 20, 1 << 33):
    try:
        board.allocate(nbytes)
    except ExecutionError as exc:
        doc.setdefault("too_large", []).append(str(exc))
doc["live_before_close"] = len(pynq.LIVE)
board.close()
doc["live_after_close"] = len(pynq.LIVE)
print(json.dumps(doc))
"""


@pytest.mark.parametrize("interrupt", [INTERRUPT_PIN, None], ids=["interrupt", "no-interrupt"])
def test_the_board_platform_on_the_stand_in(tmp_path: Path, interrupt: str | None) -> None:
    bit = _overlay(tmp_path / "overlay", ip={IP_INSTANCE: _dpu(interrupt=interrupt)})
    doc = _child(tmp_path, BOARD.format(bit=str(bit)))
    assert doc["name"] == f"PYNQ board (dpukit_test.bit: DPU {IP_INSTANCE} at {DPU_BASE:#x})"
    assert doc["fingerprint"] == int(CFG.fingerprint, 16)
    assert doc["clock_hz"] == 1000.0  # the stand-in's fclk0: 0.001 MHz
    assert doc["address_bits"] == CFG.axi_addr_bits
    length, dtype, address, reserved = doc["small"]
    assert (length, dtype, reserved) == (100, "uint8", pynq_board.MIN_ALLOC_BYTES)
    assert 0 < address < 1 << 32
    assert doc["slice"] == [4096, 20000 - 4096]
    assert doc["has_interrupt"] is (interrupt is not None)
    if interrupt is None:
        assert doc["note"].startswith(f"polling STATUS: the overlay routes no {IP_INSTANCE}/")
    else:
        assert doc["note"] == f"interrupt {IP_INSTANCE}/{interrupt} (pynq.Interrupt)"
        assert doc["idle_wait"] is False
        assert doc["started_wait"] is True
        status = doc["status"]
        assert status & 2 and not status & 1  # done, not busy
    big, huge = doc["too_large"]
    assert big.startswith(f"{doc['name']}: a buffer of {300 << 20} bytes does not fit: ")
    assert "contiguous memory" in big and "BO allocation failed" in big
    assert huge.endswith(f"cannot allocate a buffer of {1 << 33} bytes; the DPU addresses "
                         f"{1 << 32} bytes (32 address bits)")  # fmt: skip
    assert doc["live_before_close"] == 2 and doc["live_after_close"] == 0


def test_an_interrupt_pynq_cannot_open_leaves_the_driver_polling(tmp_path: Path) -> None:
    bit = _overlay(tmp_path / "overlay")
    code = """
    import json
    from dpukit.compiler.hwconfig import load_config
    from dpukit.host.pynq_board import PynqBoard
    board = PynqBoard({bit!r}, cfg=load_config("sim-small"))
    print(json.dumps({{"has": board.has_interrupt, "note": board.interrupt_note}}))
    """
    doc = _child(tmp_path, code.format(bit=str(bit)), STAND_IN_NO_UIO="1")
    assert doc == {
        "has": False,
        "note": f"polling STATUS: pynq cannot open the interrupt {IP_INSTANCE}/{INTERRUPT_PIN} "
        "(ValueError: Could not find UIO device for interrupt pin for IRQ number 61)",
    }


def test_a_buffer_beyond_the_dpus_address_bits_is_refused(tmp_path: Path) -> None:
    bit = _overlay(tmp_path / "overlay")
    code = """
    import json
    import pynq
    from dpukit.compiler.hwconfig import load_config
    from dpukit.errors import ExecutionError
    from dpukit.host.driver import DpuDriver
    from dpukit.host.pynq_board import PynqBoard
    cfg = load_config("sim-small")
    driver = DpuDriver(PynqBoard({bit!r}, cfg=cfg), cfg)
    try:
        driver.window(100)
        doc = {{"error": None}}
    except ExecutionError as exc:
        doc = {{"error": str(exc), "live": len(pynq.LIVE)}}
    print(json.dumps(doc))
    """
    doc = _child(tmp_path, code.format(bit=str(bit)), STAND_IN_ADDRESS_OFFSET=str(1 << 32))
    assert "the data window (100 bytes) got address 0x1" in doc["error"]
    assert "beyond the DPU's 32-bit bus (which ends at 0x100000000)" in doc["error"]
    assert doc["live"] == 0  # freed again


RUN = """
import json
import numpy as np
from dpukit.compiler.hwconfig import load_config
from dpukit.host.board_backend import BoardDPU
from dpukit.host.pynq_board import PynqBoard

cfg = load_config("sim-small")
stream = open({stream!r}, "rb").read()
windows = np.load({windows!r})
dpu = BoardDPU(PynqBoard({bit!r}, cfg=cfg), cfg)
doc = {{"note": dpu.board.interrupt_note, "mac_cycles": []}}
for dram in windows:  # one after the other, through the same stream buffer and window
    doc["mac_cycles"].append(dpu.run(stream, dram).mac_cycles)
dpu.close()
np.save({out!r}, windows)
print(json.dumps(doc))
"""


@pytest.mark.parametrize("interrupt", [INTERRUPT_PIN, None], ids=["interrupt", "polling"])
def test_the_digits_cnn_runs_through_the_pynq_board_as_on_golden(
    tmp_path: Path, digits_qdq: Path, interrupt: str | None
) -> None:
    """The digits CNN's DPU part, through the backend's driver on the PYNQ board's
    platform (the stand-in over the RTL), leaves the golden model's bytes in the whole data
    window, twice in a row."""
    program = compile_model(digits_qdq, CFG.name)
    (sg,) = [sg for sg in program.subgraphs if sg.device == "DPU"]
    rng = np.random.default_rng(10)
    windows = rng.integers(0, 256, (2, program.dram_size), np.uint8)
    windows[:, program.const_base :] = np.frombuffer(program.const, np.uint8)
    (tmp_path / "stream.bin").write_bytes(sg.payload)
    np.save(tmp_path / "windows.npy", windows)
    bit = _overlay(tmp_path / "overlay", ip={IP_INSTANCE: _dpu(interrupt=interrupt)})
    code = RUN.format(
        stream=str(tmp_path / "stream.bin"),
        windows=str(tmp_path / "windows.npy"),
        bit=str(bit),
        out=str(tmp_path / "out.npy"),
    )
    doc = _child(tmp_path, code)
    assert doc["note"].startswith("interrupt" if interrupt else "polling")
    got = np.load(tmp_path / "out.npy")
    golden = GoldenDPU(CFG)
    for i, dram in enumerate(windows):
        want = golden.run(sg.payload, dram)  # in place
        np.testing.assert_array_equal(got[i], dram)
        assert doc["mac_cycles"][i] == want.mac_cycles > 0
