"""dpukit: quantized ONNX -> open systolic DPU, verified bit-exactly, measured honestly."""

__version__ = "0.1.0"
