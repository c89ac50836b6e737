"""`dpukit deploy` against a "board" that is this machine: an asyncssh server the test starts
on 127.0.0.1 (port 0) with throw-away ed25519 keys, SFTP rooted in a temporary home, and a
process factory that runs each command there with the test's Python as `python3`. The
board script runs on the golden backend; its report comes back and equals a local run.
Unreachable host, refused login, untrusted host key, a board without dpukit and a failing
board script are each one error line."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import sys
import threading
import warnings
from pathlib import Path

import pytest
from bad_inputs import error_line
from board_images import compile_digits, digits_pictures, write_folder
from power_trees import hwmon_chip

from dpukit.board_scripts.run_images import main as run_images
from dpukit.cli import main

with warnings.catch_warnings():  # its DSA support warns on newer cryptography
    warnings.simplefilter("ignore")
    import asyncssh


class FakeBoard:
    """An SSH server in a thread of its own (the CLI runs its own event loop in this one)."""

    def __init__(self, home: Path, keys: Path):
        self.home = home
        self.bin = keys / "bin"  # `python3` on the board's PATH: the test's Python
        self.bin.mkdir()
        python3 = self.bin / "python3"
        python3.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        python3.chmod(0o755)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = keys / "id_ed25519"
        user_key = asyncssh.generate_private_key("ssh-ed25519")
        user_key.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        self.stranger_key = keys / "id_stranger"  # a key the board does not know
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(self.stranger_key))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        authorized = asyncssh.import_authorized_keys(user_key.export_public_key().decode())

        async def listen():
            return await asyncssh.listen(
                "127.0.0.1",
                0,
                server_host_keys=[host_key],
                authorized_client_keys=authorized,
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(home)),
                process_factory=self._run_command,
                encoding=None,
            )

        self.server = self._call(listen())
        self.port = self.server.sockets[0].getsockname()[1]
        self.known_hosts = keys / "known_hosts"
        public = host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _run_command(self, process) -> None:
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        proc = await asyncio.create_subprocess_shell(
            process.command,
            cwd=self.home,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def pump(source, sink) -> None:
            while chunk := await source.read(65536):
                sink.write(chunk)

        await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
        process.exit(await proc.wait())

    def argv(self, *extra, key: Path | None = None) -> list[str]:
        """The login options of `dpukit deploy` for this board."""
        return [
            "--board", "xilinx@127.0.0.1", "--port", str(self.port),
            "--identity", str(key or self.client_key), "--known-hosts", str(self.known_hosts),
            *map(str, extra),
        ]  # fmt: skip

    def close(self) -> None:
        self.server.close()
        self._call(self.server.wait_closed())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory):
    fake = FakeBoard(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("keys"))
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def digits_dpu(digits_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_digits(digits_qdq, tmp_path_factory.mktemp("deploy") / "digits.dpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pixels, labels = digits_pictures(per_class=3)
    folder = tmp_path_factory.mktemp("images") / "digits"
    write_folder(folder, pixels, labels, ext=".jpg")
    return folder


def test_deploy_runs_on_the_board_and_brings_the_report_back(
    board, digits_dpu, images, tmp_path, capsys
) -> None:
    bit = tmp_path / "dpukit_test.bit"
    bit.write_bytes(b"\x00\x09bitstream")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    out = tmp_path / "report"
    argv = [digits_dpu, "--images", images, "--overlay", bit, "--backend", "golden", "-o", out]
    assert main(["deploy", *map(str, argv), *board.argv()]) == 0
    text = capsys.readouterr().out
    remote = board.home / "dpukit-deploy"
    assert (remote / "digits.dpu").read_bytes() == digits_dpu.read_bytes()
    assert (remote / "dpukit_test.bit").read_bytes() == bit.read_bytes()
    assert (remote / "dpukit_test.hwh").read_text() == "<hwh/>"
    assert len(list((remote / "images").rglob("*.jpg"))) == 30
    report = json.loads((out / "report.json").read_text())
    assert "top-1 accuracy" in (out / "board.log").read_text()
    assert "top-1 accuracy" in text and "images/s" in text
    # the same as the board script run here on the same folder
    local = tmp_path / "local.json"
    assert run_images([str(digits_dpu), str(images), "--out", str(local)]) == 0
    here = json.loads(local.read_text())
    assert report["backend"] == "golden" and report["images"] == 30
    assert report["correct"] == here["correct"]
    assert [r["predicted"] for r in report["per_image"]] == [
        r["predicted"] for r in here["per_image"]
    ]


def test_a_second_deploy_replaces_the_images(board, digits_dpu, images, tmp_path, capsys):
    pixels, labels = digits_pictures(per_class=1)
    fewer = tmp_path / "fewer"
    write_folder(fewer, pixels, labels, style="kaggle")
    out = tmp_path / "report"
    argv = [digits_dpu, "--images", fewer, "--backend", "golden", "-o", out, *board.argv()]
    assert main(["deploy", *map(str, argv)]) == 0
    assert json.loads((out / "report.json").read_text())["images"] == 10
    assert sorted(p.name for p in (board.home / "dpukit-deploy" / "images").iterdir()) == sorted(
        p.name for p in fewer.iterdir()
    )


def test_random_inputs_and_script_args(board, digits_dpu, tmp_path) -> None:
    out = tmp_path / "report"
    argv = [digits_dpu, "--random", "4", "--backend", "golden", "-o", out]
    argv += ["--script-args", "--batch 2", *board.argv()]
    assert main(["deploy", *map(str, argv)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["images"], report["batch"], report["accuracy"]) == (4, 2, None)


def test_power_is_recorded_on_the_board(board, digits_dpu, images, tmp_path) -> None:
    """--power reaches the board script; the trace comes back beside the report. The
    board's sensor is a 2 W hwmon rail in a sysfs tree the test writes."""
    sysfs = tmp_path / "sys"
    hwmon_chip(sysfs, 0, {"name": "ina226", "power1_input": 2000000, "power1_label": "VSYS"})
    out = tmp_path / "report"
    argv = [digits_dpu, "--images", images, "--backend", "golden", "-o", out]
    argv += ["--power", "hwmon:ina226/VSYS"]
    argv += ["--script-args", f"--sysfs {shlex.quote(str(sysfs))} --idle-s 0.1", *board.argv()]
    assert main(["deploy", *map(str, argv)]) == 0
    per = json.loads((out / "report.json").read_text())["energy_measured"]["per_inference"]
    assert per["inferences"] == 30 and per["avg_power_w"] == pytest.approx(2.0)
    assert (out / "power.csv").read_text().startswith("t_s,phase,hwmon:ina226/VSYS [W]\n")


