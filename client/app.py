"""The fedcare ClientApp: what a hospital runs on each request from the coordinator.

It trains or evaluates on the site's own records and replies with weights and the allow-listed
metrics of :mod:`fedcare.messages` only; records, predictions and exact counts never leave. A
round the site declines gets a Flower error reply carrying only an allow-listed reason. Every
reply of a deployed site also carries its ledger head, signed with the site key
(:mod:`fedcare.privacy.ledger_signing`), so the coordinator sees a ledger that went back.

Two queries serve cross-site validation (:mod:`fedcare.client.validation`):
``query.feature_stats`` sends the site's noised feature sums (a privacy event, in the ledger
before the reply leaves), ``query.validate`` the aggregate report of a candidate model on the
site's test rows. Each reply has its own allow-list; neither carries arrays.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import cast

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedcare import messages as keys
from fedcare.client.audit import audit_mod
from fedcare.client.request import RoundRequest
from fedcare.client.rounds import RoundRefused, train_round
from fedcare.client.secure_aggregation import secure_aggregation_mod
from fedcare.client.site import SiteIdentity, load_site_data, resolve_site
from fedcare.client.validation import (
    FeatureStatsRequest,
    ValidationRequest,
    release_feature_sums,
    validate_candidate,
)
from fedcare.errors import DataError
from fedcare.privacy.errors import LedgerCorruptError
from fedcare.privacy.ledger_signing import current_head, load_private_key, sign_head
from fedcare.tasks import SiteData, get_task
from fedcare.training import evaluate
from fedcare.weights import load_record

log = logging.getLogger(__name__)


def _reply(
    msg: Message,
    site: SiteIdentity,
    metrics: dict[str, float] | dict[str, list[float]],
    arrays: ArrayRecord | None,
    allowed: frozenset[str] = keys.ALLOWED_METRICS,
) -> Message:
    unexpected = set(metrics) - allowed
    if unexpected:  # a programming error, never a reason to release anything
        raise RuntimeError(f"metric(s) {sorted(unexpected)} are not on the site's allow-list")
    content = RecordDict(
        {
            keys.METRICS: MetricRecord(cast(dict[str, MetricRecordValues], metrics)),
            keys.SITE: ConfigRecord({keys.SITE_NAME: site.name}),
        }
    )
    if site.key_path is not None:
        text, signature = sign_head(
            current_head(site.state_dir, site.name), load_private_key(site.key_path)
        )
        content[keys.LEDGER] = ConfigRecord(
            {keys.LEDGER_HEAD: text, keys.LEDGER_SIGNATURE: signature}
        )
    if arrays is not None:
        content[keys.ARRAYS] = arrays
    return Message(content=content, reply_to=msg)


Handler = Callable[[Message, Context], Message]


def _category(exc: Exception) -> str:
    if isinstance(exc, RoundRefused):
        return exc.reason
    if isinstance(exc, LedgerCorruptError):
        return keys.FAILED_LEDGER
    if isinstance(exc, DataError):
        return keys.FAILED_DATA
    return keys.FAILED_SITE


def site_guarded(handler: Handler) -> Handler:
    """Turn any failure into an error reply that names only its category.

    Flower would otherwise send the exception's text to the coordinator, and a data error can
    quote a patient's value. The full reason goes to the site's own log.
    """

    @functools.wraps(handler)
    def guarded(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            category = _category(exc)
            log.warning(
                "site declined %s request (%s): %s", msg.metadata.message_type, category, exc
            )
            return Message(Error(code=keys.REFUSAL_CODES[category], reason=category), reply_to=msg)

    return guarded


@site_guarded
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on the site's training rows.

    With ``evaluate-first`` in the request the site first evaluates the weights it received
    (the previous round's global model) on its test rows, exactly as an evaluate request would,
    and sends that evaluation beside its update: the coordinator then needs no separate
    evaluate exchange for it. A refused round sends no evaluation; the coordinator asks again.
    """
    torch.set_num_threads(1)
    site = resolve_site(context)
    config = msg.content.config_records[keys.CONFIG]
    request = RoundRequest.from_record(config)
    global_arrays = msg.content.array_records[keys.ARRAYS]
    data = load_site_data(request.task, site, request.preprocessing)  # once for both halves
    evaluation: dict[str, float] = {}
    if bool(config.get(keys.EVALUATE_FIRST, False)):
        evaluation = _evaluation(request, data, global_arrays)
    state = global_arrays.to_torch_state_dict()
    # A resumed run is a new Flower run: the run uid keeps the ledger and reply cache on one run.
    run_id = request.run_uid if request.run_uid is not None else str(context.run_id)
    outcome = train_round(request, site, state, run_id, data=data)
    return _reply(msg, site, outcome.metrics | evaluation, ArrayRecord(outcome.state))


def _evaluation(request: RoundRequest, data: SiteData, arrays: ArrayRecord) -> dict[str, float]:
    """Loss, accuracy and AUROC of ``arrays`` on the site's held-out test rows."""
    task = get_task(request.task)
    model = task.build_model(request.model, seed=request.seed)
    load_record(model, arrays)
    result = evaluate(model, task.loss(), data.x_test, data.y_test)
    return {
        keys.EVAL_LOSS: result.loss,
        keys.EVAL_ACCURACY: result.accuracy,
        keys.EVAL_AUROC: float("nan") if result.auroc is None else result.auroc,
    }


@site_guarded
def evaluate_global(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the site's held-out test rows."""
    torch.set_num_threads(1)
    site = resolve_site(context)
    request = RoundRequest.from_record(msg.content.config_records[keys.CONFIG])
    data = load_site_data(request.task, site, request.preprocessing)
    metrics = _evaluation(request, data, msg.content.array_records[keys.ARRAYS])
    return _reply(msg, site, metrics | {keys.WEIGHT: 1.0}, arrays=None)


@site_guarded
def feature_stats(msg: Message, context: Context) -> Message:
    """Send the site's noised feature sums of its training rows (a recorded privacy release)."""
    site = resolve_site(context)
    request = FeatureStatsRequest.from_record(msg.content.config_records[keys.CONFIG])
    # recorded under the run's uid, like its rounds, so the run's target counts it
    config = msg.content.config_records[keys.CONFIG]
    run_id = str(config.get(keys.RUN_UID) or context.run_id)
    sums = release_feature_sums(request, site, run_id)
    return _reply(msg, site, {keys.FEATURE_SUMS: sums}, None, keys.FEATURE_STATS_METRICS)


@site_guarded
def validate(msg: Message, context: Context) -> Message:
    """Send the aggregate validation report of the candidate on the site's test rows."""
    torch.set_num_threads(1)
    site = resolve_site(context)
    request = ValidationRequest.from_record(msg.content.config_records[keys.CONFIG])
    report = validate_candidate(request, site, msg.content.array_records[keys.ARRAYS])
    return _reply(msg, site, report, None, keys.ALLOWED_VALIDATION_METRICS)


def build_client_app(train_mods: Sequence[Mod] = ()) -> ClientApp:
    """The site's ClientApp: every reply audited; train requests may run under SecAgg+.

    ``train_mods`` sit between secure aggregation and training; simulations use them to play a
    faulty or malicious site (:mod:`fedcare.simulations.adversaries`). Deployment adds none.
    """
    client = ClientApp(mods=[audit_mod])
    client.train(mods=[secure_aggregation_mod, *train_mods])(train)
    client.evaluate()(evaluate_global)
    client.query(keys.FEATURE_STATS_ACTION)(feature_stats)
    client.query(keys.VALIDATE_ACTION)(validate)
    return client


app = build_client_app()
