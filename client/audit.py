"""The site's audit log: every message the site sends, recorded before it leaves.

A Flower ClientApp mod, so it sees the exact reply Flower will transmit: message type, round,
each array's record, name, shape and dtype, each metric's name and value, config records, the
error category of a refusal, and the sha256 of the payload. Entries are hash-chained
(:mod:`fedcare.chained_log`), so a removed or edited line is detected by
``fedcare site audit --verify``. If the entry cannot be written, nothing is sent.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable

from fedcare import messages as keys
from fedcare.chained_log import ChainedJsonLog
from fedcare.client.site import resolve_site

log = logging.getLogger(__name__)

AUDIT_FILE = "audit-log.jsonl"
AUDIT_HEAD = "audit-log.head.json"


def audit_log(state_dir: Path) -> ChainedJsonLog:
    """The audit log of the site whose state folder is ``state_dir``."""
    return ChainedJsonLog(state_dir / AUDIT_FILE, state_dir / AUDIT_HEAD, what="entry")


def describe(reply: Message) -> dict[str, Any]:
    """What ``reply`` carries, value by value for metrics, shape by shape for arrays."""
    if reply.has_error():
        return {"kind": "error", "error": {"code": reply.error.code, "reason": reply.error.reason}}
    digest = hashlib.sha256()
    arrays: list[dict[str, Any]] = []
    for record_name, record in sorted(reply.content.array_records.items()):
        for name, array in sorted(record.items()):
            values = np.ascontiguousarray(array.numpy())
            digest.update(f"{record_name}/{name}:{values.dtype}:{values.shape}".encode())
            digest.update(values.tobytes())
            arrays.append(
                {
                    "record": record_name,
                    "name": name,
                    "shape": list(values.shape),
                    "dtype": str(values.dtype),
                }
            )
    metrics = {
        record_name: {name: float(value) for name, value in sorted(record.items())}  # type: ignore[arg-type]
        for record_name, record in sorted(reply.content.metric_records.items())
    }
    configs = {
        record_name: {name: str(value) for name, value in sorted(record.items())}
        for record_name, record in sorted(reply.content.config_records.items())
    }
    digest.update(repr((metrics, configs)).encode())
    return {
        "kind": "reply",
        "arrays": arrays,
        "metrics": {k: {n: _json_float(v) for n, v in m.items()} for k, m in metrics.items()},
        "configs": configs,
        "payload_sha256": digest.hexdigest(),
    }


def refusal_entry(state_dir: Path, run_id: str, fab_hash: str) -> None:
    """Record that the site refused to run an unapproved app bundle: nothing was sent."""
    audit_log(state_dir).append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_id": run_id,
            "round": None,
            "message_type": None,
            "kind": "refused-app",
            "fab_hash": fab_hash,
        }
    )


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)  # NaN/inf as text: strict JSON


def audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Record the reply in the site's audit log, durably, before handing it to Flower."""
    reply = call_next(msg, context)
    config = msg.content.config_records.get(keys.CONFIG) if not msg.has_error() else None
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": str(context.run_id),
        "round": int(config.get(keys.SERVER_ROUND, 0)) if config else None,  # type: ignore[arg-type]
        "message_type": msg.metadata.message_type,
        **describe(reply),
    }
    try:
        audit_log(resolve_site(context).state_dir).append(entry)
    except Exception:  # the audit log is the site's proof: no entry, no message
        log.exception("audit log could not be written; the reply is withheld")
        code = keys.REFUSAL_CODES[keys.FAILED_SITE]
        return Message(Error(code=code, reason=keys.FAILED_SITE), reply_to=msg)
    return reply
