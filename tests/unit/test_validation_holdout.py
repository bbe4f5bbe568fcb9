"""A site with ``holdout = "validation"`` is scored on part of its training rows, never on its
test rows: what lets the default settings be chosen without reading a test row (README, "How the
defaults were chosen"; fedcare.simulations.model_selection)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedcare.client.policy import SitePolicy
from fedcare.client.site import (
    HOLDOUT_VALIDATION,
    SiteIdentity,
    load_site_data,
    validation_holdout,
)
from fedcare.errors import ConfigError
from fedcare.simulations.model_selection import (
    Candidate,
    CandidateResult,
    final_round_figures,
    rank,
)
from fedcare.simulations.scenarios import heart_disease_scenario
from fedcare.tasks import get_task

TASK = "heart-disease"


def _rows(x: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in x)


@pytest.mark.parametrize("site", heart_disease_scenario().sites, ids=lambda s: s.name)
def test_the_validation_holdout_is_made_of_training_rows_only(site, tmp_path) -> None:
    identity = SiteIdentity(site.name, site.path, tmp_path, SitePolicy())
    full = get_task(TASK).load_site(site.name, site.path)
    held = load_site_data(TASK, dataclasses.replace(identity, holdout=HOLDOUT_VALIDATION))
    # the two parts are exactly the training rows, and no test row is anywhere
    assert _rows(np.concatenate([held.x_train, held.x_test])) == _rows(full.x_train)
    assert sorted(np.concatenate([held.y_train, held.y_test]).tolist()) == sorted(
        full.y_train.tolist()
    )
    assert 0.25 < held.n_test / full.n_train < 0.45
    # fixed: every setting is scored on the same rows
    again = validation_holdout(full)
    assert np.array_equal(again.x_test, held.x_test)


def test_the_default_holdout_is_the_test_split(tmp_path) -> None:
    site = heart_disease_scenario().sites[0]
    identity = SiteIdentity(site.name, site.path, tmp_path, SitePolicy())
    full = get_task(TASK).load_site(site.name, site.path)
    assert np.array_equal(load_site_data(TASK, identity).x_test, full.x_test)


def test_the_holdout_travels_in_the_node_config_and_a_wrong_one_is_refused(tmp_path) -> None:
    site = heart_disease_scenario().sites[0]
    identity = SiteIdentity(site.name, site.path, tmp_path, SitePolicy(), holdout="validation")
    assert SiteIdentity.from_mapping(identity.to_node_config()).holdout == "validation"
    plain = dataclasses.replace(identity, holdout="test")
    assert "holdout" not in plain.to_node_config()  # deployments' node config is unchanged
    with pytest.raises(ConfigError, match="holdout must be 'test' or 'validation'"):
        SiteIdentity(site.name, site.path, tmp_path, SitePolicy(), holdout="tests")


def test_candidates_rank_by_mean_validation_accuracy_then_auroc() -> None:
    def result(name: str, accuracy: tuple[float, ...], auroc: float) -> CandidateResult:
        return CandidateResult(Candidate(name, {}), accuracy, (auroc,) * len(accuracy), {})

    ranked = rank(
        [
            result("a", (0.5, 0.625), 0.90),
            result("b", (0.75, 0.5), 0.80),  # mean 0.625, like c: AUROC decides
            result("c", (0.625, 0.625), 0.85),
        ]
    )
    assert [r.candidate.name for r in ranked] == ["c", "b", "a"]


def test_the_last_round_is_what_a_candidate_is_scored_on() -> None:
    rounds = [
        {"sites": {"a": {"accuracy": 0.1, "auroc": 0.1}, "b": {"accuracy": 0.1, "auroc": 0.1}}},
        {"sites": {"a": {"accuracy": 0.6, "auroc": 0.8}, "b": {"accuracy": 0.8, "auroc": None}}},
    ]
    accuracy, auroc, per_site = final_round_figures(rounds)
    assert accuracy == pytest.approx(0.7) and auroc == pytest.approx(0.8)
    assert per_site == {"a": 0.6, "b": 0.8}


def test_neighbours_change_one_setting_relative_to_the_defaults() -> None:
    from fedcare.config import RunConfig
    from fedcare.simulations.model_selection import NEIGHBOURS, neighbour

    base = RunConfig().replace(local_epochs=4, learning_rate=0.02, batch_size=8)
    resolved = {c.name: neighbour(c, base).changes for c in NEIGHBOURS}
    assert resolved["local-epochs-x0.5"] == {"local_epochs": 2}
    assert resolved["local-epochs-x2"] == {"local_epochs": 8}
    assert resolved["learning-rate-x2.5"]["learning_rate"] == pytest.approx(0.05)
    assert resolved["batch-size-x2"] == {"batch_size": 16}
    assert resolved["default"] == {}
    one = RunConfig().replace(local_epochs=1)
    assert neighbour(NEIGHBOURS[1], one).changes == {"local_epochs": 1}  # never below 1


def test_an_unknown_setting_name_is_refused_naming_it() -> None:
    from fedcare.simulations.model_selection import known_names

    known_names(["default", "model-mlp"])
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) model-cnn; known: default"):
        known_names(["default", "model-cnn"])
