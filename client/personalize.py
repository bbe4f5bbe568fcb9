"""Personalization at a deployed site: adapt a signed release to this site's own rows, offline.

``fedcare site personalize`` (issue #13). The site holds a verified release
(:class:`fedcare.bundle.ReleasedModel`), its own data file and its state folder. Here:

1. The file goes through the data gate and the task's fixed split
   (:meth:`~fedcare.tasks.Task.split_labelled`): the same training and test rows as in every
   federated round.
2. Both parts are put into the release's input space: the task's ``encode`` and the bundle's
   own standardisation statistics, exactly what :meth:`ReleasedModel.predict_proba` does, so the
   global model is scored as the release serves it.
3. :func:`fedcare.personalization.personalize` adapts the released weights to the training rows
   (setting chosen on a validation part of the TRAINING rows only; module docstring there).
4. Without DP, a local-only model is trained from scratch on the same training rows, in the
   same input space, with the training loop the simulation's baselines use. Under DP it is left
   out: it would be one more training on the rows, and none is done un-accounted.
5. Local-only, global and personalized models are scored on the site's TEST rows (accuracy and
   AUROC), printed at the site.
6. The personalized weights are written at the site (``<state>/personalized/``, safetensors,
   atomically) with a JSON record of the setting and the comparison, and one entry is appended
   to the site's audit log: the release, the setting, the ledger events spent, the saved file's
   sha256 and that nothing was sent.

Nothing here opens a connection or writes outside the state folder.

Differential privacy. Every personalization training is DP-SGD through
:class:`fedcare.personalization.DpAccounting` on the site's own ledger (its state folder), its
own max ε and δ, each checked against the budget before it runs and appended after, under the
site's training lock (so it never interleaves with a federated round of the running daemon).
The events carry a run id of their own (``personalize-<hex>``), rounds 1, 2, ... The ε reported
is computed from the ledger: with and without this personalization's events.
"""

from __future__ import annotations

import hashlib
import time
import uuid
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.bundle import WEIGHTS_FILE, InvalidInput, ReleasedModel
from fedcare.client.audit import audit_log
from fedcare.client.policy import SitePolicy
from fedcare.config import AccountantName
from fedcare.errors import ConfigError, DataError
from fedcare.metrics import BinaryMetrics
from fedcare.personalization import (
    DpAccounting,
    Personalization,
    PersonalizationSettings,
    default_grid,
    personalize,
)
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import DpRequest
from fedcare.privacy.errors import BudgetExceededError
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import ModelName, SiteData, Task, get_task
from fedcare.tasks.base import LabelledRows
from fedcare.training import LocalTrainingPlan, evaluate, train_local

PERSONALIZED_DIR = "personalized"
AUDIT_KIND = "personalization"
RUN_ID_PREFIX = "personalize-"
LOCAL_ONLY_LEFT_OUT_DP = (
    "left out under DP: training it would spend this site's privacy budget on its rows"
)


@dataclass(frozen=True)
class PersonalizeOptions:
    """How the site trains: the defaults are a federated run's (``fedcare.config.RunConfig``)."""

    dp: bool
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    learning_rate: float = 0.02
    batch_size: int = 8
    local_epochs: int = 20  # the local-only model's epochs (a default run's rounds x epochs)
    seed: int = 0
    accountant: AccountantName = AccountantName.RDP

    def __post_init__(self) -> None:
        if self.dp and not self.noise_multiplier > 0:
            raise ConfigError(
                f"--noise-multiplier {self.noise_multiplier!r}: DP-SGD needs noise > 0"
            )
        if not self.max_grad_norm > 0:
            raise ConfigError(f"--max-grad-norm {self.max_grad_norm!r} must be > 0")
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning-rate {self.learning_rate!r} must be > 0")
        if self.batch_size < 1 or self.local_epochs < 1 or self.seed < 0:
            raise ConfigError(
                "--batch-size and --local-epochs must be >= 1 and --seed >= 0; "
                f"got {self.batch_size}, {self.local_epochs}, {self.seed}"
            )


@dataclass(frozen=True)
class PrivacySpent:
    """What this personalization spent on the site's ledger (ε from the ledger, at δ)."""

    run_id: str
    rounds: tuple[int, ...]  # the ledger events this personalization appended
    delta: float
    max_epsilon: float
    epsilon_before: float  # the ledger without this personalization's events
    epsilon_after: float  # the whole ledger


