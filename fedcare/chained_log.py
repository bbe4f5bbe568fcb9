"""An append-only JSON-lines log whose lines are hash-chained and whose length is anchored.

Shared by the privacy ledger and the site audit log. Each line carries ``chain`` =
sha256(previous chain + canonical JSON of the entry). The file is rewritten atomically (temp
file, fsync, rename) on every append, then a head file records the entry count and the last
chain value, also atomically. On read: a torn last line, an edited or reordered line, or fewer
entries than the head are refused; exactly one entry more than the head is a crash between the
two writes and is accepted (it counts more, never less).

Concurrency: an append holds an exclusive lock (:mod:`fedcare.locking`, ``<log>.lock``) from the
read that verifies the chain to the head write, so appends from several processes serialise
instead of each rewriting the file from a stale copy (which loses entries or leaves the head
disagreeing with the log, a ledger refused for good). A read holds the shared lock, so it never
sees a new log beside an old head.
"""

from __future__ import annotations

import errno
import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fedcare.atomic import remove_stale_temp_files, write_bytes_atomic, write_json_atomic
from fedcare.locking import LockTimeoutError, file_lock, lock_path

GENESIS = "0" * 64
APPEND_LOCK_TIMEOUT_S = 120.0  # an append takes milliseconds; a longer wait means a stuck writer


class ChainBrokenError(Exception):
    """The log was torn, edited, reordered or shortened; the message says how."""


def canonical(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), allow_nan=False)


def next_chain(previous: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256((previous + canonical(entry)).encode("utf-8")).hexdigest()


class ChainedJsonLog:
    """See module docstring; ``what`` names the log in messages ("event", "entry")."""

    def __init__(self, path: Path, head_path: Path, what: str = "entry") -> None:
        self.path = path
        self.head_path = head_path
        self.what = what

    @property
    def lock_path(self) -> Path:
        """The lock file next to the log (see module docstring)."""
        return lock_path(self.path)

    def read(self) -> list[dict[str, Any]]:
        """Every entry, verified; raises :class:`ChainBrokenError` on any damage."""
        with self._shared():
            entries, chains = self._read_verified()
            self._check_head(len(entries), chains)
        return entries

    def append(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """Durably add ``entry``; returns every entry including it.

        Raises :class:`fedcare.locking.LockTimeoutError` if another writer holds the log for
        longer than ``APPEND_LOCK_TIMEOUT_S``; nothing is written then.
        """
        with file_lock(self.lock_path, timeout=APPEND_LOCK_TIMEOUT_S):
            entries, chains = self._read_verified()
            self._check_head(len(entries), chains)
            chain = next_chain(chains[-1] if chains else GENESIS, entry)
            text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
            line = json.dumps({**entry, "chain": chain}, sort_keys=True, allow_nan=False) + "\n"
            write_bytes_atomic(self.path, (text + line).encode("utf-8"))
            write_json_atomic(self.head_path, {"entries": len(entries) + 1, "chain": chain})
            for path in (self.path, self.head_path):  # a crash mid-write left its temp file
                remove_stale_temp_files(path)
        return [*entries, entry]

    @contextmanager
    def _shared(self) -> Iterator[None]:
        """The shared lock if the lock file exists and opens. A reader never creates it (see
        :mod:`fedcare.locking`); without one no append has run since logs were locked, and an
        auditor's copy or a read-only mount, which it cannot open, has no writer."""
        with ExitStack() as stack:
            try:
                stack.enter_context(
                    file_lock(
                        self.lock_path, shared=True, timeout=APPEND_LOCK_TIMEOUT_S, create=False
                    )
                )
            except LockTimeoutError:
                raise
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM):
                    raise
            yield

    def _read_verified(self) -> tuple[list[dict[str, Any]], list[str]]:
        if not self.path.exists():
            return [], []
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise ChainBrokenError("its last line is incomplete (torn write)")
        entries: list[dict[str, Any]] = []
        chains: list[str] = []
        previous = GENESIS
        for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            try:
                entry: dict[str, Any] = json.loads(line)
                chain = str(entry.pop("chain"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ChainBrokenError(
                    f"line {number} is not a valid {self.what} ({exc})"
                ) from None
            if next_chain(previous, entry) != chain:
                raise ChainBrokenError(f"line {number} was edited or reordered (hash chain broken)")
            entries.append(entry)
            chains.append(chain)
            previous = chain
        return entries, chains

    def _check_head(self, count: int, chains: list[str]) -> None:
        if not self.head_path.exists():
            if count:
                raise ChainBrokenError(f"{self.head_path.name} is missing")
            return
        try:
            head = json.loads(self.head_path.read_text(encoding="utf-8"))
            expected, chain = int(head["entries"]), str(head["chain"])
        except (ValueError, KeyError, TypeError):
            raise ChainBrokenError(f"{self.head_path.name} is unreadable") from None
        if count < expected:
            raise ChainBrokenError(
                f"it holds {count} {self.what}(s) but its head recorded {expected}"
            )
        if expected and chains[expected - 1] != chain:
            raise ChainBrokenError(f"its {self.what}s disagree with the head's hash")
        if count > expected + 1:
            raise ChainBrokenError(
                f"it holds {count} {self.what}(s), more than head {expected} + 1"
            )
