"""Geometry of LOAD and STORE, in one place: which entries and which DRAM bytes they touch.

The cycle model, the checking pass and the golden model all read DMA instructions
through these functions (the meaning itself is written in isa.SEMANTICS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpukit.compiler.isa import Opcode


@dataclass(frozen=True)
class Dma:
    """A LOAD's or STORE's fields as plain ints. A STORE has no padding."""

    is_load: bool
    buffer: int  # Buffer for a LOAD; -1 for a STORE (it reads OUT)
    sram: int
    offset: int
    planes: int
    z_stride: int
    ys: int
    xs: int
    eb: int
    y_stride: int
    x_stride: int
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    pad_value: int

    @classmethod
    def of(cls, col: dict[str, np.ndarray], i: int) -> Dma:
        f = {k: int(v[i]) for k, v in col.items()}
        load = f["op"] == Opcode.LOAD
        return cls(
            is_load=load,
            buffer=f["buffer"] if load else -1,
            sram=f["sram_base"],
            offset=f["dram_offset"],
            planes=f["z_size"],
            z_stride=f["z_stride"],
            ys=f["y_size"],
            xs=f["x_size"],
            eb=f["elem_bytes"],
            y_stride=f["y_stride"],
            x_stride=f["x_stride"],
            pads=(f["pad_top"], f["pad_left"], f["pad_bottom"], f["pad_right"])
            if load
            else (0,) * 4,
            pad_value=f["pad_value"] if load else 0,
        )

    @property
    def rows(self) -> int:
        return self.pads[0] + self.ys + self.pads[2]

    @property
    def cols(self) -> int:
        return self.pads[1] + self.xs + self.pads[3]

    @property
    def entries(self) -> int:
        """On-chip entries written (LOAD, padding included) or read (STORE)."""
        return self.planes * self.rows * self.cols

    @property
    def has_data(self) -> bool:
        return bool(self.planes and self.ys and self.xs and self.eb)

    @property
    def data_bytes(self) -> int:
        return self.planes * self.ys * self.xs * self.eb if self.has_data else 0

    def dram_span(self) -> tuple[int, int] | None:
        """First and last DRAM byte touched, or None."""
        if not self.has_data:
            return None
        last = (
            self.offset
            + (self.planes - 1) * self.z_stride
            + (self.ys - 1) * self.y_stride
            + (self.xs - 1) * self.x_stride
            + self.eb
            - 1
        )
        return self.offset, last

    def runs(self) -> tuple[np.ndarray, int]:
        """Start addresses and length of the contiguous DRAM runs moved."""
        if not self.has_data:
            return np.zeros(0, np.int64), 0
        planes = self.offset + self.z_stride * np.arange(self.planes, dtype=np.int64)
        if self.x_stride == self.eb:  # a row is one run
            if self.y_stride == self.xs * self.eb:  # a plane is one run
                return planes, self.ys * self.xs * self.eb
            rows = planes[:, None] + self.y_stride * np.arange(self.ys)[None, :]
            return rows.ravel(), self.xs * self.eb
        grid = (
            planes[:, None, None]
            + self.y_stride * np.arange(self.ys)[None, :, None]
            + self.x_stride * np.arange(self.xs)[None, None, :]
        )
        return grid.ravel(), self.eb

    def view(self, dram: np.ndarray) -> np.ndarray:
        """The [planes, ys, xs, eb] DRAM bytes as a strided view (bounds already checked)."""
        return np.ndarray(
            (self.planes, self.ys, self.xs, self.eb),
            np.uint8,
            dram,
            self.offset,
            (self.z_stride, self.y_stride, self.x_stride, 1),
        )

    def load_into(self, target: np.ndarray, dram: np.ndarray) -> None:
        """Write a LOAD's entries into `target` ([entries, lanes], any integer type)."""
        pt, pl, _, _ = self.pads
        ys, xs, eb = self.ys, self.xs, self.eb
        block = target.reshape(self.planes, self.rows, self.cols, target.shape[1])
        if self.entries != self.planes * ys * xs:  # there is padding
            block[...] = self.pad_value
        data = block[:, pt : pt + ys, pl : pl + xs]
        data[..., eb:] = 0  # zero fill past elem_bytes (all of it when elem_bytes is 0)
        if self.has_data:
            data[..., :eb] = self.view(dram).view(np.int8)

    def load_entries(self, dram: np.ndarray, lanes: int) -> np.ndarray:
        """The entries a LOAD writes, int8 [entries, lanes]."""
        entries = np.empty((self.entries, lanes), np.int8)
        self.load_into(entries, dram)
        return entries
