"""NCCTG lung sites, split and site files: fixed, reproducible, and what the README states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcare.errors import DataError
from fedcare.tasks.ncctg_lung.data import (
    SurvivalRows,
    group_institutions,
    load_lung_table,
    site_groups,
    site_rows,
    split_indices,
    split_site,
)
from fedcare.tasks.ncctg_lung.preprocess import Scaling, discretise, encode_rows
from fedcare.tasks.ncctg_lung.schema import FEATURE_NAMES, MIN_SITE_PATIENTS, SITE_COLUMNS
from fedcare.tasks.ncctg_lung.site_files import read_site_file, write_site_file, write_site_files

# site -> (institutions, patients, training patients, test patients)
EXPECTED_SITES = {
    "inst01": ((1,), 36, 25, 11),
    "inst02-05": ((2, 3, 4, 5), 37, 25, 12),
    "inst06-11": ((6, 7, 10, 11), 44, 30, 14),
    "inst12-13": ((12, 13), 43, 30, 13),
    "inst15-21": ((15, 16, 21), 35, 24, 11),
    "inst22-33": ((22, 26, 32, 33), 32, 22, 10),
}


def test_lifelines_codes_status_as_death_one_censored_zero() -> None:
    table, inst = load_lung_table()
    status = table[:, SITE_COLUMNS.index("status")]
    assert table.shape == (228, len(SITE_COLUMNS))
    assert set(np.unique(status)) == {0.0, 1.0}
    assert int(status.sum()) == 165  # R's survival::lung: 165 deaths (status 2), 63 censored
    assert int(np.isnan(inst).sum()) == 1


def test_sites_are_the_documented_groups_each_large_enough() -> None:
    groups = site_groups()
    assert {g.name: (g.institutions, g.n_patients) for g in groups} == {
        name: (insts, n) for name, (insts, n, _, _) in EXPECTED_SITES.items()
    }
    assert all(g.n_patients >= MIN_SITE_PATIENTS for g in groups)
    assert sum(g.n_patients for g in groups) == 227  # all but the patient with no institution
    assert {name: rows.n for name, rows in site_rows().items()} == {
        name: n for name, (_, n, _, _) in EXPECTED_SITES.items()
    }


def test_grouping_depends_on_ids_and_counts_only() -> None:
    counts = {1: 36, 2: 5, 3: 19, 4: 4, 5: 9, 33: 2, 21: 13, 16: 16, 15: 6}
    shuffled = dict(reversed(list(counts.items())))
    assert group_institutions(counts) == group_institutions(shuffled)


def test_a_short_last_group_joins_the_one_before() -> None:
    groups = group_institutions({1: 30, 2: 10, 3: 25, 4: 5}, minimum=30)
    assert [(g.institutions, g.n_patients) for g in groups] == [((1,), 30), ((2, 3, 4), 40)]
    with pytest.raises(DataError, match="at least 30"):
        group_institutions({1: 10, 2: 19}, minimum=30)


def test_split_is_fixed_stratified_and_blind_to_the_global_generator() -> None:
    for name, rows in site_rows().items():
        np.random.seed(0)
        train_idx, test_idx = split_indices(rows.event)
        np.random.seed(1)
        again_train, again_test = split_indices(rows.event)
        assert np.array_equal(train_idx, again_train) and np.array_equal(test_idx, again_test)
        assert not set(train_idx) & set(test_idx)
        assert len(train_idx) + len(test_idx) == rows.n
        assert (len(train_idx), len(test_idx)) == EXPECTED_SITES[name][2:]
        # stratified: the test rows' event rate is within one patient of the site's
        assert abs(rows.event[test_idx].mean() - rows.event.mean()) <= 1.0 / len(test_idx)


def test_site_files_round_trip_through_the_data_gate(tmp_path: Path) -> None:
    paths = write_site_files(tmp_path)
    for name, rows in site_rows().items():
        back = read_site_file(paths[name])
        assert paths[name].read_text().splitlines()[0] == ",".join(SITE_COLUMNS)
        assert len(paths[name].read_text().splitlines()) == rows.n + 1  # header + one per patient
        assert np.array_equal(back.to_table(), rows.to_table(), equal_nan=True)


def test_a_site_file_without_follow_up_times_is_refused(tmp_path: Path) -> None:
    rows = site_rows()["inst01"]
    broken = SurvivalRows(rows.features, rows.time.copy(), rows.event)
    broken.time[3] = np.nan
    with pytest.raises(DataError, match=r"column 'time': 1 missing value\(s\)"):
        read_site_file(write_site_file(broken, tmp_path / "inst01.csv"))


def test_scaling_uses_training_rows_and_fills_missing_with_their_mean() -> None:
    train, test = split_site(site_rows()["inst12-13"])
    scaling = Scaling.fit(train)
    x_train, x_test = scaling.apply(train), scaling.apply(test)
    encoded = encode_rows(train)
    meal = FEATURE_NAMES.index("meal.cal")
    missing = np.isnan(encoded[:, meal])
    assert missing.any() and np.all(x_train[missing, meal] == 0.0)
    assert np.all(x_train[missing, FEATURE_NAMES.index("meal.cal_missing")] > 0)
    assert abs(x_train[~missing, meal].mean()) < 1e-5
    assert abs(x_train[~missing, meal].std() - 1.0) < 1e-5
    assert np.isfinite(x_test).all() and x_test.shape == (test.n, len(FEATURE_NAMES))
    assert set(np.unique(encoded[:, FEATURE_NAMES.index("sex=female")])) == {0.0, 1.0}


def test_discretise_places_deaths_and_censorings_in_their_intervals() -> None:
    # edges 0, 60, 120, ..., 730, 1100: interval 1 is [60, 120), its midpoint 90
    time = np.array([100.0, 60.0, 100.0, 70.0, 5.0, 1100.0, 1200.0, 900.0])
    event = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    assert discretise(time, event).tolist() == [
        [1, 1],  # died in [60, 120)
        [1, 1],  # an edge starts its interval
        [2, 0],  # censored past the midpoint: survived [60, 120)
        [1, 0],  # censored before the midpoint: not counted in [60, 120)
        [0, 0],  # censored early in the first interval
        [8, 0],  # at the last edge: survived all eight intervals
        [8, 0],  # a death past the last edge counts as censored there
        [7, 1],  # died in [730, 1100)
    ]
