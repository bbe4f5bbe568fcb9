"""What a simulation's summary.json must hold, as the README documents it ("Run folder")."""

from __future__ import annotations

from typing import Any

SITES = {"cleveland", "hungarian", "switzerland", "va"}


def check_summary_schema(summary: dict[str, Any]) -> None:
    """summary.json as documented in README ("Run folder")."""
    types = {"scenario": str, "task": str, "strategy": str, "rounds": int, "seed": int}
    for key, kind in (types | {"mean_accuracy": float}).items():
        assert isinstance(summary[key], kind), key
    assert set(summary["sites"]) == SITES
    for site in summary["sites"].values():
        assert isinstance(site["n_train"], int) and isinstance(site["n_test"], int)
        assert isinstance(site["accuracy"], float)
        assert site["auroc"] is None or isinstance(site["auroc"], float)
    pooled = summary["baselines"]["pooled"]
    assert isinstance(pooled["mean_accuracy"], float) and set(pooled["sites"]) == SITES
    assert set(summary["baselines"]["local"]) == SITES
    for result in summary["baselines"]["local"].values():
        assert isinstance(result["mean_accuracy"], float) and set(result["sites"]) == SITES
    assert summary["privacy"] is None
