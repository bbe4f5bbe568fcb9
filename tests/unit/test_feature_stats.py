"""The federation's preprocessing statistics: a recorded, budgeted, really noised release.

Each site's ``query.feature_stats`` reply is run through the real ClientApp (audit mod and all);
ε is recomputed from the ledger with Google's dp-accounting, the combined statistics are checked
against the pooled truth of the four hospitals' training rows.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcare import messages as keys
from fedcare.client.app import app
from fedcare.config import AccountantName
from fedcare.feature_stats import (
    DEFAULT_NOISE_MULTIPLIER,
    MIN_STD_FRACTION,
    FeatureStats,
    FeatureStatsError,
    combine,
    combine_for_task,
    exact_sums,
    noised_sums,
    sensitivity,
)
from fedcare.privacy.accounting import epsilon_from_events
from fedcare.privacy.events import GAUSSIAN_KIND, NON_PRIVATE_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.privacy.ledger_signing import LedgerHead
from fedcare.tasks import get_task
from tests.flower_harness import site_context
from tests.inprocess_federation import site_keys

logging.getLogger("absl").setLevel(logging.ERROR)
TASK = "heart-disease"
SITES = ("cleveland", "hungarian", "switzerland", "va")


def stats_query(**config: float | str) -> Message:
    """A ``query.feature_stats`` message as the coordinator sends it."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    record = ConfigRecord({keys.TASK: TASK, keys.MODEL: "logreg", keys.SEED: 0, **config})
    return Message(
        RecordDict({keys.CONFIG: record}), dst_node_id=1, message_type=keys.FEATURE_STATS_QUERY
    )


def dp_sgd_event(sigma: float, rate: float, steps: int) -> PrivacyEvent:
    return PrivacyEvent("run", 1, sigma, rate, steps, 1e-5, 1.0, "2026-01-01T00:00:00Z")


def train_columns(site_paths: dict[str, Path], site: str) -> np.ndarray:
    task = get_task(TASK)
    train, _ = task.split_labelled(site, site_paths[site])
    return task.encode(train.columns)


def test_the_release_is_in_the_ledger_before_the_reply_and_epsilon_is_recomputable(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a site that already trained one DP round, with a site key (signed ledger heads).
    PrivacyLedger(tmp_path).append(dp_sgd_event(1.1, 1 / 13, 13))
    key, _ = site_keys(tmp_path / "keys", "va")
    context = site_context("va", site_paths["va"], tmp_path, **{"site-key": str(key)})

    # Execute
    reply = app(stats_query(), context)

    # Assert: the ledger holds the Gaussian mechanism as sample rate 1, one step, default σ, and
    # the signed head the reply carries already counts it (recorded before the reply was built).
    assert not reply.has_error()
    events = PrivacyLedger(tmp_path).read()
    release = events[-1]
    assert (release.kind, release.sample_rate, release.steps) == (GAUSSIAN_KIND, 1.0, 1)
    assert release.noise_multiplier == DEFAULT_NOISE_MULTIPLIER
    assert release.max_grad_norm == pytest.approx(sensitivity(13))
    head = LedgerHead.from_json(json.loads(str(reply.content[keys.LEDGER][keys.LEDGER_HEAD])))
    assert head.entries == 2
    accountant = rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(1 / 13, dp_accounting.GaussianDpEvent(1.1)), 13
    )
    accountant.compose(dp_accounting.GaussianDpEvent(DEFAULT_NOISE_MULTIPLIER))
    expected = accountant.get_epsilon(release.delta)
    assert epsilon_from_events(events, release.delta) == pytest.approx(expected, rel=0.01)
    assert head.epsilon == pytest.approx(expected, rel=0.01)
    # The sums alone, 2F+1 of them: no arrays, no other metric.
    assert list(reply.content.metric_records[keys.METRICS]) == [keys.FEATURE_SUMS]
    assert len(reply.content.metric_records[keys.METRICS][keys.FEATURE_SUMS]) == 27  # type: ignore[arg-type]
    assert not reply.content.array_records


