"""The release gate: every failed criterion, with its site, measured value and limit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fedcare.errors import ConfigError
from fedcare.server.release_gate import FEDERATION, GatePolicy, judge

STRICT = {
    "min-sites": 3,
    "min-auroc": 0.8,
    "min-auroc-ci-low": 0.7,
    "calibration-slope": [0.8, 1.2],
    "max-ece": 0.1,
    "max-epsilon": 1.0,
    "max-subgroup-auroc-gap": 0.1,
}


def cells(auroc: float, low: float, slope: float, ece: float, **subgroups: float) -> dict[str, Any]:
    overall = {"auroc": auroc, "auroc-ci-low": low, "calibration-slope": slope, "ece": ece}
    return {"all": overall} | {cell: {"auroc": value} for cell, value in subgroups.items()}


def version(
    sites: dict[str, Any] | None,
    privacy: dict[str, Any] | None = None,
    contributors: list[str] | None = None,
    validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    trained = contributors if contributors is not None else sorted(sites or {})
    return {
        "version": "v1",
        "sites_per_round": {"1": trained, "2": trained},
        "privacy": privacy
        if privacy is not None
        else {site: {"epsilon": 0.9, "delta": 1e-5} for site in trained},
        "validations": [] if sites is None else [{"sites": sites, **(validation or {})}],
    }  # fmt: skip


GOOD = {
    "cleveland": cells(0.85, 0.75, 1.0, 0.05, **{"sex=female": 0.84, "sex=male": 0.86}),
    "hungary": cells(0.9, 0.8, 1.1, 0.04),
    "va": cells(0.82, 0.71, 0.9, 0.08),
}


def test_a_version_that_meets_every_criterion_passes() -> None:
    assert judge(GatePolicy.from_mapping(STRICT), version(GOOD)) == []


def test_every_failed_criterion_is_listed_with_site_value_and_limit() -> None:
    sites = {
        "cleveland": cells(0.85, 0.75, 1.0, 0.05, **{"sex=female": 0.6, "sex=male": 0.9}),
        "hungary": cells(0.7, 0.6, 1.5, 0.2),
    }
    privacy = {
        "cleveland": {"epsilon": 0.9, "delta": 1e-5},
        "hungary": {"epsilon": 3.0, "delta": 1e-5},
    }
    failures = {
        (f.site, f.criterion): f
        for f in judge(GatePolicy.from_mapping(STRICT), version(sites, privacy))
    }
    assert set(failures) == {
        (FEDERATION, "validating sites"),
        ("hungary", "AUROC"),
        ("hungary", "AUROC 95% CI lower bound"),
        ("hungary", "calibration slope"),
        ("hungary", "ECE"),
        ("hungary", "epsilon"),
        ("cleveland", "subgroup AUROC gap (sex)"),
    }
    assert str(failures[("hungary", "AUROC")]) == "hungary: AUROC = 0.7, limit >= 0.8"
    assert failures[("cleveland", "subgroup AUROC gap (sex)")].measured == pytest.approx(0.3)
    assert str(failures[("hungary", "epsilon")]) == "hungary: epsilon = 3, limit <= 1"


@pytest.mark.parametrize(
    ("criterion", "value", "limit"),
    [("min-auroc", 0.85, "AUROC"), ("max-ece", 0.05, "ECE"), ("min-sites", 4, "validating sites")],
)
def test_each_limit_is_a_boundary(criterion: str, value: float, limit: str) -> None:
    """At the limit a site passes; a hair beyond it fails."""
    at = GatePolicy.from_mapping({criterion: value})
    site = {"cleveland": cells(0.85, 0.7, 1.0, 0.05)}
    sites = site if criterion != "min-sites" else {f"s{i}": site["cleveland"] for i in range(4)}
    assert judge(at, version(sites)) == []
    beyond = value + 0.001 if criterion != "max-ece" else value - 0.001
    beyond = int(value) + 1 if criterion == "min-sites" else beyond
    assert [
        f.criterion for f in judge(GatePolicy.from_mapping({criterion: beyond}), version(sites))
    ] == [limit]


def test_a_missing_value_fails_rather_than_passes() -> None:
    sites = {"va": {"all": {"auroc": None}}}
    failures = judge(GatePolicy.from_mapping({"min-auroc": 0.5, "max-ece": 0.2}), version(sites))
    assert [(f.criterion, f.measured) for f in failures] == [("AUROC", None), ("ECE", None)]
    assert "not measured" in str(failures[0])


def test_a_site_trained_without_dp_counts_as_infinite_epsilon() -> None:
    failures = judge(GatePolicy.from_mapping({"max-epsilon": 10.0}), version(GOOD, privacy={}))
    assert {f.site for f in failures} == {"cleveland", "hungary", "va"}
    assert all(f.measured == math.inf for f in failures)


def test_no_validation_never_passes() -> None:
    failures = judge(GatePolicy(), version(None))
    assert [(f.site, f.criterion) for f in failures] == [(FEDERATION, "validation")]


def test_policy_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text("[gate]\nmin-auroc = 0.7\ncalibration-slope = [0.6, 1.4]\n")
    assert GatePolicy.load(path) == GatePolicy(min_auroc=0.7, calibration_slope=(0.6, 1.4))
    for text, message in (
        ("[gate]\nmin-aurok = 0.7\n", "unknown key 'min-aurok'"),
        ("[gate]\ncalibration-slope = [1.4, 0.6]\n", "calibration-slope"),
        ("[gate]\nmax-ece = -1\n", "max-ece"),
        ("[gate]\nmin-sites = 0\n", "min-sites"),
        ("[other]\n", "no [gate] table"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            GatePolicy.load(path)


def test_a_site_too_small_to_report_counts_for_nothing() -> None:
    """A site whose whole test set is under its minimum cell sends no overall cell: it did
    not validate the model, so it neither fails a per-site criterion nor counts as a site."""
    sites = dict(GOOD) | {"switzerland": {"sex=male": {"auroc": 0.1}}}
    policy = GatePolicy.from_mapping(STRICT | {"min-sites": 4})
    failures = judge(policy, version(sites))
    assert [(f.site, f.criterion, f.measured) for f in failures] == [
        (FEDERATION, "validating sites", 3)
    ]


def test_nobody_validating_never_passes_even_without_min_sites() -> None:
    missing = {"missing": {"cleveland": "site-error", "hungary": "site-error"}}
    failures = judge(
        GatePolicy.from_mapping({"min-auroc": 0.9}),
        version({}, None, ["cleveland", "hungary"], missing),
    )
    assert [(f.site, f.criterion) for f in failures] == [
        (FEDERATION, "validating sites"),
        ("cleveland", "validation (site-error)"),
        ("hungary", "validation (site-error)"),
    ]


def test_a_contributing_site_that_did_not_validate_fails_the_gate() -> None:
    sites = {"cleveland": GOOD["cleveland"]}
    failures = judge(GatePolicy(), version(sites, None, ["cleveland", "hungary"]))
    assert [(f.site, f.criterion) for f in failures] == [("hungary", "validation (no reply)")]


def test_epsilon_is_judged_after_the_statistics_release_of_the_validation() -> None:
    """Validation may release each site's statistics (ε spent after training): the gate
    judges the latest ε the validation recorded, for every site whose data went in."""
    after = {
        "cleveland": {"epsilon": 2.9, "delta": 1e-5},
        "hungary": {"epsilon": 1.9, "delta": 1e-5},
    }
    view = version(GOOD, validation={"privacy": after | {"va": {"epsilon": 2.5, "delta": 1e-5}}})
    failures = judge(GatePolicy.from_mapping({"max-epsilon": 2.0}), view)
    assert [(f.site, f.measured) for f in failures] == [("cleveland", 2.9), ("va", 2.5)]


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("calibration-slope", [1.0, 1.0], True),  # low == high: a single accepted slope
        ("calibration-slope", [0.6, 1.0, 1.4], False),
        ("calibration-slope", 0.8, False),
        ("min-sites", 1, True),
        ("min-sites", 2.5, False),
        ("min-sites", True, False),
        ("max-ece", 0, True),
        ("max-epsilon", math.inf, False),
    ],
)
def test_policy_values_are_checked_at_their_edges(key: str, value: Any, accepted: bool) -> None:
    if accepted:
        assert GatePolicy.from_mapping({key: value}).to_json() == {key: value}
    else:
        with pytest.raises(ConfigError, match=f"^gate policy: {key} = "):
            GatePolicy.from_mapping({key: value})


def test_a_policy_error_names_its_file_or_the_policy_and_lists_the_known_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gate.toml"
    path.write_text("[gate]\nmax-ece = -1\n")
    with pytest.raises(ConfigError, match=f"^{path}: max-ece = -1 must be a number >= 0$"):
        GatePolicy.load(path)
    with pytest.raises(ConfigError) as unknown:
        GatePolicy.from_mapping({"min-aurok": 0.7})
    assert str(unknown.value) == (
        "gate policy: unknown key 'min-aurok'; known: min-sites, min-auroc, min-auroc-ci-low, "
        "calibration-slope, max-ece, max-epsilon, max-subgroup-auroc-gap"
    )
    for text in (None, "[gate\n"):  # missing, then not TOML
        if text is not None:
            path.write_text(text)
        else:
            path = tmp_path / "absent.toml"
        with pytest.raises(ConfigError, match=f"^{path}: cannot read the gate policy"):
            GatePolicy.load(path)


def test_the_policy_recorded_with_a_release_reads_back_as_the_same_policy() -> None:
    policy = GatePolicy.from_mapping(STRICT)
    assert policy.to_json() == STRICT
    assert GatePolicy.from_mapping(policy.to_json()) == policy
    assert GatePolicy.from_mapping({"max-ece": 0.1}).to_json() == {"max-ece": 0.1}


def test_each_failure_reads_as_site_criterion_measured_value_and_limit() -> None:
    # Prepare: one site failing every per-site criterion, one contributor that sent nothing.
    sites = {"va": cells(0.7, 0.6, 1.5, 0.2, **{"age=<50": 0.5, "age=65+": 0.9})}
    view = version(sites, {"va": {"epsilon": 3.0, "delta": 1e-5}}, ["va", "hungary"])
    policy = GatePolicy.from_mapping(STRICT | {"min-sites": 2})

    # Execute
    lines = [str(f) for f in judge(policy, view)]

    # Assert
    assert lines == [
        "federation: validating sites = 1, limit >= 2",
        "hungary: validation (no reply) = not measured, limit every contributing site",
        "va: AUROC = 0.7, limit >= 0.8",
        "va: AUROC 95% CI lower bound = 0.6, limit >= 0.7",
        "va: calibration slope = 1.5, limit in [0.8, 1.2]",
        "va: ECE = 0.2, limit <= 0.1",
        "va: subgroup AUROC gap (age) = 0.4, limit <= 0.1",
        "hungary: epsilon = inf, limit <= 1",
        "va: epsilon = 3, limit <= 1",
    ]
    assert [str(f) for f in judge(GatePolicy(), version(None))] == [
        "federation: validation = not measured, limit run 'fedcare registry validate'"
    ]


def test_a_value_exactly_at_a_limit_passes() -> None:
    # Prepare: slopes at both ends of the range, a subgroup gap and an epsilon at their limits
    # (binary fractions, so the arithmetic is exact).
    sites = {
        "low": cells(0.85, 0.75, 0.75, 0.05, **{"sex=female": 0.75, "sex=male": 0.875}),
        "high": cells(0.85, 0.75, 1.25, 0.05),
    }
    privacy = {site: {"epsilon": 0.5, "delta": 1e-5} for site in sites}
    policy = GatePolicy.from_mapping(
        {"calibration-slope": [0.75, 1.25], "max-subgroup-auroc-gap": 0.125, "max-epsilon": 0.5}
    )
    assert judge(policy, version(sites, privacy)) == []


def test_an_undefined_subgroup_auroc_does_not_enter_the_gap() -> None:
    """A cell whose AUROC came back undefined (null) is not a 0: the gap is over the others."""
    sites = {"va": cells(0.85, 0.75, 1.0, 0.05, **{"sex=female": 0.8, "sex=male": 0.84})}
    sites["va"]["age=<50"] = {"auroc": None}
    sites["va"]["age=65+"] = {"auroc": 0.2}
    failures = judge(GatePolicy.from_mapping({"max-subgroup-auroc-gap": 0.1}), version(sites))
    assert failures == []


def test_a_version_without_a_privacy_record_counts_every_contributor_as_infinite() -> None:
    view = version(GOOD)
    del view["privacy"]
    failures = judge(GatePolicy.from_mapping({"max-epsilon": 10.0}), view)
    assert [(f.site, f.measured) for f in failures] == [
        ("cleveland", math.inf),
        ("hungary", math.inf),
        ("va", math.inf),
    ]


def test_a_grouping_is_the_name_before_the_first_equals_sign() -> None:
    """A level may itself hold '=' (``age=<=50``): its cell still belongs to ``age``."""
    sites = {"va": cells(0.85, 0.75, 1.0, 0.05, **{"age=<=50": 0.6, "age=>50": 0.9})}
    failures = judge(GatePolicy.from_mapping({"max-subgroup-auroc-gap": 0.1}), version(sites))
    assert [(f.site, f.criterion) for f in failures] == [("va", "subgroup AUROC gap (age)")]
