"""Output files, checked before the run whose results they will hold (a run of minutes on a
board must not end in "cannot write"). No rich here: the board scripts use it too."""

from __future__ import annotations

import os
from pathlib import Path


def why_unwritable(path: str | Path) -> str | None:
    """Why no file can be written at `path` (a folder in its place, a file in the way of its
    folder, a folder without write permission), or None if one can."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"no permission to write in {parent}"
            return None
    return None


def write_file(path: str | Path, data: str | bytes) -> str | None:
    """Write a file (text as UTF-8), creating its folder; None once written, else why not, in
    one line (a folder in the way, a full disk, no permission)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a full disk may only show when the file is closed
            f.write(data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        # mkdir reports a file in the way of a folder as "File exists"
        if isinstance(exc, FileExistsError):
            return f"{path.parent} is not a directory"
        return str(exc.strerror or exc)
    return None
