"""Hardware configs: the shipped ones load, fingerprints identify them, bad files are named."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from dpukit.compiler.hwconfig import (
    DEFAULT_CONFIG,
    available_configs,
    config_dir,
    config_from_dict,
    load_config,
)
from dpukit.errors import ConfigError

SHIPPED = available_configs()


def _dump(raw: dict) -> str:
    """A minimal TOML writer for config tables: top-level keys, then one level of sections."""

    def value(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, table in raw.items():
        if isinstance(table, dict):
            lines += ["", f"[{section}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _default_table() -> dict:
    return tomllib.loads((config_dir() / f"{DEFAULT_CONFIG}.toml").read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(_dump(raw))
    return path


def test_configs_are_shipped() -> None:
    assert DEFAULT_CONFIG in SHIPPED
    assert {"pynq-z2", "sim-small", "ultra96v2"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert load_config(config_dir() / f"{name}.toml") == cfg
    assert cfg.wgt_entry_bytes == cfg.rows * cfg.cols
    assert cfg.par_entry_bytes == 12 * cfg.cols


def test_dump_round_trips_a_shipped_config(tmp_path: Path) -> None:
    path = _write(tmp_path, _default_table())
    assert load_config(path) == load_config(DEFAULT_CONFIG)


def test_fingerprints_identify_configs(tmp_path: Path) -> None:
    prints = {name: load_config(name).fingerprint for name in SHIPPED}
    assert len(set(prints.values())) == len(SHIPPED), prints
    for name, fp in prints.items():
        assert re.fullmatch(r"[0-9a-f]{16}", fp)
        assert load_config(name).fingerprint == fp
        copy = tmp_path / f"{name}.toml"
        copy.write_text((config_dir() / f"{name}.toml").read_text())
        assert load_config(copy).fingerprint == fp
    raw = _default_table()
    raw["bus"]["dram_latency_cycles"] += 1
    assert load_config(_write(tmp_path, raw)).fingerprint != prints[DEFAULT_CONFIG]


def _bad(section: str | None, key: str, value: object = None) -> dict:
    """The default config with `section.key` set to `value`, or deleted if value is None."""
    raw = _default_table()
    table = raw if section is None else raw[section]
    if value is None:
        del table[key]
    else:
        table[key] = value
    return raw


@pytest.mark.parametrize(
    "raw, pattern",
    [
        ({k: v for k, v in _default_table().items() if k != "array"}, r"missing section \[array\]"),
        ({**_default_table(), "buffers": 3}, r"missing section \[buffers\]"),
        (_bad(None, "fpga_part"), r"missing field 'fpga_part'"),
        (_bad("buffers", "wgt_entries"), r"missing field 'buffers\.wgt_entries'"),
        (_bad("queues", "depth"), r"missing field 'queues\.depth'"),
        (_bad("array", "rows", "16"), r"field 'array\.rows' must be an integer"),
        (_bad("array", "cols", 4.0), r"field 'array\.cols' must be an integer"),
        (_bad("bus", "axi_data_bits", True), r"field 'bus\.axi_data_bits' must be an integer"),
        (_bad(None, "clock_mhz", "fast"), r"field 'clock_mhz' must be a number"),
        (_bad(None, "name", 7), r"field 'name' must be a string"),
        (_bad("buffers", "inp_entries", 1000), r"buffers\.inp_entries must be a power of two"),
        (_bad("buffers", "par_entries", 2), r"buffers\.par_entries must be a power of two"),
        (_bad("buffers", "acc_entries", 1 << 17), r"buffers\.acc_entries must fit"),
        (_bad("array", "rows", 0), r"rows .*must be 1\.\.128"),
        (_bad("array", "cols", 129), r"cols must be 1\.\.128"),
        (_bad("bus", "axi_data_bits", 48), r"axi_data_bits must be"),
        (_bad("queues", "depth", 0), r"queues\.depth must be"),
        # names become folder names and the part goes into Tcl: a safe character set only
        (_bad(None, "name", "../../../x"), r"name must be 1\.\.64 letters"),
        (_bad(None, "name", "my board"), r"name must be"),
        (_bad(None, "name", ""), r"name must be"),
        (_bad(None, "name", "x" * 65), r"name must be"),
        (_bad(None, "fpga_part", "xc7z020[exec rm -rf ~]"), r"fpga_part must be"),
        (_bad(None, "clock_mhz", 1e9), r"clock_mhz must be in"),
        (_bad(None, "clock_mhz", 5e-324), r"clock_mhz must be in"),  # latency would be inf
        ({**_default_table(), "extra": 1}, r"unknown field\(s\) extra"),
        (_bad("array", "depth", 4), r"unknown field\(s\) array\.depth"),  # a typo'd section
        (_bad("bus", "dram_latency_cycles", 10**9), r"dram_latency_cycles must be"),
    ],
    ids=lambda x: x.replace("\\", "") if isinstance(x, str) else "cfg",
)
def test_bad_config_names_file_and_field(tmp_path: Path, raw: dict, pattern: str) -> None:
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[array\nrows = 4\n')
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")


def test_unknown_config_lists_available() -> None:
    with pytest.raises(ConfigError, match="'no-such-board' not found") as err:
        load_config("no-such-board")
    assert all(name in str(err.value) for name in SHIPPED)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_names_are_never_paths() -> None:
    """A name is looked up among the installed configs only; a path must end in .toml."""
    for name in ("../sim-small", "../../hw/configs/sim-small", "/etc/passwd"):
        with pytest.raises(ConfigError, match="not found"):
            load_config(name)


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    folder = tmp_path / "board.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="not found"):
        load_config(folder)


@pytest.mark.parametrize("name", SHIPPED)
def test_flat_dict_round_trips(name: str) -> None:
    cfg = load_config(name)
    assert config_from_dict(cfg.as_dict(), "here") == cfg


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda d: "pynq-z2", r"must be a table of config fields"),
        (lambda d: {**d, "secret": 1}, r"unknown field\(s\) secret"),
        (
            lambda d: {k: v for k, v in d.items() if k != "queue_depth"},
            r"missing field 'queue_depth'",
        ),
        (lambda d: {**d, "rows": True}, r"field 'rows' must be an integer"),
        (lambda d: {**d, "clock_mhz": float("nan")}, r"clock_mhz must be in"),
        (lambda d: {**d, "name": "a/b"}, r"name must be"),
    ],
    ids=["not-a-dict", "unknown-field", "missing-field", "bool-for-int", "nan-clock", "slash"],
)
def test_flat_dict_is_checked_as_a_file_is(change, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        config_from_dict(change(load_config(DEFAULT_CONFIG).as_dict()), "program.dpu: config")
    assert str(err.value).startswith("program.dpu: config: ")
