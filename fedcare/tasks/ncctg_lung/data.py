"""The NCCTG lung-cancer patients, split into sites by institution and into train/test per site.

The data ship inside lifelines (``lifelines.datasets.load_lung``), so this federation needs no
download and no file of ours. Institutions are the natural hospitals, but eleven of the
eighteen enrolled fewer than 15 patients: too few to train or test on, so consecutive
institutions are merged by a fixed rule (:func:`group_institutions`) that anyone can redo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split

from fedcare.errors import DataError
from fedcare.tasks.ncctg_lung.schema import (
    EVENT,
    INSTITUTION,
    MIN_SITE_PATIENTS,
    RAW_FEATURES,
    SITE_COLUMNS,
    SPLIT_SEED,
    TEST_FRACTION,
    TIME,
)

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class SurvivalRows:
    """Patients as raw values: features (``RAW_FEATURES`` order, NaN = missing), time, event.

    One row per patient, so one row is one privacy unit. Never leaves the site.
    """

    features: FloatArray
    time: FloatArray
    event: FloatArray

    def __post_init__(self) -> None:
        n = self.time.shape[0]
        if self.features.shape != (n, len(RAW_FEATURES)) or self.event.shape != (n,):
            raise DataError(
                f"survival rows: features {self.features.shape}, time {self.time.shape}, "
                f"event {self.event.shape}; expected ({n}, {len(RAW_FEATURES)}), ({n},), ({n},)"
            )

    @property
    def n(self) -> int:
        return int(self.time.shape[0])

    def take(self, index: IndexArray) -> SurvivalRows:
        """The patients at ``index``, in that order."""
        return SurvivalRows(self.features[index], self.time[index], self.event[index])

    @classmethod
    def from_table(cls, table: FloatArray) -> SurvivalRows:
        """Rows from a table whose columns are ``SITE_COLUMNS`` (a site file's layout)."""
        features = [SITE_COLUMNS.index(name) for name in RAW_FEATURES]
        return cls(
            features=np.ascontiguousarray(table[:, features], dtype=np.float64),
            time=table[:, SITE_COLUMNS.index(TIME)].astype(np.float64),
            event=table[:, SITE_COLUMNS.index(EVENT)].astype(np.float64),
        )

    def to_table(self) -> FloatArray:
        """The rows as a table whose columns are ``SITE_COLUMNS``."""
        by_name = {TIME: self.time, EVENT: self.event}
        by_name.update({name: self.features[:, j] for j, name in enumerate(RAW_FEATURES)})
        return np.column_stack([by_name[name] for name in SITE_COLUMNS])

    @staticmethod
    def concatenate(parts: list[SurvivalRows]) -> SurvivalRows:
        """All patients of ``parts``, in order (the pooled baseline's rows)."""
        return SurvivalRows(
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.time for p in parts]),
            np.concatenate([p.event for p in parts]),
        )


@dataclass(frozen=True)
class SiteGroup:
    """One site: the institutions it merges (ascending ids) and its patient count."""

    name: str
    institutions: tuple[int, ...]
    n_patients: int


def _site_name(institutions: tuple[int, ...]) -> str:
    first, last = institutions[0], institutions[-1]
    return f"inst{first:02d}" if first == last else f"inst{first:02d}-{last:02d}"


def group_institutions(
    counts: Mapping[int, int], minimum: int = MIN_SITE_PATIENTS
) -> tuple[SiteGroup, ...]:
    """Merge institutions into sites of at least ``minimum`` patients, by a fixed rule.

    Institutions in ascending id join the open group until it holds ``minimum`` patients,
    which closes it; a last group still short of ``minimum`` joins the group before it. The
    rule depends on the ids and counts only (no randomness), so every reader gets the same
    sites; consecutive ids keep the merge blind to outcomes.
    """
    if not counts or sum(counts.values()) < minimum:
        raise DataError(
            f"site grouping: {sum(counts.values())} patient(s) in {len(counts)} institution(s); "
            f"a site needs at least {minimum}"
        )
    groups: list[list[int]] = []
    open_group: list[int] = []
    for inst in sorted(counts):
        open_group.append(inst)
        if sum(counts[i] for i in open_group) >= minimum:
            groups.append(open_group)
            open_group = []
    if open_group:
        if groups:
            groups[-1].extend(open_group)
        else:
            groups.append(open_group)
    return tuple(
        SiteGroup(_site_name(tuple(g)), tuple(g), sum(counts[i] for i in g)) for g in groups
    )


def load_lung_table() -> tuple[FloatArray, npt.NDArray[np.float64]]:
    """lifelines' 228 patients: (``SITE_COLUMNS`` table, institution id; NaN = unknown)."""
    from lifelines.datasets import load_lung  # lifelines is slow to import; only when needed

    frame = load_lung()
    table = frame[list(SITE_COLUMNS)].to_numpy(dtype=np.float64)
    return table, frame[INSTITUTION].to_numpy(dtype=np.float64)


def site_groups() -> tuple[SiteGroup, ...]:
    """The task's sites (see :func:`group_institutions`); the one patient with no
    institution recorded belongs to no site and is left out."""
    _, inst = load_lung_table()
    ids, counts = np.unique(inst[~np.isnan(inst)].astype(int), return_counts=True)
    return group_institutions(dict(zip(ids.tolist(), counts.tolist(), strict=True)))


def site_rows() -> dict[str, SurvivalRows]:
    """Site name -> its patients (lifelines' row order), for every site of :func:`site_groups`."""
    table, inst = load_lung_table()
    return {
        group.name: SurvivalRows.from_table(table[np.isin(inst, group.institutions)])
        for group in site_groups()
    }


def split_indices(event: FloatArray) -> tuple[IndexArray, IndexArray]:
    """The site's fixed train/test split, stratified by the event flag (sorted indices)."""
    train_idx, test_idx = train_test_split(
        np.arange(event.shape[0]),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        shuffle=True,
        stratify=event,
    )
    return np.sort(train_idx), np.sort(test_idx)


def split_site(rows: SurvivalRows) -> tuple[SurvivalRows, SurvivalRows]:
    """The site's training and test patients (:func:`split_indices`)."""
    train_idx, test_idx = split_indices(rows.event)
    return rows.take(train_idx), rows.take(test_idx)
