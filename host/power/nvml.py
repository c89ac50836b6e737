"""NVIDIA GPUs through NVML (nvidia-ml-py, `pip install 'dpukit[nvidia]'`): for the float
stages that seed 000 measured on a GPU. `nvml:<index>` reads the total-energy counter
(mJ since the driver loaded; Volta and newer), else the power reading (mW; on Ampere and
newer a one-second average, so phases must be seconds long)."""

from __future__ import annotations

from dpukit.host.power.sensor import Sensor


class NvmlSensor(Sensor):
    source = "nvml"

    def __init__(self, index: int):
        import pynvml

        self._nvml, self.name = pynvml, f"nvml:{index}"
        pynvml.nvmlInit()  # reference-counted by NVML; close() shuts this one down
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu = pynvml.nvmlDeviceGetName(self._handle)
        except pynvml.NVMLError:
            pynvml.nvmlShutdown()
            raise
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.unit, self.resolution, self.update_period_s = "J", 1e-3, 0.1
            self.description = f"{gpu} total energy counter"
        except pynvml.NVMLError:  # before Volta: power only
            self.unit, self.resolution, self.update_period_s = "W", 1e-3, 1.0
            self.description = f"{gpu} power (averaged by the driver)"

    def read(self) -> float:
        if self.unit == "J":
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) * 1e-3
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) * 1e-3

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            self._nvml.nvmlShutdown()


def find(sysfs: str) -> tuple[list[Sensor], str | None]:
    try:
        import pynvml
    except ImportError:
        return [], "no nvidia-ml-py (pip install 'dpukit[nvidia]')"
    try:
        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            sensors = [NvmlSensor(i) for i in range(count)]
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable ({type(exc).__name__}: {exc}): no NVIDIA driver or GPU"
    return sensors, None if sensors else "NVML sees no GPU"
