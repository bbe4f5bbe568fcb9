"""Every test the README's trust-model table cites as proof exists, in the module it names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _trust_table() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Trust model: who holds what", 1)[1].split("\n#", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "test_" in line]


def test_every_cited_test_exists_in_the_cited_module() -> None:
    rows = _trust_table()
    assert len(rows) >= 9, "the trust-model table lost rows"
    for row in rows:
        proof = row.rstrip(" |").rsplit("|", 1)[1]
        for module, names in re.findall(r"`(test_\w+\.py)`: ([^;]*)", proof):
            source = (ROOT / "tests" / "security" / module).read_text(encoding="utf-8")
            for name in re.findall(r"`(test_\w+)`", names):
                assert re.search(rf"def {name}\(", source), f"{module} has no {name}"