def test_unreachable_board(digits_dpu, images, tmp_path, capsys) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        argv = [digits_dpu, "--images", images, "--backend", "golden", "-o", tmp_path / "r"]
        argv += ["--board", "xilinx@127.0.0.1", "--port", port]
        assert main(["deploy", *map(str, argv)]) == 1
    err = error_line(capsys)
    assert f"xilinx@127.0.0.1:{port}: cannot reach the board" in err


def test_login_refused(board, digits_dpu, images, tmp_path, capsys) -> None:
    argv = [digits_dpu, "--images", images, "--backend", "golden", "-o", tmp_path / "r"]
    assert main(["deploy", *map(str, argv), *board.argv(key=board.stranger_key)]) == 1
    err = error_line(capsys)
    assert "the board refused the login of xilinx" in err and "--identity" in err


def test_untrusted_host_key(board, digits_dpu, images, tmp_path, capsys) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [digits_dpu, "--images", images, "--backend", "golden", "-o", tmp_path / "r"]
    argv = [*argv, *board.argv()]
    argv[argv.index("--known-hosts") + 1] = str(empty)
    assert main(["deploy", *map(str, argv)]) == 1
    assert "host key is not trusted" in error_line(capsys)


def test_board_without_dpukit(board, digits_dpu, images, tmp_path, capsys) -> None:
    """`python3 -S` skips site-packages: a Python where dpukit is not installed."""
    argv = [digits_dpu, "--images", images, "--backend", "golden", "-o", tmp_path / "r"]
    argv += ["--python", "python3 -I -S", *board.argv()]
    assert main(["deploy", *map(str, argv)]) == 1
    err = error_line(capsys)
    assert "dpukit is not installed for the board's `python3 -I -S`" in err
    assert "pip install 'dpukit[board]'" in err


def test_board_script_failure(board, digits_dpu, tmp_path, capsys) -> None:
    """The board script's own error line comes back as the deploy's, with the log kept."""
    folder = tmp_path / "no_images"
    folder.mkdir()
    (folder / "notes.txt").write_text("no pictures here")
    out = tmp_path / "r"
    argv = [digits_dpu, "--images", folder, "--backend", "golden", "-o", out, *board.argv()]
    assert main(["deploy", *map(str, argv)]) == 1
    err = error_line(capsys)
    assert "the board script failed: dpukit-deploy/images: no images in this folder" in err
    assert "no images in this folder" in (out / "board.log").read_text()
    assert not (out / "report.json").exists()


def test_local_problems_are_found_before_connecting(digits_dpu, images, tmp_path, capsys):
    """No board listens here: each error must come before any connection attempt."""
    bit = tmp_path / "lonely.bit"
    bit.write_bytes(b"bits")
    login = ["--board", "nobody@127.0.0.1", "--port", "9"]
    for argv, why in [
        ([digits_dpu, "--images", images, "--overlay", bit], "lonely.hwh is missing"),
        ([digits_dpu, "--images", images], "the pynq backend needs the overlay"),
        ([digits_dpu, "--images", tmp_path / "none", "--backend", "golden"], "no such image"),
        ([tmp_path / "none.dpu", "--images", images, "--backend", "golden"], "no such program"),
        ([digits_dpu, "--backend", "golden"], "give --images DIR or --random N"),
    ]:
        assert main(["deploy", *map(str, argv), "-o", str(tmp_path / "r"), *login]) == 1
        assert why in error_line(capsys)
