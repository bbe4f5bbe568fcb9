"""Advisory file locks (``fcntl.flock``) that serialise a site's writers across processes.

Why ``flock``: the lock belongs to the open file description, so two processes (a second
``fedcare`` command, a second SuperNode run) and two threads that each open the lock file exclude
each other, and the kernel releases it when its holder dies: a crashed site never leaves a stale
lock behind. The lock lives in its own file next to the data it guards (``<file>.lock``), because
the guarded files are replaced by rename on every write and a lock on a replaced inode guards
nothing. Lock files are created 0600 and opened read-only (``flock`` needs no write access); they
hold no data. A reader passes ``create=False`` so that, run by another user (an auditor, root),
it never leaves a lock file the site's own user cannot open.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_S = 0.02


class LockTimeoutError(TimeoutError):
    """Another process held the lock for longer than the caller was willing to wait."""


def lock_path(path: Path) -> Path:
    """The lock file that guards ``path``: ``<path>.lock`` in the same folder."""
    return path.with_name(path.name + ".lock")


@contextmanager
def file_lock(
    path: Path, *, shared: bool = False, timeout: float | None = None, create: bool = True
) -> Iterator[None]:
    """Hold an exclusive (or ``shared``) lock on the lock file ``path`` for the ``with`` body.

    ``timeout`` None waits as long as it takes; otherwise :class:`LockTimeoutError` is raised
    after ``timeout`` seconds without the lock, and nothing has been done under it. With
    ``create`` False a missing lock file raises :class:`FileNotFoundError`.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags |= os.O_CREAT
    fd = os.open(path, flags, 0o600)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if timeout is None:
            fcntl.flock(fd, mode)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeoutError(
                            f"{path}: still locked by another process after {timeout:g} s"
                        ) from None
                    time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
