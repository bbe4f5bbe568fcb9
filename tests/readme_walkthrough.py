"""The README's walkthroughs, run as a user pastes them (issue #9).

A README command that no longer works is the first thing a new user meets, and the end-to-end
tests cannot catch it: they call fedcare with absolute temporary paths, the README with relative
ones from the repository root. So the walkthrough tests take each ``bash`` block of a README
section as written, run it with ``bash`` in a fresh copy of the repository (the same relative
paths, the same ``.venv``), and check its exit code and the lines a user would look for.

Each block runs under ``set -eo pipefail``: the first command that fails stops the block, and the
error names its README line and the command as written. Whatever a failed block left running
(a SuperLink, site daemons) is stopped by its pid file afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Not copied: what a fresh clone does not hold, and what the walkthroughs write themselves.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "runs", "fed", "build", "htmlcov", "reports", "*.egg-info", "__pycache__",
    ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis", ".coverage*", "my-run.toml",
)  # fmt: skip
PROLOGUE_LINES = 2  # the two lines run_block puts before the block


@dataclass(frozen=True)
class ShellBlock:
    """One fenced ``bash`` block: the heading it sits under and the README line of its fence."""

    heading: str
    line: int
    text: str


def shell_blocks(text: str, heading: str) -> list[ShellBlock]:
    """The ``bash`` blocks directly under ``heading`` (not under its sub-headings)."""
    blocks: list[ShellBlock] = []
    current, fence, body, opened = "", None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None and line.startswith("```"):
            fence, body, opened = line[3:].strip(), [], number
        elif fence is not None and line.startswith("```"):
            if fence == "bash" and current == heading:
                blocks.append(ShellBlock(current, opened, "\n".join(body) + "\n"))
            fence = None
        elif fence is not None:
            body.append(line)
        elif line.startswith("#"):
            current = line.lstrip("#").strip()
    return blocks


def readme_blocks(heading: str) -> list[ShellBlock]:
    blocks = shell_blocks(README.read_text(encoding="utf-8"), heading)
    assert blocks, f"README.md has no bash block under the heading {heading!r}"
    return blocks


def repository_copy(destination: Path) -> Path:
    """The repository as a fresh clone holds it, with the ``.venv`` that runs these tests."""
    shutil.copytree(ROOT, destination, ignore=NOT_COPIED)
    (destination / ".venv").symlink_to(_venv())
    return destination


def _venv() -> Path:
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    return ROOT / ".venv"


def run_block(block: ShellBlock, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``block`` run by bash in ``cwd``; the first failing command stops it and is named."""
    offset = block.line - PROLOGUE_LINES
    prologue = (
        "set -eo pipefail\n"
        f"trap 'echo \"README.md line $((LINENO + {offset})): exit $?: $BASH_COMMAND\" >&2' ERR\n"
    )
    assert prologue.count("\n") == PROLOGUE_LINES
    try:
        return subprocess.run(
            ["bash", "-c", prologue + block.text], cwd=cwd, env=_user_environment(),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    finally:
        stop_everything_started_in(cwd)


def _user_environment() -> dict[str, str]:
    """This environment as a user's shell has it: the venv is not on PATH until a block says so."""
    venv_bin = str(_venv() / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    environment = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return environment | {"PATH": path, "COLUMNS": "200"}


def stop_everything_started_in(folder: Path) -> None:
    """Stop every daemon whose pid file lies under ``folder`` (a block that failed half-way)."""
    from fedcare.processes import Daemon

    for top in sorted(folder.iterdir()):
        if top.is_dir() and not top.is_symlink():  # not into the shared .venv
            for pid_file in sorted(top.rglob("*.pid")):
                Daemon(pid_file).stop()


def run_section(heading: str, destination: Path, timeout: float) -> tuple[Path, str]:
    """Every block under ``heading``, in order, in a fresh repository copy at ``destination``;
    asserts that each succeeded. Returns the copy and what the blocks printed on stdout."""
    repository = repository_copy(destination)
    output = ""
    for block in readme_blocks(heading):
        result = run_block(block, repository, timeout)
        assert result.returncode == 0, failure(result)
        output += result.stdout
    return repository, output


def failure(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed block printed last, for the assertion message."""
    return f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-3000:]}\n" + (
        f"--- stdout ---\n{result.stdout[-2000:]}"
    )
