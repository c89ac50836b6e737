"""Lab instruments over SCPI through pyvisa (`pip install 'dpukit[power]'`): a logging bench
supply or a power analyzer on USB/LAN/serial. The PYNQ-Z2 has no power monitor of its own,
so an instrument in its supply line is how its users measure.

Name: `scpi:<VISA resource>[@<pyvisa library>]`, e.g. `scpi:USB0::0x2A8D::0x1602::MY1::INSTR`
(pyvisa's default library: NI-VISA, else pyvisa-py) or `scpi:ASRL1::INSTR@psu.yaml@sim`
(pyvisa-sim). The power query is `MEAS:POW?` (SCPI-1999 for supplies and analyzers), or
$DPUKIT_SCPI_QUERY for an instrument that spells it otherwise (`:MEAS:POWE? CH1` on a Rigol).
"""

from __future__ import annotations

import os
import re
import warnings

from dpukit.errors import SensorError
from dpukit.host.power.sensor import Sensor, close_sensors

DEFAULT_QUERY = "MEAS:POW?"
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ScpiSensor(Sensor):
    source = "scpi"
    unit = "W"
    denied_hint = "the instrument's device node (USB/serial) needs read-write access for you"

    def __init__(self, resource: str, library: str | None = None, query: str | None = None,
                 timeout_ms: int = 2000):  # fmt: skip
        try:
            import pyvisa
        except ImportError:
            raise SensorError("scpi sensors need pyvisa: pip install 'dpukit[power]'") from None
        self.name = f"scpi:{resource}" + (f"@{library}" if library else "")
        self.query = query or os.environ.get("DPUKIT_SCPI_QUERY") or DEFAULT_QUERY
        self._inst = None
        try:
            rm = pyvisa.ResourceManager(library) if library else pyvisa.ResourceManager()
            # SCPI (IEEE 488.2) ends messages with a newline; USB/LAN also mark the end
            self._inst = rm.open_resource(resource, write_termination="\n", read_termination="\n")
            self._inst.timeout = timeout_ms
            with warnings.catch_warnings():  # an empty answer warns too; one error says it
                warnings.simplefilter("ignore")
                idn = self._inst.query("*IDN?").strip()
            if not idn:
                raise OSError("nothing answered *IDN?")
        except Exception as exc:  # pyvisa, its backends and the OS raise many types
            close_sensors([self])
            detail = (str(exc).strip().splitlines() or [""])[0]  # pyvisa-sim adds a traceback
            raise SensorError(
                f"{self.name}: cannot open the instrument ({type(exc).__name__}: {detail})"
            ) from None
        self.description = f"{idn}, {self.query}"

    def read(self) -> float:
        answer = self._inst.query(self.query)
        m = _NUMBER.search(answer)  # "2.5", "+2.50000E+00" or "2.5W" alike
        if m is None:
            raise ValueError(f"{self.query} answered {answer.strip()!r}, not a number")
        value = float(m[0])
        if abs(value) >= 9.9e37:  # SCPI's overflow / not-a-number marker: no reading (a gap)
            raise ValueError(f"{self.query} answered {answer.strip()!r}: out of range")
        return value

    def close(self) -> None:
        inst, self._inst = self._inst, None
        if inst is not None:
            inst.close()


def open_scpi(name: str) -> ScpiSensor:
    """`scpi:RESOURCE[@LIBRARY]` (VISA resource names have no '@'; library specs may)."""
    resource, _, library = name.removeprefix("scpi:").partition("@")
    if not resource:
        raise SensorError(f"'{name}': give an instrument, scpi:RESOURCE[@LIBRARY]")
    sim = library.removesuffix("@sim")
    if sim != library and sim and not os.path.isfile(sim):
        raise SensorError(f"{name}: no pyvisa-sim instrument file {sim}")
    return ScpiSensor(resource, library or None)


def scpi_status(visa: str | None) -> str:
    """What `dpukit sensors` says about SCPI; with `visa` ("" = pyvisa's default library),
    the instruments that library sees. Instruments are only listed on request: listing
    probes serial and USB ports."""
    try:
        import pyvisa
    except ImportError:
        return "no pyvisa (pip install 'dpukit[power]')"
    if visa is None:
        return (
            f"pyvisa {pyvisa.__version__}: name an instrument as scpi:RESOURCE[@LIBRARY] "
            "(`dpukit sensors --visa [LIBRARY]` lists them)"
        )
    try:
        rm = pyvisa.ResourceManager(visa) if visa else pyvisa.ResourceManager()
        found = rm.list_resources()
    except Exception as exc:  # a missing VISA library or a bad spec, named not raised
        return f"pyvisa library {visa or '(default)'}: {type(exc).__name__}: {exc}"
    suffix = f"@{visa}" if visa else ""
    names = ", ".join(f"scpi:{r}{suffix}" for r in found)
    return f"instruments: {names}" if names else f"pyvisa {visa or '(default)'}: no instruments"
