"""Hardware configurations: one TOML file per target in hw/configs/, validated on load.

A `HwConfig` drives the compiler, the golden model, the RTL parameters and the energy
model. Its `fingerprint` goes into every program so a program never runs on another config.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from dpukit.errors import ConfigError

DEFAULT_CONFIG = "pynq-z2"
# A config's name becomes a folder or file name (the RTL build, reports) and its part goes
# into the overlay's Tcl, so both are kept to characters that are inert in paths and Tcl.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class HwConfig:
    name: str
    fpga_part: str
    clock_mhz: float
    rows: int
    cols: int
    operand_bits: int
    accumulator_bits: int
    axi_data_bits: int
    axi_addr_bits: int
    dram_latency_cycles: int
    max_burst_beats: int
    inp_entries: int
    wgt_entries: int
    acc_entries: int
    out_entries: int
    par_entries: int
    queue_depth: int

    # Entry widths in bytes, derived from the array shape (see docs/isa.md).
    @property
    def inp_entry_bytes(self) -> int:
        return self.rows

    @property
    def wgt_entry_bytes(self) -> int:
        return self.rows * self.cols

    @property
    def acc_entry_bytes(self) -> int:
        return self.cols * self.accumulator_bits // 8

    @property
    def out_entry_bytes(self) -> int:
        return self.cols

    @property
    def par_entry_bytes(self) -> int:
        return self.cols * 12  # int32 bias, int32 multiplier, int32 shift per output channel

    @property
    def bus_bytes(self) -> int:
        return self.axi_data_bits // 8

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.rows * self.cols

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def fingerprint(self) -> str:
        """Hash of every field that changes what a program means or where it may run."""
        canonical = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


_SCHEMA: dict[str, dict[str, type]] = {
    "": {"name": str, "fpga_part": str, "clock_mhz": (int, float)},
    "array": {"rows": int, "cols": int},
    "precision": {"operand_bits": int, "accumulator_bits": int},
    "bus": {
        "axi_data_bits": int,
        "axi_addr_bits": int,
        "dram_latency_cycles": int,
        "max_burst_beats": int,
    },
    "buffers": {
        "inp_entries": int,
        "wgt_entries": int,
        "acc_entries": int,
        "out_entries": int,
        "par_entries": int,
    },
    "queues": {"depth": int},
}


def _field_name(label: str) -> str:
    """The HwConfig field of a TOML key (`queues.depth` -> `queue_depth`)."""
    return "queue_depth" if label == "queues.depth" else label.rpartition(".")[2]


# Every HwConfig field and its type, as the flat `as_dict()` form has them.
_TYPES = {
    _field_name(f"{section}.{key}" if section else key): typ
    for section, keys in _SCHEMA.items()
    for key, typ in keys.items()
}


def config_dir() -> Path:
    return Path(str(resources.files("dpukit.hw") / "configs"))


def available_configs() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.toml"))


def load_config(name_or_path: str | Path = DEFAULT_CONFIG) -> HwConfig:
    """Load a config by target name (`pynq-z2`) or by path to a TOML file."""
    if isinstance(name_or_path, HwConfig):
        return name_or_path
    path = Path(name_or_path)
    # a name (which may hold a '.') names an installed config; a path ends in .toml
    if path.suffix != ".toml" and SAFE_NAME.fullmatch(str(name_or_path)):
        path = config_dir() / f"{name_or_path}.toml"
    if path.suffix != ".toml" or not path.is_file():
        raise ConfigError(
            f"hardware config '{name_or_path}' not found; "
            f"available: {', '.join(available_configs())} (or give a path to a .toml file)"
        )
    try:
        import tomllib  # Python 3.11 on; a board's 3.10 runs programs, which carry their config
    except ModuleNotFoundError:
        raise ConfigError(
            f"{path}: reading a .toml config needs Python 3.11 or newer (tomllib); on this "
            "Python, run programs with the config they carry (no --config)"
        ) from None
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    return _from_table(raw, str(path))


def config_from_dict(fields: object, where: str) -> HwConfig:
    """A config from its flat `HwConfig.as_dict()` form, as a program carries it, checked as
    strictly as a TOML file; `where` prefixes every error message."""
    if not isinstance(fields, dict):
        raise ConfigError(f"{where}: must be a table of config fields")
    unknown = sorted(map(str, fields.keys() - _TYPES.keys()))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    return _checked(
        {name: _typed(fields, name, name, typ, where) for name, typ in _TYPES.items()}, where
    )


def _from_table(raw: dict, where: str) -> HwConfig:
    fields: dict[str, object] = {}
    for section, keys in _SCHEMA.items():
        table = raw if section == "" else raw.get(section)
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: missing section [{section}]")
        # a key the schema does not know is a typo the file's author would want to hear of
        known = set(keys) | (set(_SCHEMA) - {""} if section == "" else set())
        unknown = sorted(f"{section}.{k}" if section else k for k in table.keys() - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for key, typ in keys.items():
            label = f"{section}.{key}" if section else key
            fields[_field_name(label)] = _typed(table, key, label, typ, where)
    return _checked(fields, where)


def _typed(table: dict, key: str, label: str, typ, where: str) -> object:
    """`table[key]`, which must be of type `typ` (a bool is not a number here)."""
    if key not in table:
        raise ConfigError(f"{where}: missing field '{label}'")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, typ):
        raise ConfigError(f"{where}: field '{label}' must be {_type_name(typ)}")
    return value


def _type_name(typ) -> str:
    return "a number" if isinstance(typ, tuple) else {int: "an integer", str: "a string"}[typ]


def _checked(fields: dict, where: str) -> HwConfig:
    cfg = HwConfig(**fields)

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{where}: {msg}")

    for label in ("name", "fpga_part"):
        need(
            SAFE_NAME.fullmatch(getattr(cfg, label)) is not None,
            f"{label} must be 1..64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
    need(1 <= cfg.rows <= 128 and 1 <= cfg.cols <= 128, "array rows and cols must be 1..128")
    # the compute engine's weight tile goes in behind the first vector (hw/rtl/dpu_compute.sv)
    need(cfg.cols >= 3, "array cols must be at least 3")
    need(cfg.operand_bits == 8, "only operand_bits = 8 (int8) is supported")
    need(cfg.accumulator_bits == 32, "only accumulator_bits = 32 is supported")
    need(cfg.axi_data_bits in (32, 64, 128, 256), "axi_data_bits must be 32, 64, 128 or 256")
    need(32 <= cfg.axi_addr_bits <= 64, "axi_addr_bits must be 32..64")
    need(1 <= cfg.clock_mhz <= 10_000, "clock_mhz must be in [1, 10000]")
    need(0 <= cfg.dram_latency_cycles <= 1 << 16, "dram_latency_cycles must be 0..65536")
    need(cfg.max_burst_beats in (1, 2, 4, 8, 16, 32, 64, 128, 256), "max_burst_beats: 1..256, 2^n")
    need(1 <= cfg.queue_depth <= 1024, "queues.depth must be 1..1024")
    for name in ("inp", "wgt", "acc", "out", "par"):
        n = getattr(cfg, f"{name}_entries")
        # Two halves for double buffering, each a power of two for the RTL's address decode.
        need(n >= 4 and n & (n - 1) == 0, f"buffers.{name}_entries must be a power of two >= 4")
        need(n <= 1 << 16, f"buffers.{name}_entries must fit the 16-bit address field")
    return cfg
