"""What a release bundle says about its model: the model card and the preprocessing, both
built from the registry version (lineage, privacy record, latest validation) and the gate.

Nothing here is per patient: site sizes appear only in buckets (as the sites reported them),
and a subgroup appears only where the site reported it (cells under its minimum never left).
"""

from __future__ import annotations

import math
from typing import Any

from fedcare.messages import OVERALL_CELL, PATIENTS
from fedcare.server.release_gate import GatePolicy, privacy_now, validated_sites

SIZE_BUCKETS = (50, 100, 250, 500, 1000)

INTENDED_USE = {
    "heart-disease": (
        "Decision support for estimating the probability of coronary artery disease (UCI "
        "definition: any major vessel narrowed > 50 %) in adults referred for evaluation, from "
        "10 routine clinical values. Not a diagnosis; not for emergency triage; for use by "
        "clinicians alongside their own judgement."
    ),
}
LIMITATIONS = (
    "Trained and validated only at the sites named here; performance elsewhere is unknown until "
    "a site validates it on its own patients (fedcare site validate).",
    "Preprocessing uses federation-wide statistics released under differential privacy; inputs "
    "outside the training ranges are refused by the API.",
    "Subgroups with too few patients or events at a site were not measured there.",
)


def size_bucket(patients: float | None) -> str:
    """A site's size as a range, never a count."""
    if patients is None or not math.isfinite(patients):
        return "unknown"
    low = 0
    for high in SIZE_BUCKETS:
        if patients < high:
            return f"{low}-{high - 1}"
        low = high
    return f">= {SIZE_BUCKETS[-1]}"


def preprocessing(view: dict[str, Any]) -> dict[str, Any]:
    """The bundle's preprocessing: the task's input encoding and the federation's statistics
    from the version's latest validation (whose privacy cost the sites' ledgers recorded)."""
    from fedcare.bundle import preprocessing_record
    from fedcare.errors import ConfigError

    if not view["validations"]:
        raise ConfigError(f"{view['version']} has no validation; run 'fedcare registry validate'")
    stats = view["validations"][-1]["preprocessing"]
    extra = {k: v for k, v in stats.items() if k not in ("mean", "std")}
    return preprocessing_record(
        view["task"], view["model"], int(view["run"]["config"]["seed"]),
        list(stats["mean"]), list(stats["std"]), statistics=extra,
    )  # fmt: skip


def model_card(view: dict[str, Any], gate: GatePolicy) -> dict[str, Any]:
    """The card (JSON); :mod:`fedcare.server.release` renders it as MODEL_CARD.md too."""
    validation = view["validations"][-1]
    sites = validation["sites"]
    return {
        "name": f"fedcare-{view['task']}",
        "version": view["version"],
        "intended_use": INTENDED_USE.get(view["task"], f"The {view['task']} task."),
        "task": {"name": view["task"], "schema_sha256": view["schema_sha256"]},
        "model": {"architecture": view["model"], "weights_sha256": view["weights_sha256"]},
        "sites": {
            site: {"patients": size_bucket(cells.get(OVERALL_CELL, {}).get(PATIENTS))}
            for site, cells in sorted(sites.items())
        },
        # each site's ε and δ as last recorded (after validation's statistics release, if any)
        "privacy": privacy_now(view) or "trained without differential privacy",
        "validation": {
            "validated_at": validation["validated_at"],
            "sites": sites,
            "not_validated": validation.get("missing", {})
            | {
                site: "too few patients, events or non-events in its test set to report"
                for site in sorted(set(sites) - set(validated_sites(sites)))
            },
            "thresholds": validation.get("thresholds", {}),
        },
        "gate": {"policy": gate.to_json(), "verdict": "passed"},
        "limitations": list(LIMITATIONS),
        "lineage": {
            "parent": view["parent"],
            "run_id": view["run"]["run_id"],
            "config_sha256": view["run"]["config_sha256"],
            "strategy": view["strategy"],
            "rounds": view["rounds"],
            "sites_per_round": view["sites_per_round"],
            "fedcare_version": view["fedcare_version"],
            "flower_version": view["flower_version"],
        },
    }
