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
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "mutation"
STAGE = ROOT / "build" / "mutation"
QUICK_STAGE = ROOT / "build" / "mutation-quick"
REPORT = ROOT / "reports" / "mutation.md"
SCOPE_FILE = HERE / "scope.toml"
EQUIVALENT_FILE = HERE / "equivalent.toml"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")

# The fast subset in `make test`: one whole trust-core module, every mutant killed.
QUICK_MODULE = "fedcare/locking.py"
QUICK_TESTS = [  # chained_log (152 mutants) took minutes here
    "tests/unit/test_ledger.py",
    "--deselect=tests/unit/test_ledger.py::test_privacy_report_prints_the_ledger_and_its_epsilon",
]

KILLED = {"killed", "timeout", "segfault"}  # the test run failed, timed out or crashed


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


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


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    key: str  # mutmut's id, e.g. fedcare.chained_log.x_next_chain__mutmut_2
    path: str  # staged path, e.g. fedcare/chained_log.py
    function: str  # as written in scope.toml: "name" or "Class.method"
    status: str
    change: str = ""  # the one-line diff


@dataclass
class ModuleScore:
    path: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def scored(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in {"equivalent", "not checked"})

    @property
    def killed(self) -> int:
        return self.counts["killed"] + self.counts["segfault"]

    @property
    def score(self) -> float:
        detected = self.killed + self.counts["timeout"]
        return 100.0 * detected / self.scored if self.scored else 100.0


def function_of(key: str) -> str:
    mangled = key.partition("__mutmut_")[0].rpartition(".")[2]
    if mangled.startswith("x_"):
        return mangled[2:]
    _, cls, method = mangled.split("ǁ")  # mutmut's "xǁClassǁmethod"
    return f"{cls}.{method}"


def one_line(diff: str) -> str:
    """``old`` → ``new`` from a unified diff of one mutant."""
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    old = " / ".join(line[1:].strip() for line in body if line.startswith("-"))
    new = " / ".join(line[1:].strip() for line in body if line.startswith("+"))
    return f"`{old}` → `{new}`"


def load_results(where: Path, with_changes: bool) -> list[Mutant]:
    from mutmut.stats import status_by_exit_code

    paths = pyproject()["tool"]["mutmut"]["only_mutate"]
    mutants: list[Mutant] = []
    previous = Path.cwd()
    os.chdir(where)  # mutmut reads its config and the mutants relative to the working directory
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        for path in paths:
            meta = Path("mutants") / f"{path}.meta"
            if not meta.exists():
                continue
            codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
            for key, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
                change = one_line(get_diff_for_mutant(key, path=path)) if with_changes else ""
                status = status_by_exit_code[code]
                mutants.append(Mutant(key, path, function_of(key), status, change))
    finally:
        os.chdir(previous)
    return mutants


def _natural(key: str) -> tuple[str, int]:
    stem, _, number = key.rpartition("__mutmut_")
    return stem, int(number)


def scope() -> dict[str, dict[str, Any]]:
    return dict(tomllib.loads(SCOPE_FILE.read_text(encoding="utf-8"))["modules"])


def equivalents() -> dict[str, dict[str, str]]:
    data = tomllib.loads(EQUIVALENT_FILE.read_text(encoding="utf-8"))
    return {entry["id"]: entry for entry in data.get("mutant", [])}


def stale_equivalents(mutants: list[Mutant]) -> list[str]:
    """Listed equivalents that no longer exist or are now another change (re-judge them)."""
    by_key = {m.key: m for m in mutants}
    problems = []
    for key, entry in equivalents().items():
        if not entry.get("reason", "").strip():
            problems.append(f"{key}: no reason given")
        elif key not in by_key:
            problems.append(f"{key}: no such mutant any more")
        elif by_key[key].change != entry["change"]:
            problems.append(f"{key}: is now {by_key[key].change}, listed as {entry['change']}")
    return problems


def in_scope(mutant: Mutant, modules: dict[str, dict[str, Any]]) -> bool:
    functions = modules.get(mutant.path, {}).get("functions")
    return functions is None or mutant.function in functions


# -- report --------------------------------------------------------------------------------

COLUMNS = (
    "module", "mutants", "killed", "survived", "no tests", "timeout", "equivalent", "not run",
    "score",
)  # fmt: skip


def table(scores: list[ModuleScore], total: ModuleScore) -> list[list[str]]:
    rows = []
    for s in [*scores, total]:
        c = s.counts
        survived = c["survived"] + c["suspicious"]
        rows.append(
            [
                s.path,
                str(s.scored),
                str(s.killed),
                str(survived),
                str(c["no tests"]),
                str(c["timeout"]),
                str(c["equivalent"]),
                str(c["not checked"]),
                f"{s.score:.1f} %" if s.scored else "n/a",
            ]
        )
    return rows


def plain(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(list(COLUMNS)), *(line(r) for r in rows)])


