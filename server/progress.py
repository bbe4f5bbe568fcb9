"""Round-by-round progress of the ServerApp, for whoever runs it in-process.

The simulation CLI subscribes a rich table; in deployment the ServerApp's log lines suffice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fedcare.server.tracking import RoundRecord

log = logging.getLogger(__name__)

RoundListener = Callable[[RoundRecord, int], None]
_listeners: list[RoundListener] = []


def subscribe(listener: RoundListener) -> Callable[[], None]:
    """Call ``listener(record, total_rounds)`` after each round; returns the unsubscribe call."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def publish(record: RoundRecord, total_rounds: int) -> None:
    """Log ``record`` and hand it to every listener."""
    log.info(
        "round %d/%d: mean accuracy %.3f over %d site(s)",
        record.round,
        total_rounds,
        record.mean_accuracy,
        len(record.sites),
    )
    for listener in list(_listeners):
        listener(record, total_rounds)
