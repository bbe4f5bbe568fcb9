"""Mutation testing of the trust core (mutmut 3): ``make mutate``; a fast check in ``make test``.

mutmut mutates the files under its ``source_paths`` and imports them by the dotted name of their
path, so it needs the tree laid out as Python imports it. fedcare's is not: ``server/`` installs
as ``fedcare.server`` (``[tool.setuptools] package-dir``). This script stages a copy of the tree
in ``build/mutation/`` with that layout (``fedcare/``, ``fedcare/server/``, ``fedcare/client/``,
...) plus ``tests/`` and ``pyproject.toml``, runs ``mutmut run`` there (mutmut makes and runs the
mutants, picking for each mutant only the tests that reached its function), and turns mutmut's
results into the per-module table and ``reports/mutation.md``.

What is mutated and which tests run: ``[tool.mutmut]`` in pyproject.toml. Which functions count
and the promise each module keeps: ``tests/mutation/scope.toml``. Mutants that cannot change
behaviour: ``tests/mutation/equivalent.toml``, each with its reason, left out of the score.

    python tests/mutation/run.py            # full fresh run, table, reports/mutation.md
    python tests/mutation/run.py --resume   # reuse build/mutation/, re-run what was not killed
    python tests/mutation/run.py --report   # only rebuild the table from the last results
    python tests/mutation/run.py --quick    # make test: equivalents still exist, locking 100 %
"""

from __future__ import annotations

import argparse
import filecmp
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from results import (
    KILLED,
    ROOT,
    Mutant,
    equivalents,
    function_of,
    in_scope,
    load_results,
    one_line,
    pyproject,
    report,
    scope,
    source_of,
    stale_equivalents,
)

STAGE = ROOT / "build" / "mutation"
QUICK_STAGE = ROOT / "build" / "mutation-quick"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")

# The fast subset in `make test`: one whole trust-core module, every mutant killed.
QUICK_MODULE = "fedcare/locking.py"
QUICK_TESTS = [  # chained_log (152 mutants) took minutes here
    "tests/unit/test_ledger.py",
    "--deselect=tests/unit/test_ledger.py::test_privacy_report_prints_the_ledger_and_its_epsilon",
]


# -- staging -------------------------------------------------------------------------------


def sync_file(source: Path, target: Path) -> None:
    """Copy with its mtime (mutmut re-mutates a file whose source is newer than its mutants)."""
    if target.exists() and filecmp.cmp(source, target, shallow=False):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def sync_tree(source: Path, target: Path, prune: bool, hold_back: tuple[str, ...] = ()) -> None:
    wanted: set[Path] = set()
    for path in source.rglob("*"):
        if path.is_file() and not any(p in {"__pycache__", ".hypothesis"} for p in path.parts):
            if path.suffix == ".pyc" or any(
                fnmatch.fnmatch(str(path.relative_to(ROOT)), glob) for glob in hold_back
            ):
                continue
            relative = path.relative_to(source)
            wanted.add(relative)
            sync_file(path, target / relative)
    if prune and target.exists():
        for path in target.rglob("*"):
            if path.is_file() and path.relative_to(target) not in wanted:
                path.unlink()


