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
        check_personalized(site["personalized"])
    assert isinstance(summary["personalized_mean_accuracy"], float)
    pooled = summary["baselines"]["pooled"]
    assert isinstance(pooled["mean_accuracy"], float) and set(pooled["sites"]) == SITES
    assert set(summary["baselines"]["local"]) == SITES
    for result in summary["baselines"]["local"].values():
        assert isinstance(result["mean_accuracy"], float) and set(result["sites"]) == SITES
    assert summary["privacy"] is None


PERSONALIZED_METHODS = {"global", "finetune", "ditto", "local"}


def check_personalized(entry: dict[str, Any]) -> None:
    """One site's ``personalized`` entry (README, "The run folder")."""
    assert isinstance(entry["accuracy"], float) and 0.0 <= entry["accuracy"] <= 1.0
    assert entry["auroc"] is None or isinstance(entry["auroc"], float)
    assert entry["method"] in PERSONALIZED_METHODS
    assert isinstance(entry["epochs"], int) and entry["epochs"] >= 0
    assert (entry["epochs"] == 0) == (entry["method"] == "global")
    assert isinstance(entry["learning_rate"], float) and isinstance(entry["lambda"], float)
    for key in ("validation_auroc", "global_validation_auroc"):
        assert entry[key] is None or isinstance(entry[key], float)
    for key in ("validation_accuracy", "global_validation_accuracy"):
        assert isinstance(entry[key], float) and 0.0 <= entry[key] <= 1.0
    assert entry["validation_accuracy"] >= entry["global_validation_accuracy"]
    assert isinstance(entry["refit"], bool) and isinstance(entry["dp_trainings"], int)
    assert entry["stopped"] in (None, "budget")
