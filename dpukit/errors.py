"""Errors a user can meet. Each message names the file, node or field and says what to do."""


class DpuKitError(Exception):
    """Base class of every error dpukit raises on purpose."""


class ConfigError(DpuKitError):
    """A hardware configuration file is missing, malformed or inconsistent."""


class ModelError(DpuKitError):
    """An ONNX model cannot be read, is not quantized, or uses something we cannot run."""


class CompileError(DpuKitError):
    """The compiler could not map a supported layer onto the configured hardware."""


class ProgramError(DpuKitError):
    """A .dpu program file is corrupted, of another version, or for another hardware config."""


class IsaError(DpuKitError):
    """An instruction field is out of range, or an instruction word does not decode."""


class ExecutionError(DpuKitError):
    """A run cannot go on: inputs that do not fit the program, or the DPU (golden, RTL or
    board) stopped with an error: bad address, illegal op, hang."""


class BoardError(ExecutionError):
    """A board backend cannot open its board: no pynq, not root, not a PYNQ board, or an
    overlay that is missing, incomplete (.bit without its .hwh) or has no dpukit DPU."""


class EnergyTableError(DpuKitError):
    """An energy table is missing, malformed, or lacks an energy the model needs."""


class SensorError(DpuKitError):
    """A power sensor is absent, unreadable (permissions, a vanished device), or misused."""
