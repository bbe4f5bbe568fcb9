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

Exactly-once accounting. A round's privacy event is in the ledger before its reply leaves, so a
reply lost on the way (a coordinator crash, a dropped connection) is still counted: the site's ε
never misses a release. The other half is a request that comes again - the coordinator retried,
or resumed the run (a new Flower run, the same run uid, :data:`fedcare.messages.RUN_UID`) - for a
round the ledger already holds. Training it again would spend twice for one round's update; so
after the ledger append the site keeps the round's reply in ``<state-dir>/replies/`` (the
trained weights as safetensors, and a JSON naming the run, the round, the sha256 of the global
weights it was trained from and of the request, and the metrics that are not recomputed), one
round per run, each file written atomically. A repeat of an accounted round, from the same global
weights and with the same request, is answered from that cache with no training and no new
event: re-sending an output the ledger already accounts for is post-processing and costs no
privacy. Its ε is computed from the ledger as for any reply. A repeat the cache cannot answer
(none kept, other global weights, another request) trains again and records a second event,
counted like any other, with a warning in the site's log: ε stays exact either way, and the cache
only ever saves spending, never hides it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from fedcare import messages as keys
from fedcare.atomic import write_bytes_atomic, write_json_atomic
from fedcare.client.request import RoundRequest
from fedcare.client.site import SiteIdentity, load_site_data
from fedcare.config import Weighting
from fedcare.locking import LockTimeoutError, file_lock
from fedcare.privacy.accounting import default_delta, epsilon_from_events
from fedcare.privacy.budget import check_budget, plan_round
from fedcare.privacy.errors import PrivacyError
from fedcare.privacy.events import EVENT_KIND, GAUSSIAN_KIND, NON_PRIVATE_KIND, PrivacyEvent
from fedcare.privacy.ledger import PrivacyLedger
from fedcare.tasks import SiteData, get_task
from fedcare.training import LocalTrainingPlan, train_local

TRAINING_LOCK_FILE = "training.lock"
TRAINING_LOCK_TIMEOUT_S = 300.0  # a DP round here takes seconds; Flower's task outlives this
REPLIES_DIR = "replies"  # under the state dir: the latest trained reply of each run
TRAINING_KINDS = frozenset({EVENT_KIND, NON_PRIVATE_KIND})  # the events a train round records

log = logging.getLogger(__name__)


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
        return _answer_locked(
            request,
            site,
            global_state,
            run_id,
            data or load_site_data(request.task, site, request.preprocessing),
        )


def _answer_locked(
    request: RoundRequest,
    site: SiteIdentity,
    global_state: dict[str, torch.Tensor],
    run_id: str,
    data: SiteData,
) -> TrainOutcome:
    """A repeat of an accounted round from the reply cache; else train, then cache the reply."""
    history = PrivacyLedger(site.state_dir).read()
    incoming = state_digest(global_state)
    if is_repeat(history, run_id, request.server_round):
        cached = _read_reply(site.state_dir, run_id, request, incoming)
        if isinstance(cached, TrainOutcome):
            return _replay(cached, request, site, history, data)
        log.warning(
            "run %s round %s is already in the privacy ledger and %s: training it again, "
            "recorded as a second privacy event",
            run_id, request.server_round, cached,
        )  # fmt: skip
    outcome = _train_locked(request, site, global_state, run_id, data)
    try:
        _write_reply(site.state_dir, run_id, request, incoming, outcome)
    except Exception as exc:  # the round is accounted; a repeat of it then trains again
        log.warning("run %s round %s: reply not cached: %s", run_id, request.server_round, exc)
    return outcome


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
    # the run's statistics release counts against the run's target (privacy.budget.plan_round)
    releases = [e for e in history if e.run_id == run_id and e.kind == GAUSSIAN_KIND]
    try:
        dp_plan = plan_round(
            request.dp, data.n_train, request.batch_size, request.local_epochs, delta, releases
        )
    except PrivacyError as exc:
        raise RoundRefused(keys.REFUSED_BUDGET, str(exc)) from None
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


