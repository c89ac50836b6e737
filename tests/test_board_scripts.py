"""The board script (dpukit.board_scripts.run_images) on the golden backend: folders of
images the tests write from the digits set, in both layouts, give the predictions and the
accuracy of `Runner.run` on the same pixels prepared by hand; files that are not images or
cannot be decoded are skipped and counted; bad folders and options are one error line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from board_images import compile_digits, digits_pictures, write_folder
from power_trees import hwmon_chip

from dpukit.board_scripts.preprocess import Preprocess, check_preprocess, to_input
from dpukit.board_scripts.run_images import main
from dpukit.errors import ProgramError
from dpukit.host.runner import create_runner

SCALE = np.float32(1 / 255)  # what the program's preprocess says: pixel * 1/255


@pytest.fixture(scope="module")
def digits_dpu(digits_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_digits(digits_qdq, tmp_path_factory.mktemp("board") / "digits.dpu")


@pytest.fixture(scope="module")
def pictures() -> tuple[np.ndarray, np.ndarray]:
    return digits_pictures()


def _reference(program: Path, pixels: np.ndarray) -> np.ndarray:
    """Top-1 classes of `Runner.run` on uint8 [N, 8, 8] pixels scaled by hand."""
    x = pixels[:, None].astype(np.float32) * SCALE
    with create_runner(program, "golden") as runner:
        logits = runner.run({"input": x}).outputs["logits"]
    return logits.argmax(axis=1)


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _report(digits_dpu: Path, folder: Path, tmp_path: Path, capsys, *extra) -> dict:
    out = tmp_path / "report.json"
    code, text, err = _run([digits_dpu, folder, "--out", out, *extra], capsys)
    assert code == 0, err
    assert "top-1 accuracy" in text and "latency per image" in text
    return json.loads(out.read_text())


def _error_line(code: int, out: str, err: str) -> str:
    assert code == 1, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    return err


def _predictions(report: dict, names: list[str]) -> np.ndarray:
    by_file = {r["file"]: r["predicted"] for r in report["per_image"]}
    assert sorted(by_file) == sorted(names)
    return np.array([by_file[n] for n in names])


def test_class_folders_of_png_match_the_runner(digits_dpu, pictures, tmp_path, capsys) -> None:
    pixels, labels = pictures
    names = write_folder(tmp_path / "images", pixels, labels, style="folders", ext=".png")
    report = _report(digits_dpu, tmp_path / "images", tmp_path, capsys)
    expected = _reference(digits_dpu, pixels)
    assert (_predictions(report, names) == expected).all()
    assert report["images"] == report["labelled"] == len(pixels)
    assert report["correct"] == int((expected == labels).sum())
    assert report["accuracy"] == pytest.approx((expected == labels).mean())
    assert report["accuracy"] > 0.9  # the digits CNN, not noise
    assert report["skipped"]["count"] == 0
    assert report["preprocess_from"] == "the program"
    assert report["preprocess"]["labels"] == [str(d) for d in range(10)]
    assert report["dpu_cycles_per_image"] > 0
    assert report["throughput_images_per_s"] > 0
    assert report["latency_ms_per_image"]["min"] <= report["latency_ms_per_image"]["median"]


def test_kaggle_style_jpegs_match_the_runner(digits_dpu, pictures, tmp_path, capsys) -> None:
    """`3.0017.jpg`: the class is the name's prefix. JPEG is lossy, so the reference is the
    runner on the pixels the same decoder gives the test."""
    pixels, labels = pictures
    names = write_folder(tmp_path / "flat", pixels, labels, style="kaggle", ext=".jpg")
    decoded = np.stack(
        [cv2.imread(str(tmp_path / "flat" / n), cv2.IMREAD_GRAYSCALE) for n in names]
    )
    assert (decoded != pixels).any()  # the JPEGs really are lossy
    report = _report(digits_dpu, tmp_path / "flat", tmp_path, capsys, "--batch", "7")
    expected = _reference(digits_dpu, decoded)
    assert (_predictions(report, names) == expected).all()
    assert report["correct"] == int((expected == labels).sum())
    assert report["batch"] == 7


def test_resize_and_colour_conversion(digits_dpu, pictures, tmp_path, capsys) -> None:
    """16x16 colour pictures (each pixel a 2x2 block, three equal channels) resized to the
    program's 8x8 gray input are the 8x8 pixels again: averaging equal pixels and the gray
    weights summing to one are exact."""
    pixels, labels = pictures
    names = write_folder(tmp_path / "big", pixels, labels, upscale=2, color=True)
    for interpolation in ("area", "linear"):
        report = _report(
            digits_dpu, tmp_path / "big", tmp_path, capsys, "--interpolation", interpolation
        )
        assert (_predictions(report, names) == _reference(digits_dpu, pixels)).all()
        assert report["preprocess_from"] == "the program and the command line"
        assert report["preprocess"]["interpolation"] == interpolation


def test_unreadable_and_non_image_files_are_skipped_and_counted(
    digits_dpu, pictures, tmp_path, capsys
) -> None:
    pixels, labels = pictures
    folder = tmp_path / "images"
    names = write_folder(folder, pixels[:20], labels[:20])
    (folder / "README.txt").write_text("the digits")
    (folder / "0" / "notes.csv").write_text("a,b\n")
    (folder / "1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "2" / "empty.png").write_bytes(b"")
    (folder / "2" / "text.png").write_text("a text file named like a picture")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: ignored, not counted
    report = _report(digits_dpu, folder, tmp_path, capsys)
    skipped = report["skipped"]
    assert skipped["count"] == 5
    assert sorted(skipped["not_images"]) == ["0/notes.csv", "README.txt"]
    assert sorted(skipped["unreadable"]) == ["1/broken.jpg", "2/empty.png", "2/text.png"]
    assert report["images"] == 20
    assert (_predictions(report, names) == _reference(digits_dpu, pixels[:20])).all()


def test_skipped_files_are_said(digits_dpu, pictures, tmp_path, capsys) -> None:
    pixels, labels = pictures
    write_folder(tmp_path / "images", pixels[:3], labels[:3])
    (tmp_path / "images" / "0" / "bad.png").write_bytes(b"nope")
    code, out, err = _run([digits_dpu, tmp_path / "images"], capsys)
    assert code == 0, err
    assert "skipped 1 file(s): 1 unreadable (0/bad.png)" in out


def test_unlabelled_images_run_but_count_for_no_accuracy(
    digits_dpu, pictures, tmp_path, capsys
) -> None:
    """Kaggle's test folders name files `123.jpg`: no class."""
    pixels, labels = pictures
    folder = tmp_path / "mixed"
    write_folder(folder, pixels[:10], labels[:10], style="kaggle")
    for k in range(4):
        assert cv2.imwrite(str(folder / f"{k}.png"), pixels[10 + k])
    report = _report(digits_dpu, folder, tmp_path, capsys)
    assert (report["images"], report["labelled"]) == (14, 10)
    unlabelled = [r for r in report["per_image"] if r["class"] is None]
    assert sorted(r["file"] for r in unlabelled) == [f"{k}.png" for k in range(4)]


