"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader therefore sees either the previous good file or the new one, never a torn write.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Remove the temp files that writes of ``path`` interrupted by a crash left beside it
    (:func:`write_bytes_atomic` names them ``.<name>.<random>.tmp``); returns them.

    Call it only while holding the lock that serialises every writer of ``path``: a temp file
    of a write in flight would otherwise be taken from under it.
    """
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    for temp in stale:
        temp.unlink(missing_ok=True)
    return stale
