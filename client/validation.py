"""What a site does for cross-site validation: release noised feature sums, score a candidate.

Feature sums (``query.feature_stats``): holding the site's training lock, the site reads its
ledger, plans the release as one Gaussian mechanism (noise multiplier σ from the request or
:data:`fedcare.feature_stats.DEFAULT_NOISE_MULTIPLIER`, sample rate 1, one step, its own δ),
checks that ε of its whole ledger plus this release stays within its budget (the same check as
a DP round; refused as ``privacy-budget-exhausted`` otherwise), adds the noise (drawn from OS
entropy, never from the run's seed) and appends the event, fsynced, before the sums are returned
to be sent. A site that allows non-private rounds and has run one already has an infinite ε; it
releases without a check (its ledger already says it is not private; the event is recorded).

Validation (``query.validate``): the site scores the candidate weights on its held-out test rows
(the FLamby split), standardised with the federation's statistics from the request, and returns
:func:`fedcare.validation_report.validation_report` of them. The coordinator's subgroup
thresholds are raised to the site's floor; a request cannot make a site report a smaller cell.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from flwr.app import ArrayRecord, ConfigRecord

from fedcare import messages as keys
from fedcare.client.rounds import TRAINING_LOCK_FILE, TRAINING_LOCK_TIMEOUT_S, RoundRefused
from fedcare.client.site import SiteIdentity
from fedcare.config import AccountantName
from fedcare.feature_stats import DEFAULT_NOISE_MULTIPLIER, FeatureStats, noised_sums, sensitivity
from fedcare.locking import LockTimeoutError, file_lock
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import check_budget
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.events import GAUSSIAN_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import ModelName, get_task
from fedcare.validation_report import validation_report
from fedcare.weights import load_record

# The smallest cells a site reports, whatever the coordinator asks: patients, and events and
# non-events each.
SITE_MIN_SUBGROUP_PATIENTS = 10
SITE_MIN_SUBGROUP_EVENTS = 5


def _config_number(config: ConfigRecord, key: str, default: float | None = None) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"request config {key!r} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FeatureStatsRequest:
    """What ``query.feature_stats`` asks: the task, the noise multiplier and the accountant."""

    task: str
    noise_multiplier: float
    accountant: AccountantName
    server_round: int

    @classmethod
    def from_record(cls, config: ConfigRecord) -> FeatureStatsRequest:
        sigma = _config_number(config, keys.FEATURE_STATS_NOISE, DEFAULT_NOISE_MULTIPLIER)
        if not sigma > 0 or not math.isfinite(sigma):
            raise ValueError(f"{keys.FEATURE_STATS_NOISE} must be > 0, got {sigma}")
        return cls(
            task=str(config[keys.TASK]),
            # the site's floor, like its cell minimum: a coordinator may ask for more noise,
            # never less (a site whose ε is already ∞ would otherwise send near-exact sums)
            noise_multiplier=max(sigma, DEFAULT_NOISE_MULTIPLIER),
            accountant=AccountantName(str(config.get(keys.DP_ACCOUNTANT, AccountantName.RDP))),
            server_round=int(_config_number(config, keys.SERVER_ROUND, 0)),
        )


def release_feature_sums(
    request: FeatureStatsRequest,
    site: SiteIdentity,
    run_id: str,
    lock_timeout: float = TRAINING_LOCK_TIMEOUT_S,
) -> list[float]:
    """The site's noised sums, recorded in its ledger first (see module docstring)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(
                file_lock(site.state_dir / TRAINING_LOCK_FILE, timeout=lock_timeout)
            )
        except LockTimeoutError as exc:
            raise RoundRefused(keys.REFUSED_BUSY, f"another round holds the site: {exc}") from None
        return _release_locked(request, site, run_id)


def _release_locked(request: FeatureStatsRequest, site: SiteIdentity, run_id: str) -> list[float]:
    task = get_task(request.task)
    ledger = PrivacyLedger(site.state_dir)
    history = ledger.read()  # a damaged ledger refuses the release here
    train, _ = task.split_labelled(site.name, site.data_path, site.policy.ignore_columns)
    delta = site.policy.delta or default_delta(train.n)
    bounds = task.feature_bounds()
    event = PrivacyEvent(
        run_id, request.server_round, request.noise_multiplier, 1.0, 1, delta,
        sensitivity(len(bounds)), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        kind=GAUSSIAN_KIND,
    )  # fmt: skip
    spent = epsilon_from_events(history, delta, request.accountant)
    if site.policy.require_dp or math.isfinite(spent):
        try:
            check_budget(history, event, delta, site.policy.max_epsilon, request.accountant)
        except PrivacyError as exc:
            raise RoundRefused(keys.REFUSED_BUDGET, str(exc)) from None
    sums = noised_sums(
        task.encode(train.columns), bounds, request.noise_multiplier, np.random.default_rng()
    )
    ledger.append(event)  # durable before anything is sent
    return sums


@dataclass(frozen=True)
class ValidationRequest:
    """What ``query.validate`` asks: task, model, the federation's statistics, thresholds."""

    task: str
    model: ModelName
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_patients: int
    min_events: int

    @classmethod
    def from_record(cls, config: ConfigRecord) -> ValidationRequest:
        def floats(key: str) -> tuple[float, ...]:
            values = config[key]
            if not isinstance(values, list):
                raise ValueError(f"request config {key!r} must be a list of numbers")
            return tuple(float(v) for v in values)

        return cls(
            task=str(config[keys.TASK]),
            model=ModelName(str(config[keys.MODEL])),
            seed=int(_config_number(config, keys.SEED)),
            mean=floats(keys.PREPROCESSING_MEAN),
            std=floats(keys.PREPROCESSING_STD),
            min_patients=int(_config_number(config, keys.MIN_SUBGROUP_PATIENTS)),
            min_events=int(_config_number(config, keys.MIN_SUBGROUP_EVENTS)),
        )


def score_test_rows(
    request: ValidationRequest, site: SiteIdentity, arrays: ArrayRecord
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], dict[str, npt.NDArray[np.bool_]]]:
    """Labels, the candidate's probabilities and the subgroup masks of the site's test rows.

    Stays at the site: only :func:`validate_candidate`'s aggregates leave it.
    """
    task = get_task(request.task)
    _, test = task.split_labelled(site.name, site.data_path, site.policy.ignore_columns)
    stats = FeatureStats(task.feature_names, request.mean, request.std)
    x = stats.standardise(task.encode(test.columns))
    model = task.build_model(request.model, seed=request.seed)
    load_record(model, arrays)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x))).reshape(-1)
    probability = torch.sigmoid(logits.double()).numpy()
    return test.labels, probability, task.subgroups(test.columns)


def validate_candidate(
    request: ValidationRequest, site: SiteIdentity, arrays: ArrayRecord
) -> dict[str, float]:
    """The report of the candidate on the site's test rows; small cells are left out."""
    labels, probability, subgroups = score_test_rows(request, site, arrays)
    return validation_report(
        labels,
        probability,
        subgroups,
        min_patients=max(request.min_patients, SITE_MIN_SUBGROUP_PATIENTS),
        min_events=max(request.min_events, SITE_MIN_SUBGROUP_EVENTS),
    )