def test_labels_option_orders_the_classes(digits_dpu, pictures, tmp_path, capsys) -> None:
    """Class folders named d0..d9: --labels maps them to the outputs (a file or a list);
    a folder missing from the list is an error naming it."""
    pixels, labels = pictures
    folder = tmp_path / "named"
    for picture, digit in zip(pixels, labels, strict=True):
        (folder / f"d{digit}").mkdir(parents=True, exist_ok=True)
        n = len(list((folder / f"d{digit}").iterdir()))
        assert cv2.imwrite(str(folder / f"d{digit}" / f"{n}.png"), picture)
    expected = _reference(digits_dpu, pixels)
    want = int((expected == labels).sum())
    names_file = tmp_path / "labels.txt"
    names_file.write_text("\n".join(f"d{d}" for d in range(10)) + "\n")
    for given in (",".join(f"d{d}" for d in range(10)), names_file):
        assert _report(digits_dpu, folder, tmp_path, capsys, "--labels", given)["correct"] == want
    short = ",".join(f"d{d}" for d in range(9))
    err = _error_line(*_run([digits_dpu, folder, "--labels", short], capsys))
    assert "d9" in err and "not in the labels list" in err


def test_sorted_class_names_without_labels(digits_qdq, pictures, tmp_path, capsys) -> None:
    """A program without preprocess: defaults from its input (gray, pixel / 255); numbered
    classes are output indices, even when some are missing; other names are numbered in
    sorted order, which it says when the folder has fewer classes than the model scores."""
    pixels, labels = pictures
    bare = compile_digits(digits_qdq, tmp_path / "bare.dpu", preprocess=None)
    write_folder(tmp_path / "all", pixels, labels)
    report = _report(bare, tmp_path / "all", tmp_path, capsys)
    assert report["correct"] == int((_reference(bare, pixels) == labels).sum())
    assert report["preprocess_from"] == "defaults from the program's input"
    assert report["preprocess"]["color"] == "gray"
    some = np.isin(labels, [3, 7])
    write_folder(tmp_path / "some", pixels[some], labels[some])
    report = _report(bare, tmp_path / "some", tmp_path, capsys)
    assert report["correct"] == int((_reference(bare, pixels[some]) == labels[some]).sum())
    assert report["correct"] > 0.9 * some.sum()  # 3 is output 3, not output 0
    (tmp_path / "some" / "3").rename(tmp_path / "some" / "three")
    (tmp_path / "some" / "7").rename(tmp_path / "some" / "seven")
    code, out, err = _run([bare, tmp_path / "some"], capsys)
    assert code == 0, err
    assert "warning: 2 class(es)" in out and "give --labels" in out


