"""The task README states the sites as the code builds them."""

from __future__ import annotations

import re
from pathlib import Path

from fedcare.tasks.ncctg_lung.data import site_groups, site_rows, split_site

README = Path(__file__).parents[2] / "fedcare" / "tasks" / "ncctg_lung" / "README.md"


def test_readme_table_lists_every_site_with_its_sizes() -> None:
    text = README.read_text()
    rows = site_rows()
    for group in site_groups():
        train, test = split_site(rows[group.name])
        cells = (
            re.escape(group.name),
            ", ".join(str(i) for i in group.institutions),
            str(group.n_patients),
            str(int(rows[group.name].event.sum())),
            str(train.n),
            str(test.n),
        )
        row = r"^\|\s*" + r"\s*\|\s*".join(cells) + r"\s*\|$"
        assert re.search(row, text, re.M), f"README lacks the row {' | '.join(cells)}"
    table_rows = re.findall(r"^\| inst\S+ \|", text, re.M)
    assert len(table_rows) == len(site_groups())  # and no stale extra row
