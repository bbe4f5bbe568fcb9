"""Write the example's three site files from the copy of the Wisconsin Diagnostic Breast Cancer
data that scikit-learn ships (no network): ``python make_sites.py [FOLDER]`` (default: sites/).

The data come from one hospital; the three sites are a seeded, stratified three-way split of its
569 patients (40 %, 35 %, 25 %), so they differ in size but not in kind. The files are committed;
this script is how they were made, and a test checks that it still makes the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

# The example task's columns -> scikit-learn's feature names.
COLUMNS = {
    "mean_radius": "mean radius",
    "mean_texture": "mean texture",
    "mean_smoothness": "mean smoothness",
    "worst_area": "worst area",
    "worst_concave_points": "worst concave points",
}
SITES = (("alpha", 0.40), ("beta", 0.35), ("gamma", 0.25))
SEED = 14


def site_rows() -> dict[str, np.ndarray]:
    """Each site's rows: the five columns, then ``malignant`` (scikit-learn's target 0)."""
    data = load_breast_cancer()
    names = list(data.feature_names)
    table = np.column_stack(
        [data.data[:, names.index(source)] for source in COLUMNS.values()]
        + [(data.target == 0).astype(np.float64)]
    )
    rest = np.arange(table.shape[0])
    rows: dict[str, np.ndarray] = {}
    left = 1.0
    for site, share in SITES[:-1]:
        taken, rest = train_test_split(
            rest, train_size=share / left, random_state=SEED, stratify=table[rest, -1]
        )
        rows[site] = table[np.sort(taken)]
        left -= share
    rows[SITES[-1][0]] = table[np.sort(rest)]
    return rows


def write_sites(folder: Path) -> list[Path]:
    """Write ``<site>.csv`` for each site into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ",".join([*COLUMNS, "malignant"])
    paths = []
    for site, table in site_rows().items():
        lines = [header, *(",".join(f"{v:.6g}" for v in row) for row in table)]
        path = folder / f"{site}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sites")
    for written in write_sites(target):
        print(written)