def test_power_and_energy_per_inference(digits_dpu, pictures, tmp_path, capsys) -> None:
    """A 2 W hwmon rail (a sysfs tree the test writes): the idle, warm-up and inference
    phases, 2 W over the inference phase spread over its images, and the trace as CSV."""
    pixels, labels = pictures
    write_folder(tmp_path / "images", pixels[:20], labels[:20])
    sysfs = tmp_path / "sys"
    hwmon_chip(sysfs, 0, {"name": "ina226", "power1_input": 2000000, "power1_label": "VSYS"})
    trace = tmp_path / "trace.csv"
    report = _report(
        digits_dpu, tmp_path / "images", tmp_path, capsys,
        "--power", "hwmon:ina226/VSYS", "--sysfs", sysfs, "--idle-s", "0.1",
        "--power-trace", trace,
    )  # fmt: skip
    energy = report["energy_measured"]
    per = energy["per_inference"]
    assert energy["kind"] == "measured"
    assert [p["name"] for p in energy["phases"]] == ["idle", "warm-up", "inference"]
    assert per["inferences"] == 20 and per["avg_power_w"] == pytest.approx(2.0)
    assert per["energy_j"] * 20 == pytest.approx(2.0 * per["duration_s"])
    assert trace.read_text().startswith("t_s,phase,hwmon:ina226/VSYS [W]\n")


def test_random_inputs_without_a_folder(digits_dpu, tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    code, text, err = _run([digits_dpu, "--random", "5", "--out", out], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["images"] == 5 and report["accuracy"] is None and report["images_dir"] is None


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda d: None, "no such image folder"),
        (lambda d: d.mkdir(), "no images in this folder (it holds nothing)"),
        (lambda d: (d.mkdir(), (d / "a.txt").write_text("x")), "only 1 file(s) that are not"),
        (
            lambda d: (d.mkdir(), (d / "a.jpg").write_text("x"), (d / "b.png").write_bytes(b"")),
            "none of its 2 image file(s) could be read (a.jpg, b.png)",
        ),
        (lambda d: d.write_text("x"), "not a folder"),
    ],
    ids=["missing", "empty", "only-non-images", "all-unreadable", "a-file"],
)
def test_bad_folders_are_one_error(digits_dpu, tmp_path, capsys, setup, why) -> None:
    folder = tmp_path / "images"
    setup(folder)
    err = _error_line(*_run([digits_dpu, folder], capsys))
    assert why in err and str(folder) in err