def test_the_default_noise_costs_about_one_epsilon() -> None:
    # The documented default: ε ≈ 1.01 (RDP) and 0.94 (PRV) at δ = 1e-5 for one release.
    release = PrivacyEvent("r", 0, DEFAULT_NOISE_MULTIPLIER, 1.0, 1, 1e-5, 5.2, "t", GAUSSIAN_KIND)
    assert epsilon_from_events([release], 1e-5) == pytest.approx(1.0126, abs=1e-3)
    assert epsilon_from_events([release], 1e-5, AccountantName.PRV) == pytest.approx(0.94, abs=0.01)


def test_a_release_over_the_budget_is_refused_and_nothing_is_recorded(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: a budget of 0.5; the default release costs about 1.
    context = site_context("va", site_paths["va"], tmp_path, **{"max-epsilon": 0.5})

    # Execute
    reply = app(stats_query(), context)
    cheap = app(stats_query(**{keys.FEATURE_STATS_NOISE: 20.0}), context)

    # Assert: refused by category, no sums, no event; a noisier release fits and is recorded.
    assert reply.has_error() and reply.error.reason == keys.REFUSED_BUDGET
    assert reply.error.code == keys.REFUSAL_CODES[keys.REFUSED_BUDGET]
    assert not cheap.has_error()
    assert [e.noise_multiplier for e in PrivacyLedger(tmp_path).read()] == [20.0]


def test_a_coordinator_cannot_ask_for_less_noise_than_the_sites_floor(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    """A tiny σ would make near-exact sums (and, at a site already at ε ∞, pass the budget)."""
    context = site_context("va", site_paths["va"], tmp_path)  # default budget 10
    reply = app(stats_query(**{keys.FEATURE_STATS_NOISE: 0.05}), context)
    assert not reply.has_error()
    (event,) = PrivacyLedger(tmp_path).read()
    assert event.noise_multiplier == DEFAULT_NOISE_MULTIPLIER  # raised to the site's floor


def test_a_site_already_non_private_releases_only_if_its_policy_allows_non_private_rounds(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: two sites whose ledgers hold a non-private round (ε = inf).
    non_private = PrivacyEvent("r", 1, 0.0, 1.0, 0, 0.0, 0.0, "t", kind=NON_PRIVATE_KIND)
    for folder in ("open", "strict"):
        PrivacyLedger(tmp_path / folder).append(non_private)
    open_site = site_context("va", site_paths["va"], tmp_path / "open", **{"require-dp": "false"})
    strict = site_context("va", site_paths["va"], tmp_path / "strict")

    # Execute
    allowed, refused = app(stats_query(), open_site), app(stats_query(), strict)

    # Assert: the permissive site releases (and records it); the DP-only site refuses.
    assert not allowed.has_error()
    assert PrivacyLedger(tmp_path / "open").read()[-1].kind == GAUSSIAN_KIND
    assert refused.has_error() and refused.error.reason == keys.REFUSED_BUDGET


def test_noise_is_really_added_and_does_not_follow_the_request(
    tmp_path: Path, site_paths: dict[str, Path]
) -> None:
    # Prepare: the same request twice (same seed) at one site.
    context = site_context("va", site_paths["va"], tmp_path)
    exact = exact_sums(train_columns(site_paths, "va"), get_task(TASK).feature_bounds())

    # Execute
    first, second = (
        np.array(
            app(stats_query(), context).content.metric_records[keys.METRICS][keys.FEATURE_SUMS]
        )
        for _ in range(2)
    )

    # Assert: the two releases differ from each other and from the exact sums, by noise of
    # the documented scale (σ · sqrt(27) ≈ 20.8 per entry).
    assert not np.allclose(first, second)
    scale = DEFAULT_NOISE_MULTIPLIER * sensitivity(13)
    for release in (first, second):
        assert np.all(release != exact)
        assert 0.5 * scale < np.std(release - exact) < 2.0 * scale


def test_combined_statistics_are_close_to_the_pooled_truth(site_paths: dict[str, Path]) -> None:
    # Prepare: the four hospitals' training rows and their pooled mean and standard deviation.
    task = get_task(TASK)
    rows = [train_columns(site_paths, site) for site in SITES]
    pooled = np.concatenate(rows)
    bounds = task.feature_bounds()
    width = np.array([high - low for low, high in bounds])
    rng = np.random.default_rng(0)

    # Execute: nearly noiseless, then at the default noise.
    fine = combine([noised_sums(x, bounds, 1e-4, rng) for x in rows], task.feature_names, bounds)
    noisy = combine_for_task(
        TASK, [noised_sums(x, bounds, DEFAULT_NOISE_MULTIPLIER, rng) for x in rows]
    )

    # Assert: almost exact without noise; at the default, each mean within four standard errors
    # of the noise (per site σ·Δ on a sum of u, scaled back by the range, over the pooled n).
    assert np.allclose(fine.mean, pooled.mean(axis=0), rtol=1e-3, atol=1e-3)
    assert np.allclose(fine.std, pooled.std(axis=0), rtol=1e-2, atol=1e-3)
    error = DEFAULT_NOISE_MULTIPLIER * sensitivity(13) * math.sqrt(len(SITES)) * width / len(pooled)
    assert np.all(np.abs(np.array(noisy.mean) - pooled.mean(axis=0)) < 4 * error + 0.05 * width)
    assert all(s > 0 for s in noisy.std)
    assert noisy.feature_names == task.feature_names


def test_a_binary_features_scale_follows_from_its_mean_not_its_noised_second_moment() -> None:
    # Prepare: one binary feature (mean 0.25) whose Σu² the noise drove to 0, and one
    # continuous feature whose noised variance came out negative.
    sums = [[25.0, 5.0, 0.0, -40.0, 100.0]]

    # Execute
    stats = combine(sums, ("sex", "age"), [(0.0, 1.0), (0.0, 100.0)], binary=(True, False))

    # Assert: m(1 - m) for the binary one; the floor (1 % of the range) for the other.
    assert stats.mean == pytest.approx((0.25, 5.0))
    assert stats.std == pytest.approx((math.sqrt(0.25 * 0.75), 1.0))
    assert get_task(TASK).binary_features() == (
        False, True, False, False, True, False, True, False, True, True, True, True, True,
    )  # fmt: skip


def test_stats_round_trip_and_standardise() -> None:
    stats = FeatureStats(("a", "b"), (1.0, -2.0), (2.0, 0.5))
    assert FeatureStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats
    out = stats.standardise(np.array([[3.0, -2.5]]))
    assert out.dtype == np.float32 and out.tolist() == [[1.0, -1.0]]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: FeatureStats(("a",), (1.0, 2.0), (1.0,)), "one of each per feature"),
        (lambda: FeatureStats(("a",), (1.0,), (0.0,)), "> 0"),
        (lambda: FeatureStats.from_json({"mean": []}), "'features'"),
        (lambda: combine([], ("a",), [(0.0, 1.0)]), "cannot combine none"),
        (lambda: combine([[1.0, 1.0]], ("a",), [(0.0, 1.0)]), "3 finite numbers"),
        (lambda: combine([[1.0] * 3], ("a",), [(0.0, 1.0)], (True, False)), "2 binary flags"),
        (lambda: combine([[0.0, 0.0, 0.2]], ("a",), [(0.0, 1.0)]), "too few rows"),
        (lambda: noised_sums(np.zeros((2, 1)), [(0.0, 1.0)], 0.0, None), "> 0"),  # type: ignore[arg-type]
    ],
)
def test_bad_statistics_and_sums_are_refused_with_a_reason(build: object, match: str) -> None:
    with pytest.raises(FeatureStatsError, match=match):
        build()  # type: ignore[operator]