def markdown(rows: list[list[str]]) -> str:
    rule = "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1))
    head = "| " + " | ".join(COLUMNS) + " |\n|" + rule + "|\n"
    return head + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def report(where: Path, elapsed_s: float | None, jobs: int) -> float:
    modules = scope()
    listed = equivalents()
    mutants = load_results(where, with_changes=True)
    stale = stale_equivalents(mutants)
    scores = {path: ModuleScore(path) for path in modules}
    total = ModuleScore("trust core")
    outside: dict[str, Counter[str]] = {}
    survivors: list[Mutant] = []
    for m in mutants:
        if not in_scope(m, modules):
            outside.setdefault(m.path, Counter())[m.status] += 1
            continue
        status = "equivalent" if m.key in listed and m.key not in _stale_keys(stale) else m.status
        scores[m.path].counts[status] += 1
        total.counts[status] += 1
        if status not in KILLED | {"equivalent", "not checked"}:
            survivors.append(m)
    rows = table(list(scores.values()), total)
    print(plain(rows))
    commit = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no")
    dirty = " (with uncommitted changes)" if changed else ""
    lines = [
        "# Mutation testing of the trust core",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- commit: {commit}{dirty}",
        f"- command: `make mutate` (tests/mutation/run.py, mutmut {_mutmut_version()}, "
        f"{jobs} workers" + (f", {elapsed_s / 60:.1f} min)" if elapsed_s else ")"),
        "- what is mutated and which tests run: `[tool.mutmut]` in pyproject.toml; which "
        "functions count and each module's promise: tests/mutation/scope.toml",
        "- score = (killed + timeout) / mutants. *mutants* leaves out the equivalent mutants "
        "listed, each with its reason, in tests/mutation/equivalent.toml (they cannot change "
        "behaviour, so no test can kill them); *no tests* means no selected in-process test "
        "reaches the function, and counts as survived; *not run*: mutmut has not run it yet "
        "(an interrupted run), left out of the score.",
        "",
        markdown(rows),
        "",
        f"## Surviving mutants ({len(survivors)})",
        "",
    ]
    lines += [f"- `{m.key}` ({m.status}): {m.change}" for m in survivors] or ["None."]
    lines += ["", f"## Equivalent mutants, not scored ({len(listed)})", ""]
    lines += [f"- `{k}`: {e['change']} - {e['reason']}" for k, e in listed.items()] or ["None."]
    if stale:
        lines += ["", "## Stale entries in equivalent.toml (scored as run)", ""]
        lines += [f"- {p}" for p in stale]
    lines += ["", "## Outside the scored scope", ""]
    for path, counts in outside.items():
        done = sum(n for s, n in counts.items() if s in KILLED)
        why = " ".join(modules[path].get("outside", "").split())
        lines.append(
            f"- {path}: only {', '.join(modules[path]['functions'])} scored; "
            f"{sum(counts.values())} other mutants ({done} killed). {why}"
        )
    unmutated = decorated_functions()
    lines += [
        "",
        "## Not mutated by mutmut",
        "",
        "mutmut 3 mutates only code inside functions, and not functions with a decorator other "
        "than `@staticmethod`/`@classmethod` (it cannot put its trampoline around them); "
        "module-level tables (e.g. the de-identification name words and patterns) are not "
        "mutated either. In the trust core that leaves out: "
        + ", ".join(f"`{name}`" for name in unmutated)
        + ". Their promises are kept by example and property tests, not measured here.",
    ]
    if total.counts["not checked"]:
        lines[3:3] = [
            f"- PARTIAL RUN: {total.counts['not checked']} of the "
            f"{sum(total.counts.values())} scored mutants have not run yet; the score covers "
            "the others only."
        ]
    headline = f"trust core: {total.score:.1f} % killed"
    lines += ["", headline, ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines), encoding="utf-8")
    if stale:
        print("\nstale entries in tests/mutation/equivalent.toml:\n  " + "\n  ".join(stale))
    print(f"\nsurviving mutants: {len(survivors)} (listed in {REPORT.relative_to(ROOT)})")
    print(headline)
    return total.score


def decorated_functions() -> list[str]:
    """Trust-core functions mutmut leaves alone: decorated other than static/classmethod."""
    import ast

    package_dirs: dict[str, str] = pyproject()["tool"]["setuptools"]["package-dir"]
    found = []
    for staged in pyproject()["tool"]["mutmut"]["only_mutate"]:
        tree = ast.parse(_source_of(staged, package_dirs).read_text(encoding="utf-8"))
        module = staged[: -len(".py")].replace("/", ".")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            names = {ast.unparse(d) for d in node.decorator_list}
            if names and not names <= {"staticmethod", "classmethod"}:
                found.append(f"{module}.{node.name}")
    return sorted(found)


def _stale_keys(stale: list[str]) -> set[str]:
    return {p.split(":", 1)[0] for p in stale}


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


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
        source = _source_of(staged, package_dirs).read_text(encoding="utf-8")
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


def _source_of(staged: str, package_dirs: dict[str, str]) -> Path:
    """The file in this checkout that is staged at ``staged``."""
    parts = staged.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        folder = package_dirs.get(".".join(parts[:cut]))
        if folder is not None:
            return ROOT / folder / "/".join(parts[cut:])
    raise KeyError(staged)


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