def test_options_that_do_not_fit_the_program(digits_dpu, pictures, tmp_path, capsys) -> None:
    pixels, labels = pictures
    write_folder(tmp_path / "images", pixels[:2], labels[:2])
    for option, why in [
        (["--size", "16x16"], "preprocess size [16, 16] but input 'input' [1, 1, 8, 8]"),
        (["--color", "rgb"], "color 'rgb' does not fit input 'input'"),
        (["--mean", "0.1,0.2"], "mean has 2 values; input 'input' has 1 channel(s)"),
        (["--resize-shorter", "4"], "resize_shorter 4 is smaller than the crop [8, 8]"),
    ]:
        err = _error_line(*_run([digits_dpu, tmp_path / "images", *option], capsys))
        assert why in err, err


def test_unwritable_report_is_refused_before_running(digits_dpu, pictures, tmp_path, capsys):
    pixels, labels = pictures
    write_folder(tmp_path / "images", pixels[:2], labels[:2])
    (tmp_path / "taken").write_text("a file where a folder should be")
    for out in (tmp_path, tmp_path / "taken" / "report.json"):
        code, text, err = _run([digits_dpu, tmp_path / "images", "--out", out], capsys)
        assert "cannot write it there" in _error_line(code, text, err)
        assert "running" not in text


def test_preprocess_by_hand() -> None:
    """A 1x2 BGR picture to an RGB model input, scaled and normalized per channel, in both
    layouts, computed by hand."""
    bgr = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)  # H=1, W=2
    spec = Preprocess(size=(1, 2), resize_shorter=None, interpolation="area", color="rgb",
                      scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0), layout="NCHW",
                      labels=None, dtype="float32")  # fmt: skip
    r = ([30 * 0.5 - 1, 60 * 0.5 - 1], [20 * 0.5 - 2, 50 * 0.5 - 2], [10 * 0.5 - 3, 40 * 0.5 - 3])
    expected = np.array(r, np.float32)[:, None, :] / np.array([2, 4, 8], np.float32)[:, None, None]
    np.testing.assert_array_equal(to_input(bgr, spec), expected)
    nhwc = to_input(bgr, Preprocess(**{**spec.__dict__, "layout": "NHWC"}))
    np.testing.assert_array_equal(nhwc, expected.transpose(1, 2, 0))
    assert to_input(bgr, spec).dtype == np.float32


def test_resize_shorter_then_center_crop() -> None:
    """A 4x8 picture, shorter side to 2 (so 2x4), center-cropped to 2x2: the middle columns."""
    gray = np.repeat(np.arange(8, dtype=np.uint8)[None, :] * 10, 4, axis=0)  # columns 0..70
    spec = Preprocess(size=(2, 2), resize_shorter=2, interpolation="area", color="gray",
                      scale=1.0, mean=(0.0,), std=(1.0,), layout="NCHW", labels=None,
                      dtype="float32")  # fmt: skip
    # area resize 8 -> 4 columns averages pairs: 5, 25, 45, 65; the crop keeps 25, 45
    np.testing.assert_array_equal(to_input(gray, spec), [[[25, 45], [25, 45]]])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"colour": "rgb"}, "unknown preprocess key(s) colour"),
        ({"color": "RGB"}, '\'color\' must be "rgb" or "bgr" or "gray"'),
        ({"size": [8]}, "'size' must be [height, width]"),
        ({"scale": 0}, "'scale' must be a non-zero number"),
        ({"std": [1, 0, 1]}, "'std' must be non-zero"),
        ({"mean": ["a"]}, "'mean' must be a finite number"),
        ({"labels": ["a", "b", "a"]}, "distinct class names (a repeat)"),
        ([1, 2], "preprocess must be an object"),
    ],
)
def test_check_preprocess_names_the_key(raw, why) -> None:
    with pytest.raises(ProgramError) as info:
        check_preprocess(raw, "prog.dpu")
    assert why in str(info.value) and "prog.dpu" in str(info.value)
