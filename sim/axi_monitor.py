"""An AXI4 address-channel monitor shared by the DMA testbenches (AR for LOAD, AW for STORE)."""

from __future__ import annotations

from dataclasses import dataclass

from cocotb.handle import SimHandleBase
from cocotb.triggers import ReadOnly, RisingEdge


@dataclass(frozen=True)
class Burst:
    addr: int
    len: int
    size: int
    burst: int


class BurstMonitor:
    """Records the handshakes of `m_axi_<channel>` ("ar" or "aw") and checks each is a legal
    full-width, bus-aligned INCR burst of at most `max_burst` beats inside one 4 KiB page."""

    def __init__(self, dut: SimHandleBase, channel: str, max_burst: int):
        self.dut, self.channel, self.max_burst = dut, channel, max_burst
        data = dut.m_axi_rdata if channel == "ar" else dut.m_axi_wdata
        self.beat_bytes = len(data.value) // 8
        self.bursts: list[Burst] = []

    async def run(self) -> None:
        sig = {
            f: getattr(self.dut, f"m_axi_{self.channel}{f}")
            for f in ("valid", "ready", "addr", "len", "size", "burst")
        }
        while True:
            await RisingEdge(self.dut.clk_i)
            await ReadOnly()
            if int(sig["valid"].value) and int(sig["ready"].value):
                b = Burst(*(int(sig[f].value) for f in ("addr", "len", "size", "burst")))
                self.check(b)
                self.bursts.append(b)

    def check(self, b: Burst) -> None:
        beats, nbytes = b.len + 1, self.beat_bytes
        assert 1 << b.size == nbytes, f"{b}: not full bus width"
        assert b.burst == 1, f"{b}: not INCR"
        assert b.addr % nbytes == 0, f"{b}: unaligned"
        assert beats <= self.max_burst, f"{b}: more than {self.max_burst} beats"
        last = b.addr + beats * nbytes - 1
        assert b.addr >> 12 == last >> 12, f"{b}: crosses a 4 KiB boundary"
