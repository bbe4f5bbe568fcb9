"""`make coverage`: the trust core's coverage per module from the combined data (.coverage).

Prints one line per trust-core module and exits 1 if any is under FLOOR percent, naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[2]
FLOOR = 80.0
TRUST_CORE = (
    "privacy/*.py",
    "fedcare/chained_log.py",
    "fedcare/locking.py",
    "fedcare/datagate.py",
    "fedcare/deidentify.py",
    "fedcare/superexec.py",
    "server/validation.py",
    "server/strategies.py",
    "server/ledger_heads.py",
    "server/site_registry.py",
    "server/frontdoor.py",
    "client/rounds.py",
    "client/policy.py",
    "client/executor.py",
    "server/executor.py",
)


def main() -> int:
    cov = coverage.Coverage(data_file=str(ROOT / ".coverage"))
    cov.load()
    modules = sorted(
        path.relative_to(ROOT).as_posix()
        for pattern in TRUST_CORE
        for path in ROOT.glob(pattern)
        if path.stat().st_size > 0  # an empty __init__.py has nothing to cover
    )
    below = []
    print(f"{'trust-core module':<32} {'stmts':>6} {'miss':>6} {'cover':>7}")
    for module in modules:
        _, statements, _, missing, _ = cov.analysis2(str(ROOT / module))
        if not statements:
            continue
        percent = 100.0 * (len(statements) - len(missing)) / len(statements)
        print(f"{module:<32} {len(statements):>6} {len(missing):>6} {percent:>6.1f}%")
        if percent < FLOOR:
            below.append(f"{module} ({percent:.1f} %)")
    if below:
        print(f"trust core under {FLOOR:.0f} %: {', '.join(below)}")
        return 1
    print(f"trust core: every module at or above {FLOOR:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
