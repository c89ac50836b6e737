"""Vitis AI's Python shapes over dpukit programs, for DPU-PYNQ and Vitis AI users:
`xir` (graphs and tensors), `vart` (a runner on one DPU subgraph) and `pynq_dpu`
(DpuOverlay). A view over the kit's own Program and Runner (host/runner.py), no second
runtime; docs/dpu_pynq.md ports a DPU-PYNQ notebook line by line."""
