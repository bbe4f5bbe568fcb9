"""Mutation results and the report of ``make mutate`` (``tests/mutation/run.py``).

Reads mutmut's results from a staged tree, scores them per trust-core module (``scope.toml``)
leaving out the listed equivalent mutants (``equivalent.toml``), and writes the per-module table
to the terminal and ``reports/mutation.md``. Staging and running mutmut stay in ``run.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "mutation"
REPORT = ROOT / "reports" / "mutation.md"
SCOPE_FILE = HERE / "scope.toml"
EQUIVALENT_FILE = HERE / "equivalent.toml"
KILLED = {"killed", "timeout", "segfault"}  # the test run failed, timed out or crashed


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


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
    # the report itself does not count: it is rewritten by every run
    changed = git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports/mutation.md"
    )
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
        tree = ast.parse(source_of(staged, package_dirs).read_text(encoding="utf-8"))
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


def source_of(staged: str, package_dirs: dict[str, str]) -> Path:
    """The file in this checkout that is staged at ``staged``."""
    parts = staged.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        folder = package_dirs.get(".".join(parts[:cut]))
        if folder is not None:
            return ROOT / folder / "/".join(parts[cut:])
    raise KeyError(staged)
