"""The fedcare ClientApp: what a hospital runs on each request from the coordinator.

It trains or evaluates on the site's own records and replies with weights and the allow-listed
metrics of :mod:`fedcare.messages` only; records, predictions and exact counts never leave.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcare import messages as keys
from fedcare.client.site import SiteIdentity, load_site_data, resolve_site
from fedcare.config import Weighting
from fedcare.tasks import ModelName, get_task
from fedcare.training import LocalTrainingPlan, evaluate, train_local
from fedcare.weights import load_record, to_record

app = ClientApp()


@dataclass(frozen=True)
class RoundRequest:
    """The coordinator's per-round instructions, read from the message's ConfigRecord."""

    task: str
    model: ModelName
    server_round: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    weighting: Weighting
    proximal_mu: float

    @classmethod
    def from_record(cls, config: ConfigRecord) -> RoundRequest:
        return cls(
            task=str(config[keys.TASK]),
            model=ModelName(str(config[keys.MODEL])),
            server_round=int(config.get(keys.SERVER_ROUND, 0)),  # type: ignore[arg-type]
            local_epochs=int(config[keys.LOCAL_EPOCHS]),  # type: ignore[arg-type]
            batch_size=int(config[keys.BATCH_SIZE]),  # type: ignore[arg-type]
            learning_rate=float(config[keys.LEARNING_RATE]),  # type: ignore[arg-type]
            seed=int(config[keys.SEED]),  # type: ignore[arg-type]
            weighting=Weighting(str(config[keys.WEIGHTING])),
            proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),  # type: ignore[arg-type]
        )


def _round_seed(request: RoundRequest, site: SiteIdentity) -> int:
    """Distinct, reproducible shuffling seed per run seed, round and site."""
    return zlib.crc32(f"{request.seed}:{request.server_round}:{site.name}".encode())


def _reply(
    msg: Message, site: SiteIdentity, metrics: dict[str, float], arrays: ArrayRecord | None
) -> Message:
    unexpected = set(metrics) - keys.ALLOWED_METRICS
    if unexpected:  # a programming error, never a reason to release anything
        raise RuntimeError(f"metric(s) {sorted(unexpected)} are not on the site's allow-list")
    content = RecordDict(
        {keys.METRICS: MetricRecord(metrics), keys.SITE: ConfigRecord({keys.SITE_NAME: site.name})}
    )
    if arrays is not None:
        content[keys.ARRAYS] = arrays
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on the site's training rows."""
    torch.set_num_threads(1)
    site = resolve_site(context)
    request = RoundRequest.from_record(msg.content[keys.CONFIG])  # type: ignore[arg-type]
    task = get_task(request.task)
    data = load_site_data(request.task, site)
    model = task.build_model(request.model, seed=request.seed)
    global_arrays: ArrayRecord = msg.content[keys.ARRAYS]  # type: ignore[assignment]
    load_record(model, global_arrays)
    plan = LocalTrainingPlan(
        epochs=request.local_epochs,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        seed=_round_seed(request, site),
        proximal_mu=request.proximal_mu,
    )
    anchor = global_arrays.to_torch_state_dict() if request.proximal_mu > 0 else None
    loss = train_local(model, task.loss(), data.x_train, data.y_train, plan, anchor)
    weight = keys.bucket_count(data.n_train) if request.weighting is Weighting.EXAMPLES else 1.0
    return _reply(msg, site, {keys.TRAIN_LOSS: loss, keys.WEIGHT: weight}, to_record(model))


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the site's held-out test rows."""
    torch.set_num_threads(1)
    site = resolve_site(context)
    request = RoundRequest.from_record(msg.content[keys.CONFIG])  # type: ignore[arg-type]
    task = get_task(request.task)
    data = load_site_data(request.task, site)
    model = task.build_model(request.model, seed=request.seed)
    load_record(model, msg.content[keys.ARRAYS])  # type: ignore[arg-type]
    result = evaluate(model, task.loss(), data.x_test, data.y_test)
    metrics = {
        keys.EVAL_LOSS: result.loss,
        keys.EVAL_ACCURACY: result.accuracy,
        keys.EVAL_AUROC: float("nan") if result.auroc is None else result.auroc,
        keys.WEIGHT: 1.0,
    }
    return _reply(msg, site, metrics, arrays=None)
