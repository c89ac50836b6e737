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
