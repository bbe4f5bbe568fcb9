"""The site's side of SecAgg+: Flower's ``secaggplus_mod`` around fedcare's own train handler.

A train message that belongs to the SecAgg+ protocol (it carries Flower's ``secaggplus_configs``)
goes through Flower's mod, which runs the key exchange, masking and unmasking stages. At the
masking stage the mod calls :func:`_masked_update`, which asks fedcare's train handler for the
round (DP and ledger included, unchanged), turns the trained weights into the clipped update
(:func:`fedcare.privacy.secure_aggregation.clip_update`) and hands that to the mod to mask; the
unmasked weights never leave this function. Plain train messages pass straight through, unless
the site's policy requires secure aggregation, in which case it declines them.
"""

from __future__ import annotations

import logging
from typing import cast

from flwr.app import Context, Error, Message, MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
)

from fedcare import messages as keys
from fedcare.client.site import resolve_site
from fedcare.privacy.secure_aggregation import clip_update, masking_payload

log = logging.getLogger(__name__)


def is_secure_aggregation(msg: Message) -> bool:
    """True for the messages of Flower's SecAgg+ protocol."""
    return not msg.has_error() and RECORD_KEY_CONFIGS in msg.content.config_records


class _Declined(Exception):
    """The train handler declined the round; its error reply is what the site sends."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.reason)
        self.error = error


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ train messages through Flower's protocol; see the module docstring."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if not is_secure_aggregation(msg):
        if resolve_site(context).policy.require_secure_aggregation:
            reason = keys.REFUSED_SECAGG_REQUIRED
            log.warning("site declined a train request without secure aggregation")
            return Message(Error(code=keys.REFUSAL_CODES[reason], reason=reason), reply_to=msg)
        return call_next(msg, context)

    def masked_update(inner: Message, ctxt: Context) -> Message:
        return _masked_update(inner, ctxt, call_next)

    try:
        return secaggplus_mod(msg, context, masked_update)
    except _Declined as declined:
        return Message(declined.error, reply_to=msg)
    except Exception as exc:  # Flower's protocol checks; the text stays in the site's log
        log.warning("site left the secure aggregation round: %r", exc)
        log.debug("secure aggregation failure", exc_info=True)
        code = keys.REFUSAL_CODES[keys.FAILED_SITE]
        return Message(Error(code=code, reason=keys.FAILED_SITE), reply_to=msg)


def _masked_update(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Train, then replace the weights by the clipped update in Flower's layout for masking."""
    global_arrays = msg.content.array_records[keys.ARRAYS]
    reply = call_next(msg, context)
    if reply.has_error():
        raise _Declined(reply.error)
    bound = float(cast(float, context.state.config_records[RECORD_KEY_STATE][Key.CLIPPING_RANGE]))
    trained = reply.content.array_records[keys.ARRAYS]
    local = {name: array.numpy() for name, array in trained.items()}
    update = clip_update(local, global_arrays, bound)
    if update.scale < 1.0:
        log.info("update norm %.3g clipped to %.3g before masking", update.norm, bound)
    metrics = reply.content.metric_records[keys.METRICS]
    content = masking_payload(update, weight=float(cast(float, metrics[keys.WEIGHT])))
    content[keys.METRICS] = metrics
    content[keys.SITE] = reply.content.config_records[keys.SITE]
    if keys.LEDGER in reply.content.config_records:  # the signed ledger head travels along
        content[keys.LEDGER] = reply.content.config_records[keys.LEDGER]
    return Message(content, reply_to=msg)
