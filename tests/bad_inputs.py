"""The bad-input battery's contract, shared by every tests/test_bad_*.py file.

A user error (a malformed model, program or input file, an impossible option) must end in
the project's own exception type, shown by the CLI as one `error: ...` line that names the
file, node or field, exit status 1, and never a traceback, a hang or a runaway allocation.
Each case runs in a child process so the bound on its time and memory is enforced rather
than hoped for: the child is killed at the time limit, its address space is capped (so a
runaway cannot take the machine down), and it reports its own peak resident memory as it
exits (the kernel's VmHWM: wait4's ru_maxrss would carry over the forking test worker's).
"""

from __future__ import annotations

import os
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
    peak_rss_mb: float  # nan: the child died before it could report
    limit_s: float

    def describe(self) -> str:
        return (
            f"{' '.join(self.argv)}\n  exit {self.returncode} after {self.seconds:.1f} s, "
            f"peak RSS {self.peak_rss_mb:.0f} MB\n  stderr: {self.stderr[-2000:]!r}"
        )


# Every case's child starts here: it caps its own address space, makes thread pools and
# malloc arenas small (they reserve address space by the core), arranges to write its peak
# RSS where the parent reads it, then runs `dpukit` (argv) or a snippet (code).
_LAUNCHER = """\
import atexit, os, resource, runpy, sys
cap = int(os.environ["BAD_INPUT_ADDRESS_SPACE"])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            with open(os.environ["BAD_INPUT_PEAK_FILE"], "w") as f:
                f.write(line.split()[1])
atexit.register(_peak)
mode, payload = sys.argv[1], sys.argv[2:]
if mode == "cli":
    sys.argv = ["dpukit", *payload]
    runpy.run_module("dpukit.cli", run_name="__main__")
else:
    sys.argv = ["-c"]
    exec(compile(payload[0], "<case>", "exec"), {"__name__": "__main__"})
"""


def run(mode: str, payload: list[str], *, cwd: Path | None, timeout: float) -> Outcome:
    """Run a case in a child process under the battery's time and memory bounds."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak_kb"
        env = {
            **os.environ,
            "COLUMNS": "250",
            "PYTHONFAULTHANDLER": "1",
            "BAD_INPUT_ADDRESS_SPACE": str(ADDRESS_SPACE_GB << 30),
            "BAD_INPUT_PEAK_FILE": str(peak_file),
            "MALLOC_ARENA_MAX": "2",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        argv = [sys.executable, "-c", _LAUNCHER, mode, *payload]
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        killed = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        seconds = time.perf_counter() - start
        peak = int(peak_file.read_text()) / 1024 if peak_file.is_file() else float("nan")
        shown = ["dpukit", *payload] if mode == "cli" else ["python", "-c", *payload]
        return Outcome(shown, None if killed else proc.returncode, out, err, seconds, peak, timeout)


def cli(*args: str | Path, cwd: Path | None = None, timeout: float = SECONDS) -> Outcome:
    """`dpukit ARGS...` as a user runs it."""
    return run("cli", [str(a) for a in args], cwd=cwd, timeout=timeout)


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
    return run("api", [_API_PRELUDE.format(body=body)], cwd=cwd, timeout=timeout)


def assert_user_error(outcome: Outcome, *mentions: str | Path) -> str:
    """The contract above; ``mentions`` (file, node or field names) must appear in the line."""
    assert outcome.returncode is not None, (
        f"killed after {outcome.limit_s:.0f} s:\n{outcome.describe()}"
    )
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.describe()
    assert outcome.returncode == 1, outcome.describe()
    line = outcome.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, outcome.describe()
    for m in mentions:
        assert str(m) in line, f"the error does not name {str(m)!r}:\n{outcome.describe()}"
    assert outcome.peak_rss_mb < PEAK_RSS_MB, outcome.describe()
    return line


def error_line(capsys) -> str:
    """The same contract for a command run in-process (`dpukit.cli.main` under pytest's
    capsys): the one line it printed to stderr."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: "), captured
    assert "\n" not in err, err
    assert "Traceback" not in captured.err + captured.out
    return err
