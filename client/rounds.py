"""One training round at a site: policy and budget first, then training, then the ledger.

Order matters: the site checks its policy and budget before touching the model, and records the
privacy event durably (fsynced) before the update is handed back to Flower to send.

One round at a time per site: an exclusive lock on ``<state-dir>/training.lock`` is held from the
ledger read through the budget check and training to the ledger append, so two runs at one site
(two coordinators, a run beside a simulation on the same state) are serialised and the second
checks its budget against the first's spending. A round that cannot get the lock within
``TRAINING_LOCK_TIMEOUT_S`` is declined as ``site-busy``.

What a reply carries: a non-private round sends its training loss and aggregation weight; a DP
round sends only its cumulative ε, computed from the ledger (the accounted quantity), and the
weight. The DP training loss is an exact, un-noised function of the records: sending it would
void the guarantee the ledger records, so it is never computed.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from fedcare import messages as keys
from fedcare.client.request import RoundRequest
from fedcare.client.site import SiteIdentity, load_site_data
from fedcare.config import Weighting
from fedcare.locking import LockTimeoutError, file_lock
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import check_budget, plan_round
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.events import NON_PRIVATE_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import SiteData, get_task
from fedcare.training import LocalTrainingPlan, train_local

TRAINING_LOCK_FILE = "training.lock"
TRAINING_LOCK_TIMEOUT_S = 300.0  # a DP round here takes seconds; Flower's task outlives this


class RoundRefused(PrivacyError):
    """The site declines this round; ``reason`` is one of the allow-listed refusal strings."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class TrainOutcome:
    """The trained weights and the allow-listed metrics to send with them."""

    state: dict[str, torch.Tensor]
    metrics: dict[str, float]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def train_round(
    request: RoundRequest,
    site: SiteIdentity,
    global_state: dict[str, torch.Tensor],
    run_id: str,
    lock_timeout: float = TRAINING_LOCK_TIMEOUT_S,
    *,
    data: SiteData | None = None,
) -> TrainOutcome:
    """Train this round (see module docstring); raises :class:`RoundRefused` to decline.
    ``data``: the site's split when the caller already loaded it (None: read it here)."""
    with ExitStack() as stack:
        try:
            lock = file_lock(site.state_dir / TRAINING_LOCK_FILE, timeout=lock_timeout)
            stack.enter_context(lock)
        except LockTimeoutError as exc:
            raise RoundRefused(keys.REFUSED_BUSY, f"another round holds the site: {exc}") from None
        return _train_locked(
            request,
            site,
            global_state,
            run_id,
            data or load_site_data(request.task, site, request.preprocessing),
        )


def _train_locked(
    request: RoundRequest,
    site: SiteIdentity,
    global_state: dict[str, torch.Tensor],
    run_id: str,
    data: SiteData,
) -> TrainOutcome:
    task = get_task(request.task)
    ledger = PrivacyLedger(site.state_dir)
    history = ledger.read()  # a damaged ledger stops the round here, before any training
    model = task.build_model(request.model, seed=request.seed)
    model.load_state_dict(global_state, strict=True)
    weight = keys.bucket_count(data.n_train) if request.weighting is Weighting.EXAMPLES else 1.0
    if request.dp is None:
        if site.policy.require_dp:
            raise RoundRefused(keys.REFUSED_DP_REQUIRED, "site policy requires DP training")
        plan = LocalTrainingPlan(
            epochs=request.local_epochs,
            batch_size=request.batch_size,
            learning_rate=request.learning_rate,
            seed=request.shuffle_seed(site.name),
            proximal_mu=request.proximal_mu,
        )
        anchor = global_state if request.proximal_mu > 0 else None
        loss = train_local(model, task.loss(), data.x_train, data.y_train, plan, anchor)
        event = PrivacyEvent(
            run_id, request.server_round, 0.0, 1.0, 0, 0.0, 0.0, _now(), kind=NON_PRIVATE_KIND
        )
        ledger.append(event)
        return TrainOutcome(model.state_dict(), {keys.TRAIN_LOSS: loss, keys.WEIGHT: weight})

    delta = site.policy.delta or default_delta(data.n_train)
    dp_plan = plan_round(request.dp, data.n_train, request.batch_size, request.local_epochs, delta)
    planned = PrivacyEvent(
        run_id, request.server_round, dp_plan.noise_multiplier, dp_plan.sample_rate,
        dp_plan.steps, delta, dp_plan.max_grad_norm, _now(),
    )  # fmt: skip
    try:
        check_budget(history, planned, delta, site.policy.max_epsilon, request.dp.accountant)
    except PrivacyError as exc:
        raise RoundRefused(keys.REFUSED_BUDGET, str(exc)) from None
    from fedcare.privacy.dp_sgd import DpSgdSettings, train_dp_sgd  # Opacus only when needed

    result = train_dp_sgd(
        model, task.loss(), data.x_train, data.y_train,
        DpSgdSettings(
            noise_multiplier=dp_plan.noise_multiplier, max_grad_norm=dp_plan.max_grad_norm,
            sample_rate=dp_plan.sample_rate, epochs=request.local_epochs,
            learning_rate=request.learning_rate,
        ),
    )  # fmt: skip
    event = PrivacyEvent(
        run_id, request.server_round, dp_plan.noise_multiplier, dp_plan.sample_rate,
        result.steps, delta, dp_plan.max_grad_norm, _now(),
    )  # fmt: skip
    events = ledger.append(event)  # durable before anything is sent
    epsilon = epsilon_from_events(events, delta, request.dp.accountant)
    return TrainOutcome(model.state_dict(), {keys.EPSILON: epsilon, keys.WEIGHT: weight})
