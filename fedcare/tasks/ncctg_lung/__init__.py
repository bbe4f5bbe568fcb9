"""Time to death on the NCCTG lung-cancer trial, federated across its institutions.

A second embedded federation (issue #14), of a different kind than heart disease: a
discrete-time survival model on 227 patients from 18 institutions merged into six sites. This
package is the task's standalone core (data and sites, model and per-patient loss, metrics,
non-federated baselines); README.md in this folder states every choice and its reason.
"""

from __future__ import annotations

from fedcare.tasks.ncctg_lung.baselines import BaselineReport, Method, run_baselines
from fedcare.tasks.ncctg_lung.data import (
    SiteGroup,
    SurvivalRows,
    group_institutions,
    site_groups,
    site_rows,
    split_site,
)
from fedcare.tasks.ncctg_lung.metrics import (
    CensoringDistribution,
    SiteScores,
    concordance,
    integrated_brier_score,
)
from fedcare.tasks.ncctg_lung.model import DiscreteHazardNLL, build_model, predict_survival
from fedcare.tasks.ncctg_lung.preprocess import Scaling, discretise
from fedcare.tasks.ncctg_lung.site_files import read_site_file, write_site_file, write_site_files
from fedcare.tasks.ncctg_lung.training import TrainConfig, train_model

__all__ = [
    "BaselineReport",
    "CensoringDistribution",
    "DiscreteHazardNLL",
    "Method",
    "Scaling",
    "SiteGroup",
    "SiteScores",
    "SurvivalRows",
    "TrainConfig",
    "build_model",
    "concordance",
    "discretise",
    "group_institutions",
    "integrated_brier_score",
    "predict_survival",
    "read_site_file",
    "run_baselines",
    "site_groups",
    "site_rows",
    "split_site",
    "train_model",
    "write_site_file",
    "write_site_files",
]
