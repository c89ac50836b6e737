"""A fixed-latency AXI4 memory for the DMA cycle-count tests.

cocotbext-axi's AxiRam has latencies of its own (a few cycles, and not the same for every
burst), so the cycle model's `dram_latency` cannot be set on it. This slave is always ready
on AR, AW and W, and answers with one fixed latency L, counted between handshakes:
  read   a burst's first beat handshakes L cycles after its AR handshake (later only while
         earlier bursts' beats are still going out, or while rready is low); its beats and
         the following bursts' beats back to back;
  write  a burst's B response handshakes L cycles after the burst's last W beat.
Responses are OKAY; IDs are 0. Signals `<prefix>_<channel><signal>` as verilog-axi names them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from cocotb.handle import SimHandleBase
from cocotb.triggers import ReadOnly, RisingEdge


@dataclass
class _Beat:
    due: int  # first cycle (counted from the first RisingEdge) the beat may be presented
    data: int
    last: bool


class LatencyRam:
    """AXI4 slave on `<prefix>_*` of `dut`, `size` bytes, fixed first-beat latency."""

    def __init__(self, dut: SimHandleBase, latency: int, size: int, prefix: str = "m_axi"):
        assert latency >= 1
        self.dut, self.latency, self.prefix = dut, latency, prefix
        self.mem = bytearray(size)
        self.beat_bytes = len(self._sig("rdata").value) // 8
        self._r: deque[_Beat] = deque()
        self._aw: deque[int] = deque()  # addresses of accepted write bursts, beat by beat
        self._b: deque[int] = deque()  # due cycles of B responses
        for name in ("arready", "awready", "wready"):
            self._sig(name).value = 1
        for name in ("rvalid", "bvalid", "rlast", "rresp", "bresp", "rid", "bid", "rdata"):
            self._sig(name).value = 0

    def _sig(self, name: str) -> SimHandleBase:
        return getattr(self.dut, f"{self.prefix}_{name}")

    def write(self, addr: int, data: bytes) -> None:
        self.mem[addr : addr + len(data)] = data

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.mem[addr : addr + length])

    def _accept_ar(self, cycle: int) -> None:
        """An AR handshake at the edge ending `cycle`: queue its beats."""
        addr = int(self._sig("araddr").value)
        beats = int(self._sig("arlen").value) + 1
        nbytes = 1 << int(self._sig("arsize").value)
        assert nbytes == self.beat_bytes, "the test memory supports full-width bursts only"
        first = cycle + self.latency  # the first beat handshakes at the edge ending this cycle
        if self._r:
            first = max(first, self._r[-1].due + 1)
        for i in range(beats):
            a = addr + i * nbytes
            data = int.from_bytes(self.mem[a : a + nbytes], "little")
            self._r.append(_Beat(first + i, data, i == beats - 1))

    def _accept_w(self, cycle: int) -> None:
        """A W handshake at the edge ending `cycle`: store the strobed bytes."""
        addr = self._aw[0]
        data = int(self._sig("wdata").value).to_bytes(self.beat_bytes, "little")
        strb = int(self._sig("wstrb").value)
        for i in range(self.beat_bytes):
            if strb >> i & 1:
                self.mem[addr + i] = data[i]
        if int(self._sig("wlast").value):
            self._aw.popleft()
            self._b.append(cycle + self.latency)
        else:
            self._aw[0] = addr + self.beat_bytes

    async def run(self) -> None:
        clk = self.dut.clk_i
        rvalid, bvalid = self._sig("rvalid"), self._sig("bvalid")
        cycle = 0
        while True:
            await RisingEdge(clk)
            cycle += 1
            r = self._r[0] if self._r and self._r[0].due <= cycle else None
            rvalid.value = int(r is not None)
            if r is not None:
                self._sig("rdata").value = r.data
                self._sig("rlast").value = int(r.last)
            b = bool(self._b) and self._b[0] <= cycle
            bvalid.value = int(b)
            await ReadOnly()
            # handshakes at the edge ending this cycle (AR, AW and W are always ready); AW
            # before W, so a W beat presented with its burst's AW finds the address
            if int(self._sig("arvalid").value):
                self._accept_ar(cycle)
            if int(self._sig("awvalid").value):
                addr = int(self._sig("awaddr").value)
                assert 1 << int(self._sig("awsize").value) == self.beat_bytes
                self._aw.append(addr)
            if int(self._sig("wvalid").value):
                self._accept_w(cycle)
            if r is not None and int(self._sig("rready").value):
                self._r.popleft()
            if b and int(self._sig("bready").value):
                self._b.popleft()
