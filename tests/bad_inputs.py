"""The bad-input battery's contract, shared by every tests/test_bad_*.py file.

A user error (a malformed model, program or input file, an impossible option) must end in
the project's own exception type, shown by the CLI as one `error: ...` line that names the
file, node or field, exit status 1, and never a traceback, a hang or a runaway allocation.
Each case runs in a child process so the bound on its time and memory is enforced rather
than hoped for: the child is killed at the time limit, its address space is capped (so a
runaway cannot take the machine down), and its peak resident memory is read from wait4.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

SECONDS = 60.0  # generous for a 2-core machine running the suite on both cores
PEAK_RSS_MB = 1024  # python + onnxruntime + a small model stay far below this
ADDRESS_SPACE_GB = 6  # the hard cap that turns a runaway into a MemoryError, not an OOM kill


@dataclass
class Outcome:
    argv: list[str]
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float

    def describe(self) -> str:
        return (
            f"{' '.join(self.argv)}\n  exit {self.returncode} after {self.seconds:.1f} s, "
            f"peak RSS {self.peak_rss_mb:.0f} MB\n  stderr: {self.stderr[-2000:]!r}"
        )


def _limit_address_space() -> None:
    cap = ADDRESS_SPACE_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = SECONDS) -> Outcome:
    """Run a command in a child process under the battery's time and memory bounds."""
    env = {**os.environ, "COLUMNS": "250", "PYTHONFAULTHANDLER": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            preexec_fn=_limit_address_space,
            start_new_session=True,
        )
        # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would mix in every earlier
        # child of the test worker, such as a compiler run by another test).
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        killed = seconds > timeout
        return Outcome(
            argv,
            None if killed else proc.returncode,
            out.read(),
            err.read(),
            seconds,
            usage.ru_maxrss / 1024,
        )


def cli(*args: str | Path, cwd: Path | None = None, timeout: float = SECONDS) -> Outcome:
    """`dpukit ARGS...` as a user runs it."""
    return run([sys.executable, "-m", "dpukit.cli", *map(str, args)], cwd=cwd, timeout=timeout)


_API_PRELUDE = """\
import sys
from dpukit.errors import DpuKitError
try:
{body}
except DpuKitError as exc:
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    sys.exit(1)
"""


def api(code: str, *, cwd: Path | None = None, timeout: float = SECONDS) -> Outcome:
    """Python API calls as a notebook makes them; a DpuKitError becomes the one error line,
    anything else escapes as the traceback the battery forbids."""
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    return run([sys.executable, "-c", _API_PRELUDE.format(body=body)], cwd=cwd, timeout=timeout)


def assert_user_error(outcome: Outcome, *mentions: str | Path) -> str:
    """The contract above; ``mentions`` (file, node or field names) must appear in the line."""
    assert outcome.returncode is not None, f"killed after {SECONDS:.0f} s:\n{outcome.describe()}"
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.describe()
    assert outcome.returncode == 1, outcome.describe()
    line = outcome.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, outcome.describe()
    for m in mentions:
        assert str(m) in line, f"the error does not name {str(m)!r}:\n{outcome.describe()}"
    assert outcome.seconds < SECONDS, outcome.describe()
    assert outcome.peak_rss_mb < PEAK_RSS_MB, outcome.describe()
    return line
