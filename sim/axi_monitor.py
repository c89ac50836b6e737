"""AXI4 channel monitors shared by the DMA testbenches: the address channel (AR for LOAD, AW
for STORE) with a burst-legality check, and the rule that a channel holds still while it
waits (valid and payload unchanged from valid until the handshake)."""

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


class HoldCheck:
    """Checks `m_axi_<channel>valid` stays high, and the named payload signals unchanged,
    from the cycle valid rises until the cycle of the handshake."""

    def __init__(self, dut: SimHandleBase, channel: str, payload: tuple[str, ...]):
        self.channel = channel
        self.valid = getattr(dut, f"m_axi_{channel}valid")
        self.ready = getattr(dut, f"m_axi_{channel}ready")
        self.payload = [getattr(dut, f"m_axi_{channel}{p}") for p in payload]
        self.waiting: tuple[int, ...] | None = None  # payload presented and not yet taken

    def sample(self) -> bool:
        """Call once per cycle in ReadOnly; returns whether a handshake happens."""
        valid = bool(int(self.valid.value))
        now = tuple(int(s.value) for s in self.payload) if valid else None
        assert self.waiting is None or now == self.waiting, (
            f"{self.channel} channel changed while waiting: {self.waiting} -> {now}"
        )
        fire = valid and bool(int(self.ready.value))
        self.waiting = now if valid and not fire else None
        return fire

    async def run(self, clk: SimHandleBase) -> None:
        while True:
            await RisingEdge(clk)
            await ReadOnly()
            self.sample()


class BurstMonitor:
    """Records the handshakes of `m_axi_<channel>` ("ar" or "aw") and checks each is a legal
    full-width, bus-aligned INCR burst of at most `max_burst` beats inside one 4 KiB page,
    and that a request holds still until it is taken."""

    FIELDS = ("addr", "len", "size", "burst")

    def __init__(self, dut: SimHandleBase, channel: str, max_burst: int):
        self.dut, self.channel, self.max_burst = dut, channel, max_burst
        data = dut.m_axi_rdata if channel == "ar" else dut.m_axi_wdata
        self.beat_bytes = len(data.value) // 8
        self.bursts: list[Burst] = []
        self.hold = HoldCheck(dut, channel, self.FIELDS)

    async def run(self) -> None:
        sig = {f: getattr(self.dut, f"m_axi_{self.channel}{f}") for f in self.FIELDS}
        while True:
            await RisingEdge(self.dut.clk_i)
            await ReadOnly()
            if self.hold.sample():
                b = Burst(*(int(sig[f].value) for f in self.FIELDS))
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


class LatencyProbe:
    """Measures a memory's latency on `m_axi_*`, handshake to handshake, in cycles: from
    each AR to its burst's first R beat ("read"), or from each burst's last W beat to its B
    response ("write"). Bursts in order (one ID). A burst queued behind another's beats
    waits longer: the memory's own latency is the smallest value."""

    def __init__(self, dut: SimHandleBase, direction: str):
        assert direction in ("read", "write")
        self.dut, self.direction = dut, direction
        self.latencies: list[int] = []

    def _fire(self, channel: str) -> bool:
        valid = getattr(self.dut, f"m_axi_{channel}valid")
        ready = getattr(self.dut, f"m_axi_{channel}ready")
        return bool(int(valid.value)) and bool(int(ready.value))

    async def run(self) -> None:
        start, end = ("ar", "r") if self.direction == "read" else ("w", "b")
        pending: list[int] = []  # handshake cycles of requests not yet answered
        first = True  # the next R beat is its burst's first
        cycle = 0
        while True:
            await RisingEdge(self.dut.clk_i)
            await ReadOnly()
            cycle += 1
            if self._fire(end):
                if self.direction == "write" or first:
                    self.latencies.append(cycle - pending.pop(0))
                if self.direction == "read":
                    first = bool(int(self.dut.m_axi_rlast.value))
            if self._fire(start) and (start == "ar" or int(self.dut.m_axi_wlast.value)):
                pending.append(cycle)