# -- the reply cache (module docstring: exactly-once accounting) ----------------------------


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict: each tensor's name, dtype, shape and bytes, by sorted name.

    The same weights give the same digest whatever the dict's order or the tensors' layout.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header = json.dumps([name, str(tensor.dtype), list(tensor.shape), len(raw)])
        digest.update(header.encode("utf-8") + b"\n" + raw)
    return digest.hexdigest()


def is_repeat(history: tuple[PrivacyEvent, ...], run_id: str, server_round: int) -> bool:
    """Whether the ledger already holds a training event of this run and round."""
    return any(
        e.run_id == run_id and e.round == server_round and e.kind in TRAINING_KINDS for e in history
    )


def _request_digest(request: RoundRequest) -> str:
    text = json.dumps(dataclasses.asdict(request), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reply_paths(state_dir: Path, run_id: str, server_round: int) -> tuple[Path, Path]:
    """The cached weights and their JSON; the folder is named by the run id's digest."""
    folder = state_dir / REPLIES_DIR / hashlib.sha256(run_id.encode("utf-8")).hexdigest()
    return folder / f"round-{server_round}.safetensors", folder / f"round-{server_round}.json"


def _write_reply(
    state_dir: Path, run_id: str, request: RoundRequest, incoming: str, outcome: TrainOutcome
) -> None:
    """Cache ``outcome`` (weights first, the JSON that vouches for them last), then drop the
    run's other rounds. Called only after the round's event is in the ledger."""
    weights_path, meta_path = _reply_paths(state_dir, run_id, request.server_round)
    tensors = {name: t.detach().cpu().contiguous() for name, t in outcome.state.items()}
    raw = save_safetensors_bytes(tensors)
    write_bytes_atomic(weights_path, raw)
    kept = {k: v.hex() for k, v in outcome.metrics.items() if k != keys.EPSILON}  # hex: exact
    meta = {
        "run_id": run_id,
        "round": request.server_round,
        "global_sha256": incoming,
        "request_sha256": _request_digest(request),
        "weights_sha256": hashlib.sha256(raw).hexdigest(),
        "names": list(outcome.state),
        "metrics": kept,
    }
    write_json_atomic(meta_path, meta)
    for path in meta_path.parent.iterdir():
        if path not in (weights_path, meta_path):
            path.unlink(missing_ok=True)


def _read_reply(
    state_dir: Path, run_id: str, request: RoundRequest, incoming: str
) -> TrainOutcome | str:
    """The cached reply of this run and round for these global weights and this request, or
    why there is none to use. Metrics without ε: :func:`_replay` computes it from the ledger."""
    weights_path, meta_path = _reply_paths(state_dir, run_id, request.server_round)
    if not meta_path.exists():
        return "no reply of it is cached"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        raw = weights_path.read_bytes()
        same = (
            meta["run_id"] == run_id
            and meta["round"] == request.server_round
            and meta["request_sha256"] == _request_digest(request)
        )
        if not same:
            return "its cached reply answers another request"
        if meta["global_sha256"] != incoming:
            return "its cached reply was trained from other global weights"
        if meta["weights_sha256"] != hashlib.sha256(raw).hexdigest():
            return "its cached weights do not match their record"
        tensors = load_safetensors_bytes(raw)
        state = {name: tensors[name] for name in meta["names"]}
        metrics = {k: float.fromhex(v) for k, v in meta["metrics"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its cached reply is unreadable ({exc})"
    return TrainOutcome(state, metrics)


def _replay(
    cached: TrainOutcome,
    request: RoundRequest,
    site: SiteIdentity,
    history: tuple[PrivacyEvent, ...],
    data: SiteData,
) -> TrainOutcome:
    """Send an accounted round's reply again: no training, no new event; ε from the ledger."""
    if request.dp is None and site.policy.require_dp:  # the policy changed since it trained
        raise RoundRefused(keys.REFUSED_DP_REQUIRED, "site policy requires DP training")
    log.info("round %s answered from the reply cache, not trained again", request.server_round)
    if request.dp is None:
        return cached
    delta = site.policy.delta or default_delta(data.n_train)
    epsilon = epsilon_from_events(history, delta, request.dp.accountant)
    return TrainOutcome(cached.state, cached.metrics | {keys.EPSILON: epsilon})