def stage(
    where: Path, settings: dict[str, Any] | None = None, hold_back: tuple[str, ...] = ()
) -> None:
    """The tree as the installed package lays it out, with the tests and pyproject.toml.

    ``settings`` replaces keys of ``[tool.mutmut]`` in the staged pyproject.toml (the quick run).
    ``hold_back``: test files (globs) not copied yet; a later ``--resume`` brings them in, and
    mutmut measures them as new tests without starting over.
    """
    package_dirs: dict[str, str] = pyproject()["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(package_dirs.items(), key=lambda item: item[0].count(".")):
        sync_tree(ROOT / folder, where / name.replace(".", "/"), prune=False)
    sync_tree(ROOT / "tests", where / "tests", prune=True, hold_back=hold_back)
    sync_file(ROOT / "README.md", where / "README.md")
    if (where / "mutants" / "tests").exists():  # mutmut copies tests/ in but never prunes
        sync_tree(ROOT / "tests", where / "mutants" / "tests", prune=True, hold_back=hold_back)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if settings:
        text = _with_mutmut_settings(text, settings)
    target = where / "pyproject.toml"
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


def _with_mutmut_settings(text: str, settings: dict[str, Any]) -> str:
    """``text`` with its ``[tool.mutmut]`` table rewritten at the end, ``settings`` merged in."""
    merged = tomllib.loads(text)["tool"]["mutmut"] | settings
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line.strip() == "[tool.mutmut]"
        if not inside:
            lines.append(line)
    lines += ["", "[tool.mutmut]", *(f"{k} = {json.dumps(v)}" for k, v in merged.items())]
    return "\n".join(lines) + "\n"


def run_mutmut(where: Path, jobs: int, names: list[str]) -> None:
    env = os.environ | {
        "OMP_NUM_THREADS": "1",  # torch in forked workers: no thread pool to inherit
        "MKL_NUM_THREADS": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    mutmut = Path(sys.executable).with_name("mutmut")
    command = [str(mutmut), "run", "--max-children", str(jobs), *names]
    result = subprocess.run(command, cwd=where, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"mutmut run failed with exit code {result.returncode}")


# -- the fast subset -----------------------------------------------------------------------


def quick(jobs: int) -> int:
    """Equivalents still name the same change, and every mutant of one module is killed."""
    started = time.monotonic()
    problems = stale_equivalents(generated_mutants())
    shutil.rmtree(QUICK_STAGE, ignore_errors=True)
    settings = {
        "only_mutate": [QUICK_MODULE],
        "pytest_add_cli_args_test_selection": QUICK_TESTS,
    }
    stage(QUICK_STAGE, settings)
    run_mutmut(QUICK_STAGE, jobs, [])
    listed = equivalents()
    mutants = [m for m in load_results(QUICK_STAGE, with_changes=True) if m.path == QUICK_MODULE]
    alive = [m for m in mutants if m.status not in KILLED and m.key not in listed]
    problems += [f"{m.key} {m.status}: {m.change}" for m in alive]
    took = time.monotonic() - started
    if problems:
        print(f"mutation check FAILED ({took:.0f} s):\n  " + "\n  ".join(problems))
        return 1
    print(f"mutation check: {len(mutants)} mutants of {QUICK_MODULE} all killed or listed")
    print(f"equivalent.toml: all {len(listed)} entries still name their mutant ({took:.0f} s)")
    return 0


def generated_mutants() -> list[Mutant]:
    """The listed equivalents' mutants as mutmut makes them now (no tests run), with changes."""
    from difflib import unified_diff

    import libcst as cst
    from mutmut.mutation.diff_apply import read_mutant_function, read_original_function
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name

    package_dirs: dict[str, str] = pyproject()["tool"]["setuptools"]["package-dir"]
    listed = equivalents()
    mutants = []
    for staged in pyproject()["tool"]["mutmut"]["only_mutate"]:
        module = staged[: -len(".py")].replace("/", ".")
        if not any(key.startswith(module + ".x") for key in listed):
            continue
        source = source_of(staged, package_dirs).read_text(encoding="utf-8")
        mutated = mutate_file_contents(staged, source)
        tree = cst.parse_module(mutated.code)  # once: parsing per mutant is quadratic
        for name in mutated.mutant_names:
            key = get_mutant_name(Path(staged), name)
            if key not in listed:
                continue
            old, new = (
                cst.Module([read(tree, key)]).code.strip().split("\n")
                for read in (read_original_function, read_mutant_function)
            )
            diff = "\n".join(unified_diff(old, new, lineterm=""))
            mutants.append(Mutant(key, staged, function_of(key), "generated", one_line(diff)))
    return mutants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="reuse build/mutation/")
    mode.add_argument("--report", action="store_true", help="only rebuild the report")
    mode.add_argument("--quick", action="store_true", help="the fast check in make test")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this score")
    parser.add_argument(
        "--hold-back-tests", action="append", default=[], metavar="GLOB",
        help="test files not to use yet (e.g. ones being written); a later --resume adds them",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        return quick(args.jobs)
    started = time.monotonic()
    if not args.report:
        if not args.resume:
            shutil.rmtree(STAGE, ignore_errors=True)
        stage(STAGE, hold_back=tuple(args.hold_back_tests))
        run_mutmut(STAGE, args.jobs, [])
        if args.resume:  # a new test may kill what survived before: run those again
            modules = scope()
            again = [  # and a timeout on a loaded machine is no proof: run those again too
                m.key
                for m in load_results(STAGE, with_changes=False)
                if in_scope(m, modules) and (m.status not in KILLED or m.status == "timeout")
            ]
            if again:
                run_mutmut(STAGE, args.jobs, again)
    elapsed = None if args.report else time.monotonic() - started
    score = report(STAGE, elapsed, args.jobs)
    return 1 if score < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
