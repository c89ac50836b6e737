"""`dpukit calibrate`: from the --json of measured runs to a calibrated table, as a user on
a board would go (dpukit run --power ... --json, for several programs).

No board here: the runs are real `dpukit run --json` outputs of real programs, and their
measured section is what the recorder would write had the board drawn exactly the energy a
known table gives (the recorder itself is tested in test_power_*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_energy_calibration import FITTED, PART, PJ, PROGRAMS, _truth

from dpukit.cli import main
from dpukit.compiler import energy
from dpukit.compiler.compile import compile_model
from dpukit.models import zoo
from dpukit.quantize import quantize_model

CHOSEN = ["conv_variants", "residual_block", "conv3x3_64_64_16", "maxpool_chain", "add_chain",
          "fc_512_256", "mlp"]  # fmt: skip


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The --json of one `dpukit run` per program, with the energy a board drawing by
    `_truth()` would have measured above its idle baseline."""
    root = tmp_path_factory.mktemp("cli_calibrate")
    true = _truth()
    paths = []
    for name in CHOSEN:
        model, shape = PROGRAMS[name]()
        qdq = quantize_model(model, root / f"{name}.onnx", zoo.calibration_data(shape, n=4))
        program = root / f"{name}.dpu"
        compile_model(qdq, "pynq-z2").save(program)
        out = root / f"{name}.json"
        assert main(["run", str(program), "--random", "2", "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        events = doc["energy_per_image_modeled"]["events_per_inference"]
        dynamic = sum(events.get(k, 0.0) * true[k] * PJ for k in FITTED)
        doc["energy_measured"] = {
            "kind": "measured",
            "per_inference": {"dynamic_energy_j": dynamic},
        }
        doc["backend"] = "pynq"  # as if run on the board
        out.write_text(json.dumps(doc))
        paths.append(out)
    return paths


def test_calibrate_recovers_the_table(runs: list[Path], tmp_path: Path, capsys) -> None:
    out, fit = tmp_path / "board.toml", tmp_path / "fit.json"
    argv = ["calibrate", *map(str, runs), "-o", str(out), "--json", str(fit)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "calibrated table board" in text and f"prior {PART}, uncalibrated" in text
    table = energy.load_table(out)
    assert table.calibrated and table.name == "board"
    true = _truth()
    for k in FITTED:
        assert table.entries[k].value == pytest.approx(true[k], rel=1e-6), k
    prior = energy.load_table(PART)
    assert table.entries["static"] == prior.entries["static"]  # not fitted: the prior's
    doc = json.loads(fit.read_text())
    assert doc["relative_rms"] < 1e-9 and doc["prior"] == PART
    # the calibrated table, used as any other
    assert main(["energy", str(runs[0]).replace(".json", ".dpu"), "--table", str(out)]) == 0
    assert "board, calibrated" in capsys.readouterr().out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("energy_measured"), "no measured dynamic energy per inference"),
        (
            lambda d: d["energy_measured"]["per_inference"].update(
                dynamic_energy_j=None, note="a sensor has a gap during 'inference'"
            ),
            "a sensor has a gap",
        ),
        (lambda d: d.pop("energy_per_image_modeled"), "not the --json of a `dpukit run`"),
        (lambda d: d.update(backend="golden"), "measured the host that ran it, not the DPU"),
        (
            lambda d: d["energy_per_image_modeled"]["events_per_inference"].update(dram=True),
            "events per inference must be numbers",
        ),
    ],
)
def test_calibrate_refuses_runs_without_what_it_fits(
    runs: list[Path], tmp_path: Path, capsys, edit, message: str
) -> None:
    doc = json.loads(runs[0].read_text())
    edit(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["calibrate", str(bad), *map(str, runs[1:]), "-o", str(tmp_path / "t.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "bad.json" in err
    assert not (tmp_path / "t.toml").exists()


def test_calibrate_too_few_runs(runs: list[Path], tmp_path: Path, capsys) -> None:
    assert main(["calibrate", *map(str, runs[:3]), "-o", str(tmp_path / "t.toml")]) == 1
    assert "measure at least as many programs" in capsys.readouterr().err


def test_calibrate_garbage_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    assert main(["calibrate", str(bad), "-o", str(tmp_path / "t.toml")]) == 1
    assert "not a readable JSON file" in capsys.readouterr().err
