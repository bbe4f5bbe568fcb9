"""Grid wrappers: a ServerApp talks to its sites through Flower's ``Grid``; these change how it
waits, never what it sends.

:class:`ResponsiveGrid` exists because Flower 1.41's deployment grid (``HttpGrid``) sleeps 3 s
between two pulls of the replies it waits for: a round whose sites answered in 0.5 s still
waits up to 3 s for the coordinator to notice. It runs the same exchange through the grid's
public ``push_messages`` / ``pull_messages`` and asks again every :data:`PULL_INTERVAL_S`, as
Flower's own in-memory grid (simulation) does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

PULL_INTERVAL_S = 0.1  # Flower's InMemoryGrid default; one small request to the SuperLink


class ForwardingGrid(Grid):
    """Forwards everything to ``inner``; subclasses change ``send_and_receive``."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


class ResponsiveGrid(ForwardingGrid):
    """``send_and_receive`` with Flower's semantics (push all, pull until every reply is in or
    ``timeout`` passed; ``None`` waits for ever) that asks for replies every ``interval`` s."""

    def __init__(self, inner: Grid, interval: float = PULL_INTERVAL_S) -> None:
        super().__init__(inner)
        self.interval = interval

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        waiting = set(self.inner.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            arrived = list(self.inner.pull_messages(waiting))
            replies.extend(arrived)
            waiting.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.interval)
        return replies