@dataclass(frozen=True)
class SitePersonalization:
    """The site's own comparison and where its personalized model is."""

    site: str
    release: str  # "<name> <version>"
    n_train: int
    n_test: int
    local_only: BinaryMetrics | None  # None under DP (LOCAL_ONLY_LEFT_OUT_DP)
    global_model: BinaryMetrics
    personalized: BinaryMetrics
    result: Personalization
    privacy: PrivacySpent | None
    weights_file: Path
    weights_sha256: str
    record_file: Path


def input_space(released: ReleasedModel, rows: LabelledRows, data: Path) -> np.ndarray:
    """Rows as the release's model sees them: its input rules checked, the task's encoding,
    the bundle's standardisation (what :meth:`ReleasedModel.predict_proba` computes)."""
    try:
        released.check_inputs(rows.columns)
    except InvalidInput as exc:
        raise DataError(f"{data}: {exc}; the release refuses this file") from None
    task = get_task(released.task)
    features: np.ndarray = task.encode(rows.columns)
    scaled: np.ndarray = ((features - released.mean) / released.std).astype(np.float32)
    return scaled


def site_rows(released: ReleasedModel, site: str, data: Path, policy: SitePolicy) -> SiteData:
    """The site's fixed split (through the data gate) in the release's input space."""
    task = get_task(released.task)
    train, test = task.split_labelled(site, data, policy.ignore_columns)
    return SiteData(
        site=site,
        x_train=input_space(released, train, data),
        y_train=train.labels.astype(np.float32),
        x_test=input_space(released, test, data),
        y_test=test.labels.astype(np.float32),
        feature_names=tuple(task.feature_names),
    )


def personalize_site(
    released: ReleasedModel,
    site: str,
    data: Path,
    state_dir: Path,
    policy: SitePolicy,
    options: PersonalizeOptions,
) -> SitePersonalization:
    """Personalize ``released`` at this site (module docstring); sends nothing."""
    if policy.require_dp and not options.dp:
        raise ConfigError(
            "--no-dp: this site's policy requires DP; give --allow-non-dp (as at 'site start') "
            "to personalize without it"
        )
    task = get_task(released.task)
    model_name = ModelName(released.model_name)
    rows = site_rows(released, site, data, policy)
    delta = policy.delta or default_delta(rows.n_train)
    dp: DpAccounting | None = None
    if options.dp:
        state_dir.mkdir(parents=True, exist_ok=True)
        PrivacyLedger(state_dir).read()  # a damaged ledger refuses here, before any training
        dp = DpAccounting(
            request=DpRequest(
                0.0, options.noise_multiplier, options.max_grad_norm, 1, options.accountant
            ),
            state_dir=state_dir,
            run_id=f"{RUN_ID_PREFIX}{uuid.uuid4().hex[:12]}",
            first_round=1,
            delta=delta,
            max_epsilon=policy.max_epsilon,
        )
    settings = PersonalizationSettings(
        default_grid(options.learning_rate, options.dp), options.batch_size, options.seed
    )
    global_state = {k: v.detach().clone() for k, v in released.module.state_dict().items()}
    result = personalize(task, model_name, global_state, rows, settings, dp)
    privacy = _privacy_spent(dp, options.accountant) if dp is not None else None
    if dp is not None and result.trainings == 0:
        assert privacy is not None
        raise BudgetExceededError(
            f"{state_dir}: privacy budget: epsilon {privacy.epsilon_before:.3f} of this site's "
            f"max-epsilon {policy.max_epsilon:g} is spent and the smallest personalization "
            "training would exceed it; nothing was trained, saved or sent"
        )
    loss = task.loss()
    personalized = task.build_model(model_name, seed=options.seed)
    personalized.load_state_dict(result.state, strict=True)
    local_only = None
    if not options.dp:
        local_only = evaluate(
            _local_only(task, model_name, rows, options), loss, rows.x_test, rows.y_test
        )
    comparison = SitePersonalization(
        site=site,
        release=f"{released.name} {released.version}",
        n_train=rows.n_train,
        n_test=rows.n_test,
        local_only=local_only,
        global_model=evaluate(released.module, loss, rows.x_test, rows.y_test),
        personalized=evaluate(personalized, loss, rows.x_test, rows.y_test),
        result=result,
        privacy=privacy,
        weights_file=Path(),
        weights_sha256="",
        record_file=Path(),
    )
    return _save(released, state_dir, comparison)