def test_a_gaussian_event_must_be_one_full_step() -> None:
    with pytest.raises(Exception, match="sample_rate 1, steps 1"):
        PrivacyEvent("r", 0, 4.0, 0.5, 1, 1e-5, 1.0, "t", kind=GAUSSIAN_KIND)
    with pytest.raises(Exception, match="sample_rate 1, steps 1"):
        PrivacyEvent("r", 0, 4.0, 1.0, 2, 1e-5, 1.0, "t", kind=GAUSSIAN_KIND)


def test_each_row_moves_the_sums_by_at_most_the_sensitivity() -> None:
    # Rows at and beyond the bounds: clipping keeps every entry of a row's vector in [0, 1].
    bounds = get_task(TASK).feature_bounds()
    rng = np.random.default_rng(1)
    low = np.array([b[0] for b in bounds])
    high = np.array([b[1] for b in bounds])
    rows = rng.uniform(low - 50, high + 50, size=(200, len(bounds)))
    for row in rows:
        assert np.linalg.norm(exact_sums(row[None, :], bounds)) <= sensitivity(len(bounds)) + 1e-9


def test_the_released_and_validated_rows_are_the_rows_the_site_trains_and_tests_on(
    site_paths: dict[str, Path],
) -> None:
    # The unscaled split, standardised with the site's own training statistics, is exactly
    # load_site's split; every real row lies within the public bounds (no clipping of real data).
    task = get_task(TASK)
    low, high = np.array(task.feature_bounds()).T
    for site in SITES:
        train, test = task.split_labelled(site, site_paths[site])
        data = task.load_site(site, site_paths[site])
        x_train, x_test = task.encode(train.columns), task.encode(test.columns)
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        assert np.allclose((x_train - mean) / std, data.x_train, atol=1e-5)
        assert np.allclose((x_test - mean) / std, data.x_test, atol=1e-5)
        assert np.array_equal(train.labels, data.y_train) and np.array_equal(
            test.labels, data.y_test
        )
        rows = np.concatenate([x_train, x_test])
        assert np.all((rows >= low) & (rows <= high))


