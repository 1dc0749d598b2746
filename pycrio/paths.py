"""Where the package's own files are: the helper executables built beside the code."""

from __future__ import annotations

import os

_BIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")


def helper_binary(name: str) -> str:
    """Absolute path of a helper executable (pycrio-pause, pycrio-monitor) installed in the package."""
    path = os.path.join(_BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: rebuild pycrio (make build)")
    return path
