"""The site's audit log: every message the site sends, recorded before it leaves.

A Flower ClientApp mod, so it sees the exact reply Flower will transmit: message type, round,
each array's record, name, shape and dtype, each metric's name and value (every value of a
list-valued metric, such as the noised feature sums of ``query.feature_stats``), config
records (bytes, such as SecAgg+ keys and masked vectors, by size and sha256), the SecAgg+
stage, the error category of a refusal, and the sha256 of the payload. Entries are hash-chained
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
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedcare import messages as keys
from fedcare.chained_log import ChainedJsonLog

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
        record_name: {name: _metric_value(value) for name, value in sorted(record.items())}
        for record_name, record in sorted(reply.content.metric_records.items())
    }
    configs: dict[str, dict[str, Any]] = {}
    for record_name, record in sorted(reply.content.config_records.items()):
        configs[record_name] = {}
        for name, value in sorted(record.items()):
            digest.update(f"{record_name}/{name}".encode())
            digest.update(repr(value).encode())
            configs[record_name][name] = _config_value(value)
    digest.update(repr(metrics).encode())
    return {
        "kind": "reply",
        "arrays": arrays,
        "metrics": {k: {n: _json_metric(v) for n, v in m.items()} for k, m in metrics.items()},
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


def ledger_reset_entry(state_dir: Path, moved_to: Path | None, resets: int) -> None:
    """Record that the site started a new privacy ledger (``site start --reset-ledger``).

    The reset also raises the count in every signed ledger head, so the coordinator sees it.
    """
    audit_log(state_dir).append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_id": None,
            "round": None,
            "message_type": None,
            "kind": "ledger-reset",
            "resets": resets,
            "old_ledger": moved_to.name if moved_to else None,
        }
    )


def _config_value(value: object) -> object:
    """Text and numbers as sent; bytes (SecAgg+ keys, shares, masked vectors) by size and hash."""
    blobs = value if isinstance(value, list) else [value]
    if blobs and all(isinstance(blob, bytes) for blob in blobs):
        joined = b"".join(blobs)  # type: ignore[arg-type]
        digest = hashlib.sha256(joined).hexdigest()
        return {"bytes": len(joined), "items": len(blobs), "sha256": digest}
    return str(value)


def _metric_value(value: object) -> float | list[float]:
    """A metric as sent: one number, or every number of a list (the noised feature sums)."""
    if isinstance(value, list):
        return [float(v) for v in value]
    return float(value)  # type: ignore[arg-type]


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else str(value)  # NaN/inf as text: strict JSON


def _json_metric(value: float | list[float]) -> float | str | list[float | str]:
    return [_json_float(v) for v in value] if isinstance(value, list) else _json_float(value)


def _secure_aggregation_stage(msg: Message) -> str | None:
    from fedcare.client.secure_aggregation import is_secure_aggregation  # (torch: not for CLI)

    if not is_secure_aggregation(msg):
        return None
    return str(msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, ""))


def audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Record the reply in the site's audit log, durably, before handing it to Flower."""
    stage = _secure_aggregation_stage(msg)  # read first: Flower's mod consumes it
    reply = call_next(msg, context)
    config = msg.content.config_records.get(keys.CONFIG) if not msg.has_error() else None
    group = msg.metadata.group_id
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": str(context.run_id),
        "round": (
            int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[arg-type]
            if config
            else (int(group) if group.isdigit() else None)
        ),
        "message_type": msg.metadata.message_type,
        **({"secure_aggregation_stage": stage} if stage else {}),
        **describe(reply),
    }
    try:
        from fedcare.client.site import resolve_site  # imported here: it loads torch

        audit_log(resolve_site(context).state_dir).append(entry)
    except Exception:  # the audit log is the site's proof: no entry, no message
        log.exception("audit log could not be written; the reply is withheld")
        code = keys.REFUSAL_CODES[keys.FAILED_SITE]
        return Message(Error(code=code, reason=keys.FAILED_SITE), reply_to=msg)
    return reply