def _local_only(
    task: Task, model_name: ModelName, rows: SiteData, options: PersonalizeOptions
) -> torch.nn.Module:
    """From scratch on the site's training rows, as the simulation's local-only baseline."""
    model = task.build_model(model_name, seed=options.seed)
    plan = LocalTrainingPlan(
        epochs=options.local_epochs,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        seed=zlib.crc32(f"{options.seed}:baseline:local:{rows.site}".encode()),
    )
    train_local(model, task.loss(), rows.x_train, rows.y_train, plan)
    return model


def _privacy_spent(dp: DpAccounting, accountant: AccountantName) -> PrivacySpent:
    events = PrivacyLedger(dp.state_dir).read()
    ours = [e for e in events if e.run_id == dp.run_id]
    others = [e for e in events if e.run_id != dp.run_id]
    return PrivacySpent(
        run_id=dp.run_id,
        rounds=tuple(e.round for e in ours),
        delta=dp.delta,
        max_epsilon=dp.max_epsilon,
        epsilon_before=epsilon_from_events(others, dp.delta, accountant),
        epsilon_after=epsilon_from_events(events, dp.delta, accountant),
    )


def _metrics(metrics: BinaryMetrics | None) -> dict[str, float | None] | None:
    return None if metrics is None else {"accuracy": metrics.accuracy, "auroc": metrics.auroc}


def _save(
    released: ReleasedModel, state_dir: Path, comparison: SitePersonalization
) -> SitePersonalization:
    """Weights, then the JSON record naming their sha256, then the audit entry: each write
    atomic, so a crash leaves either the previous files or the new ones."""
    from safetensors.torch import save as safetensors_bytes

    folder = state_dir / PERSONALIZED_DIR
    stem = f"{released.name}-{released.version}"
    weights_file, record_file = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    result = comparison.result
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.state.items()}
    payload = safetensors_bytes(tensors)
    digest = hashlib.sha256(payload).hexdigest()
    write_bytes_atomic(weights_file, payload)
    release_sha = hashlib.sha256((released.path / WEIGHTS_FILE).read_bytes()).hexdigest()
    chosen = {
        "method": str(result.chosen.method),
        "epochs": result.chosen.epochs,
        "learning_rate": result.chosen.learning_rate,
        "lambda": result.chosen.lam,
        "refit": result.refit,
        "stopped": result.stopped,
    }
    privacy = comparison.privacy
    spent: dict[str, Any] | None = None
    if privacy is not None:
        spent = {
            "run_id": privacy.run_id,
            "rounds": list(privacy.rounds),
            "delta": privacy.delta,
            "max_epsilon": privacy.max_epsilon,
            "epsilon_before": privacy.epsilon_before,
            "epsilon_after": privacy.epsilon_after,
        }
    events = [{"run_id": privacy.run_id, "round": r} for r in privacy.rounds] if privacy else []
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    release = {"name": released.name, "version": released.version, "weights_sha256": release_sha}
    write_json_atomic(
        record_file,
        {
            "site": comparison.site,
            "time": now,
            "release": release,
            "chosen": chosen,
            "validation": {
                "chosen": _metrics(result.chosen_validation),
                "global": _metrics(result.global_validation),
            },
            "test": {
                "rows": comparison.n_test,
                "local_only": _metrics(comparison.local_only),
                "local_only_note": None if comparison.local_only else LOCAL_ONLY_LEFT_OUT_DP,
                "global": _metrics(comparison.global_model),
                "personalized": _metrics(comparison.personalized),
            },
            "training_rows": comparison.n_train,
            "privacy": spent,
            "weights_file": weights_file.name,
            "weights_sha256": digest,
        },
    )
    audit_log(state_dir).append(
        {
            "time": now,
            "run_id": privacy.run_id if privacy else None,
            "round": None,
            "message_type": None,
            "kind": AUDIT_KIND,
            "release": release,
            "chosen": chosen,
            "ledger_events": events,
            "saved": {"file": f"{PERSONALIZED_DIR}/{weights_file.name}", "sha256": digest},
            "sent": "nothing",
        }
    )
    return replace(
        comparison, weights_file=weights_file, weights_sha256=digest, record_file=record_file
    )
