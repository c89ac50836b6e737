"""Deploy to a board over SSH: copy a program, its overlay and a folder of images, run the
board script there, and bring its report back.

    report = deploy(Board("xilinx@pynq"), "digits.dpu", "out/", images="images/",
                    overlay="dpukit_pynq_z2.bit")

The board needs dpukit installed for the Python that runs the script (`pip install
dpukit[board]`, once): the script runs on the whole board runtime (program loader, Runner,
driver, PYNQ backend, CPU ops, power recorder), which a copy of the script alone would not
bring, and an install keeps the pynq pin of the `board` extra. Before copying, the board's
dpukit version is read and a mismatch with this one is reported.

On the board everything lives under one folder (`remote_dir`, relative to the login's home):
the program, the overlay's .bit and .hwh, `images/` and `report/` (both replaced on every
deploy, so a stale image or report never mixes in).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dpukit import __version__
from dpukit.errors import DpuKitError

REMOTE_SCRIPT = "dpukit.board_scripts.run_images"
REPORT = "report.json"
BOARD_LOG = "board.log"


class DeployError(DpuKitError):
    """The board cannot be reached or logged in to, a copy failed, or the board script
    failed there."""


@dataclass(frozen=True)
class Board:
    """Where to log in: `[USER@]HOST`, the SSH port, a private key file (default: the SSH
    agent's and ~/.ssh's keys) and a known_hosts file (default ~/.ssh/known_hosts)."""

    target: str
    port: int = 22
    identity: str | Path | None = None
    known_hosts: str | Path | None = None
    connect_timeout_s: float = 30.0

    @property
    def user(self) -> str | None:
        return self.target.rpartition("@")[0] or None

    @property
    def host(self) -> str:
        return self.target.rpartition("@")[2].strip("[]")

    @property
    def where(self) -> str:
        return f"{self.target}:{self.port}"


def deploy(board: Board, program: str | Path, report_dir: str | Path, **options) -> dict:
    """`deploy_async` run to its end (outside a running event loop)."""
    return asyncio.run(deploy_async(board, program, report_dir, **options))


async def deploy_async(
    board: Board,
    program: str | Path,
    report_dir: str | Path,
    *,
    images: str | Path | None = None,
    overlay: str | Path | None = None,
    backend: str = "pynq",
    power: str | None = None,
    script_args: list[str] = (),
    python: str = "python3",
    remote_dir: str = "dpukit-deploy",
    say: Callable[[str], None] = print,
    board_says: Callable[[str], None] | None = None,
) -> dict:
    """Copy, run, fetch. `power`: the board's sensors to record (their trace comes back as
    power.csv); `script_args`: more options of run_images. The board script's lines go to
    `board_says` (default `say`) as they come, the deploy's own to `say`; its report
    (run_images' JSON) is written to `report_dir` with the board's log, and returned."""
    program, report_dir = Path(program), Path(report_dir)
    files = _local_files(program, images, overlay, backend, report_dir)
    asyncssh = _asyncssh()
    remote = PurePosixPath(remote_dir)
    try:
        async with await _connect(asyncssh, board) as conn:
            await _check_board_python(conn, board, python, say)
            if power:
                trace = remote / "report" / "power.csv"
                script_args = ["--power", power, "--power-trace", str(trace), *script_args]
            command = _command(python, files, remote, backend, script_args)
            async with conn.start_sftp_client() as sftp:  # one session: files in, report out
                await _copy(asyncssh, sftp, board, files, remote, say)
                status, log, errors = await _run(conn, command, board_says or say)
                report_dir.mkdir(parents=True, exist_ok=True)
                (report_dir / BOARD_LOG).write_text(log)
                if status != 0:
                    raise DeployError(_failure(board, status, errors, report_dir / BOARD_LOG))
                try:
                    await sftp.mget(str(remote / "report" / "*"), str(report_dir))
                except asyncssh.SFTPError as exc:
                    raise DeployError(
                        f"{board.where}: fetching the report from {remote}/report failed: {exc}"
                    ) from None
    except (OSError, asyncssh.Error) as exc:  # the link broke after the login
        raise DeployError(
            f"{board.where}: the connection failed during the deploy: {exc}"
        ) from None
    try:
        return json.loads((report_dir / REPORT).read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(
            f"{report_dir / REPORT}: the board's report is unreadable ({exc})"
        ) from None


@dataclass
class _Files:
    program: Path
    overlay: list[Path]  # .bit and .hwh
    images: Path | None


def _local_files(program: Path, images, overlay, backend: str, report_dir: Path) -> _Files:
    """What will be copied, checked here first: a missing file is found before connecting."""
    from dpukit.compiler.program import Program
    from dpukit.host.backends import BACKENDS
    from dpukit.outfiles import why_unwritable

    if backend not in BACKENDS:
        raise DeployError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    Program.load(program)  # a damaged program is refused here, not on the board
    pair: list[Path] = []
    if overlay is not None:
        bit = Path(overlay)
        if bit.suffix != ".bit" or not bit.is_file():
            raise DeployError(f"{bit}: no such overlay bitstream; give the overlay's .bit file")
        hwh = bit.with_suffix(".hwh")
        if not hwh.is_file():
            raise DeployError(
                f"{bit}: its hardware handoff {hwh.name} is missing; pynq.Overlay needs the "
                ".hwh beside the .bit, under the same name"
            )
        pair = [bit, hwh]
    elif backend == "pynq":
        raise DeployError("the pynq backend needs the overlay: give --overlay NAME.bit")
    folder = None
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise DeployError(f"{folder}: no such image folder")
    why = why_unwritable(report_dir / REPORT)
    if why:
        raise DeployError(f"{report_dir}: cannot write the report there ({why})")
    return _Files(program, pair, folder)


def _asyncssh():
    try:
        with warnings.catch_warnings():  # its DSA support warns on newer cryptography
            warnings.simplefilter("ignore")
            import asyncssh
    except ImportError:
        raise DeployError("dpukit deploy needs asyncssh: pip install 'dpukit[deploy]'") from None
    return asyncssh


async def _connect(asyncssh, board: Board):
    options = {"port": board.port, "connect_timeout": board.connect_timeout_s}
    if board.user:
        options["username"] = board.user
    if board.identity is not None:
        key = Path(board.identity)
        if not key.is_file():
            raise DeployError(f"--identity {key}: no such private key file")
        options["client_keys"] = [str(key)]
        options["agent_path"] = None  # only the key given
    if board.known_hosts is not None:
        options["known_hosts"] = str(board.known_hosts)
    try:
        return await asyncssh.connect(board.host, **options)
    except asyncssh.PermissionDenied:
        who = board.user or "this user"
        raise DeployError(
            f"{board.where}: the board refused the login of {who} (no key it accepts); give "
            "--identity KEY with a key in the board's authorized_keys"
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise DeployError(
            f"{board.where}: the board's host key is not trusted ({exc}); connect once with "
            "`ssh` to accept it, or give --known-hosts FILE"
        ) from None
    except asyncssh.KeyImportError as exc:
        raise DeployError(
            f"--identity {board.identity}: not a usable private key ({exc})"
        ) from None
    except (OSError, asyncssh.Error) as exc:  # TimeoutError is an OSError
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DeployError(f"{board.where}: cannot reach the board ({why})") from None


async def _check_board_python(conn, board: Board, python: str, say) -> None:
    """The board's Python can import dpukit; a version other than this one is reported."""
    probe = "import dpukit, platform; print(dpukit.__version__, platform.python_version())"
    result = await conn.run(f"{_python(python)} -c {shlex.quote(probe)}", check=False)
    if result.exit_status == 127:
        raise DeployError(
            f"{board.where}: no `{python}` on the board; give its Python with --python"
        )
    if result.exit_status != 0:
        if "No module named" in str(result.stderr) and "dpukit" in str(result.stderr):
            raise DeployError(
                f"{board.where}: dpukit is not installed for the board's `{python}`; install "
                "it there once: pip install 'dpukit[board]'"
            )
        raise DeployError(
            f"{board.where}: `{python}` failed on the board: {_last_line(result.stderr)}"
        )
    version, _, python_version = str(result.stdout).strip().partition(" ")
    if version != __version__:
        say(
            f"warning: the board has dpukit {version}, this machine {__version__}: a program "
            "compiled here may not load there; upgrade the board's"
        )
    say(f"{board.where}: dpukit {version}, Python {python_version}")


async def _copy(asyncssh, sftp, board: Board, files: _Files, remote: PurePosixPath, say) -> None:
    try:
        await sftp.makedirs(str(remote), exist_ok=True)
        for stale in ("images", "report"):
            if await sftp.exists(str(remote / stale)):
                await sftp.rmtree(str(remote / stale))
        await sftp.put([str(files.program), *map(str, files.overlay)], str(remote))
        if files.images is not None:
            say(f"copying {files.images} to {board.where} {remote}/images")
            await sftp.put(str(files.images), str(remote / "images"), recurse=True)
    except (asyncssh.SFTPError, OSError) as exc:
        raise DeployError(f"{board.where}: copying to {remote} failed: {exc}") from None


def _command(python: str, files: _Files, remote: PurePosixPath, backend: str,
             script_args: list[str]) -> str:  # fmt: skip
    args = [str(remote / files.program.name)]
    if files.images is not None:
        args.append(str(remote / "images"))
    args += ["--backend", backend, "--out", str(remote / "report" / REPORT)]
    if files.overlay:
        args += ["--overlay", str(remote / files.overlay[0].name)]
    args += list(script_args)
    return f"{_python(python)} -u -m {REMOTE_SCRIPT} {shlex.join(args)}"  # -u: lines as they come


async def _run(conn, command: str, say) -> tuple[int | None, str, list[str]]:
    """Run `command`, passing its lines to `say` as they come; its exit status, its whole
    output (stdout and stderr as they interleaved) and its stderr lines."""
    log: list[str] = []
    errors: list[str] = []
    process = await conn.create_process(command, errors="replace")  # any bytes the board says

    async def pump(stream, into: list[str] | None) -> None:
        async for line in stream:
            if not line:  # the end of the stream
                continue
            line = line.rstrip("\n")
            log.append(line)
            if into is not None:
                into.append(line)
            say(line)

    await asyncio.gather(pump(process.stdout, None), pump(process.stderr, errors))
    await process.wait(check=False)
    return process.exit_status, "\n".join(log) + "\n", errors


def _failure(board: Board, status, errors: list[str], log: Path) -> str:
    said = next((e for e in reversed(errors) if e.startswith("error: ")), None)
    if said is not None:
        return f"{board.where}: the board script failed: {said.removeprefix('error: ')}"
    how = f"exit status {status}" if status is not None else "killed by a signal"
    last = next((e for e in reversed(errors) if e.strip()), "no message")
    return f"{board.where}: the board script failed ({how}): {last.strip()}; the log is in {log}"


def _python(python: str) -> str:
    """The board's Python command as a shell word list (it may be `sudo -E /path/python`)."""
    return shlex.join(shlex.split(python))


def _last_line(text: object) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"