def test_means_and_scales_are_clipped_to_what_a_bounded_feature_can_have() -> None:
    # Prepare: noise pushed feature a's mean below its lower bound and b's above its upper one,
    # and both second moments far above what a feature in [low, high] can reach.
    bounds = [(10.0, 20.0), (0.0, 4.0)]
    sums = [[-3.0, 15.0, 9.0, 30.0, 10.0]]  # Σu = -3 and 15, Σu² = 9 and 30, n = 10

    # Execute
    stats = combine(sums, ("a", "b"), bounds)

    # Assert: each mean at its bound; each scale at the largest, half the range.
    assert stats.mean == pytest.approx((10.0, 4.0))
    assert stats.std == pytest.approx((5.0, 2.0))


def test_a_noised_count_of_one_row_or_more_is_combined_and_under_one_refused() -> None:
    for n in (1.0, 1.5):
        stats = combine([[0.5 * n, 0.25 * n, n]], ("a",), [(0.0, 2.0)])
        assert stats.mean == pytest.approx((1.0,))
    with pytest.raises(FeatureStatsError) as refused:
        combine([[0.0, 0.0, 0.5]], ("a",), [(0.0, 1.0)])
    assert str(refused.value) == (
        "the sites' noised row count is 0.5: too few rows for this noise; ask more sites or "
        "lower the noise multiplier"
    )
    with pytest.raises(FeatureStatsError) as none:
        combine([], ("a",), [(0.0, 1.0)])
    assert str(none.value) == "no site sent its feature sums; cannot combine none"


def test_the_coordinator_scales_the_tasks_binary_features_from_their_means() -> None:
    # Prepare: every feature's Σu at half its rows, every Σu² driven to 0 by the noise.
    task = get_task(TASK)
    f = task.n_features
    sums = [[50.0] * f + [0.0] * f + [100.0]]
    width = np.array([high - low for low, high in task.feature_bounds()])

    # Execute
    stats = combine_for_task(TASK, sums)

    # Assert: a binary feature's scale is sqrt(m(1 - m)) = 0.5; any other is at the floor.
    binary = np.array(task.binary_features())
    expected = np.where(binary, 0.5, MIN_STD_FRACTION) * width
    assert np.allclose(stats.std, expected)


def test_whole_number_sums_are_added_as_real_numbers_never_wrapping() -> None:
    """Two sites' integer sums past 2**63 in total are added as numbers, not 64-bit integers
    (which would wrap to a negative row count)."""
    stats = combine([[2**62, 2**62, 2**62]] * 2, ("a",), [(0.0, 1.0)])
    assert stats.mean == pytest.approx((1.0,))
