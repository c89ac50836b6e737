"""The PYNQ overlays: a Vivado Tcl flow per board (`python -m dpukit.hw.overlay BOARD`).

`boards` holds the board facts and the names the PYNQ backend finds the DPU by (stdlib only,
importable on a board); `flow` writes the Verilog wrapper, the Tcl and the RTL into a folder.
"""
