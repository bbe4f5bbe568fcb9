"""The site's audit log: what each entry records, and that no entry means no reply.

``audit_mod`` is driven in-process with real Flower messages (as tests/flower_harness.py does);
the handler behind it is a plain function, so each test controls the reply the site sends.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.supercore.task_identity import TaskIdentity

from fedcare import messages as keys
from fedcare.chained_log import ChainBrokenError
from fedcare.client.audit import (
    AUDIT_FILE,
    AUDIT_HEAD,
    audit_log,
    audit_mod,
    describe,
    ledger_reset_entry,
    refusal_entry,
)

UTC_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(autouse=True)
def clock_in_another_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A site whose local clock is 5:30 ahead of UTC: entries must still be stamped in UTC."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _assert_utc_now(stamp: str) -> None:
    assert UTC_STAMP.match(stamp), stamp
    seconds = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(seconds - time.time()) < 120, f"{stamp} is not the current UTC time"


def _server_message(content: RecordDict | None = None, group_id: str = "") -> Message:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 0
    return Message(
        content if content is not None else RecordDict(),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
        group_id=group_id,
    )


def _context(state: Path) -> Context:
    node = {"site-name": "va", "data-path": str(state / "va.data"), "state-dir": str(state)}
    return Context(run_id=7, node_id=1, node_config=node, state=RecordDict(), run_config={})


def _replying(content: RecordDict) -> Callable[[Message, Context], Message]:
    def handler(msg: Message, context: Context) -> Message:
        return Message(content, reply_to=msg)

    return handler


def _reply(content: RecordDict) -> Message:
    return Message(content, reply_to=_server_message())


def test_a_reply_is_recorded_before_it_leaves_with_round_type_and_run(tmp_path: Path) -> None:
    # Prepare: a round-3 train request and a handler that replies with one metric
    msg = _server_message(RecordDict({"config": ConfigRecord({keys.SERVER_ROUND: 3})}))
    context = _context(tmp_path)
    seen: list[tuple[Message, Context]] = []

    def handler(received: Message, ctx: Context) -> Message:
        seen.append((received, ctx))
        return Message(RecordDict({"metrics": MetricRecord({"loss": 0.5})}), reply_to=received)

    # Execute
    reply = audit_mod(msg, context, handler)

    # Assert: the handler got the very message and context; the entry says what was sent
    assert seen == [(msg, context)]
    assert not reply.has_error() and reply.content["metrics"]["loss"] == 0.5
    (entry,) = audit_log(tmp_path).read()
    _assert_utc_now(entry["time"])
    assert entry["run_id"] == "7"
    assert entry["round"] == 3
    assert entry["message_type"] == MessageType.TRAIN
    assert entry["kind"] == "reply"
    assert entry["metrics"] == {"metrics": {"loss": 0.5}}
    assert "secure_aggregation_stage" not in entry
    assert (tmp_path / AUDIT_FILE).exists() and (tmp_path / AUDIT_HEAD).exists()


def test_a_config_without_a_round_is_recorded_as_round_zero(tmp_path: Path) -> None:
    # Prepare
    msg = _server_message(RecordDict({"config": ConfigRecord({"lr": 0.1})}), group_id="4")

    # Execute
    audit_mod(msg, _context(tmp_path), _replying(RecordDict()))

    # Assert
    assert audit_log(tmp_path).read()[0]["round"] == 0


def test_without_a_config_the_round_comes_from_a_numeric_group_id(tmp_path: Path) -> None:
    # Prepare: messages without a config record, one in group "5", one in group "eval"
    numeric = _server_message(group_id="5")
    textual = _server_message(group_id="eval")

    # Execute
    audit_mod(numeric, _context(tmp_path), _replying(RecordDict()))
    audit_mod(textual, _context(tmp_path), _replying(RecordDict()))

    # Assert
    assert [entry["round"] for entry in audit_log(tmp_path).read()] == [5, None]


def test_a_secure_aggregation_message_records_its_stage(tmp_path: Path) -> None:
    # Prepare: a SecAgg+ setup message, and one whose SecAgg+ record names no stage
    staged = _server_message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: "setup"})}))
    unstaged = _server_message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"x": 1})}))

    # Execute
    audit_mod(staged, _context(tmp_path), _replying(RecordDict()))
    audit_mod(unstaged, _context(tmp_path), _replying(RecordDict()))

    # Assert
    first, second = audit_log(tmp_path).read()
    assert first["secure_aggregation_stage"] == "setup"
    assert "secure_aggregation_stage" not in second


def test_an_error_reply_is_recorded_with_its_code_and_reason(tmp_path: Path) -> None:
    # Prepare
    msg = _server_message(RecordDict({"config": ConfigRecord({keys.SERVER_ROUND: 2})}))

    def refuse(received: Message, ctx: Context) -> Message:
        return Message(Error(code=4001, reason="over-budget"), reply_to=received)

    # Execute
    reply = audit_mod(msg, _context(tmp_path), refuse)

    # Assert
    assert reply.error.code == 4001
    (entry,) = audit_log(tmp_path).read()
    assert entry["kind"] == "error"
    assert entry["error"] == {"code": 4001, "reason": "over-budget"}
    assert entry["round"] == 2


def test_when_the_entry_cannot_be_written_the_reply_is_withheld(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: the site's state folder is a file, so no audit log can be written there
    state = tmp_path / "state"
    state.write_text("not a folder")
    msg = _server_message(RecordDict({"config": ConfigRecord({keys.SERVER_ROUND: 1})}))
    reply_content = RecordDict({"metrics": MetricRecord({"loss": 0.5})})

    # Execute
    with caplog.at_level(logging.ERROR, logger="fedcare.client.audit"):
        reply = audit_mod(msg, _context(state), _replying(reply_content))

    # Assert: an error reply to this message instead of the metrics
    assert reply.has_error()
    assert reply.error.code == keys.REFUSAL_CODES[keys.FAILED_SITE]
    assert reply.error.reason == keys.FAILED_SITE
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert "audit log could not be written; the reply is withheld" in caplog.messages


def test_an_incoming_error_message_is_recorded_without_a_config(tmp_path: Path) -> None:
    # Prepare: a message that carries an error instead of content (Flower builds these only
    # as replies, so one is made as a reply to a round-6 request)
    request = _server_message(RecordDict({"config": ConfigRecord({keys.SERVER_ROUND: 6})}))
    msg = Message(Error(code=1, reason="x"), reply_to=request)

    # Execute
    audit_mod(msg, _context(tmp_path), _replying(RecordDict()))

    # Assert
    (entry,) = audit_log(tmp_path).read()
    assert entry["round"] is None and entry["kind"] == "reply"


def test_describe_lists_each_array_by_record_name_shape_and_dtype() -> None:
    # Prepare
    arrays = ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32)), "b": Array(np.ones(3))})
    reply = _reply(RecordDict({"update": arrays}))

    # Execute
    described = describe(reply)

    # Assert
    assert described["kind"] == "reply"
    assert described["arrays"] == [
        {"record": "update", "name": "b", "shape": [3], "dtype": "float64"},
        {"record": "update", "name": "w", "shape": [2, 3], "dtype": "float32"},
    ]
    assert described["metrics"] == {} and described["configs"] == {}


def test_describe_records_non_finite_metrics_as_text() -> None:
    # Prepare
    metrics = MetricRecord({"a": float("nan"), "b": float("inf"), "c": 2.0})
    reply = _reply(RecordDict({"m": metrics}))

    # Execute
    described = describe(reply)

    # Assert
    assert described["metrics"] == {"m": {"a": "nan", "b": "inf", "c": 2.0}}


def test_describe_records_bytes_by_size_items_and_hash_and_the_rest_as_text() -> None:
    # Prepare
    config = ConfigRecord(
        {"key": b"abc", "shares": [b"ab", b"cd"], "stage": "share", "n": 3, "none": []}
    )
    reply = _reply(RecordDict({"c": config}))

    # Execute
    described = describe(reply)

    # Assert
    assert described["configs"] == {
        "c": {
            "key": {"bytes": 3, "items": 1, "sha256": hashlib.sha256(b"abc").hexdigest()},
            "n": "3",
            "none": "[]",
            "shares": {"bytes": 4, "items": 2, "sha256": hashlib.sha256(b"abcd").hexdigest()},
            "stage": "share",
        }
    }


def _payload_hash(content: RecordDict) -> str:
    return str(describe(_reply(content))["payload_sha256"])


def test_the_payload_hash_is_stable_and_changes_with_anything_sent() -> None:
    # Prepare: one reply, and variants that each differ in one thing the site sends
    def content(
        name: str = "w",
        value: float = 1.0,
        config_name: str = "k",
        config_value: str = "v",
        metric: float = 0.5,
    ) -> RecordDict:
        return RecordDict(
            {
                "a": ArrayRecord({name: Array(np.full(2, value, dtype=np.float32))}),
                "c": ConfigRecord({config_name: config_value}),
                "m": MetricRecord({"loss": metric}),
            }
        )

    # Execute
    original = _payload_hash(content())
    variants = [
        _payload_hash(content(name="v")),
        _payload_hash(content(value=2.0)),
        _payload_hash(content(config_name="j")),
        _payload_hash(content(config_value="u")),
        _payload_hash(content(metric=0.25)),
    ]

    # Assert
    assert _payload_hash(content()) == original
    assert re.fullmatch(r"[0-9a-f]{64}", original)
    assert len({original, *variants}) == 6, "a change in the reply left the payload hash alike"


def test_a_refused_app_bundle_is_recorded_with_its_hash(tmp_path: Path) -> None:
    # Execute
    refusal_entry(tmp_path, "42", "b" * 64)

    # Assert
    (entry,) = audit_log(tmp_path).read()
    _assert_utc_now(entry["time"])
    assert {k: v for k, v in entry.items() if k not in ("time", "chain")} == {
        "run_id": "42",
        "round": None,
        "message_type": None,
        "kind": "refused-app",
        "fab_hash": "b" * 64,
    }


def test_a_ledger_reset_is_recorded_with_the_old_ledger_and_the_count(tmp_path: Path) -> None:
    # Execute
    ledger_reset_entry(tmp_path, tmp_path / "ledger.jsonl.reset-1", 1)
    ledger_reset_entry(tmp_path, None, 2)

    # Assert
    first, second = audit_log(tmp_path).read()
    _assert_utc_now(first["time"])
    assert {k: v for k, v in first.items() if k not in ("time", "chain")} == {
        "run_id": None,
        "round": None,
        "message_type": None,
        "kind": "ledger-reset",
        "resets": 1,
        "old_ledger": "ledger.jsonl.reset-1",
    }
    assert second["old_ledger"] is None and second["resets"] == 2


def test_a_truncated_audit_log_is_refused_counting_its_entries(tmp_path: Path) -> None:
    # Prepare: two entries, then the last line removed
    refusal_entry(tmp_path, "1", "a" * 64)
    refusal_entry(tmp_path, "2", "b" * 64)
    path = tmp_path / AUDIT_FILE
    path.write_text(path.read_text().splitlines(keepends=True)[0])

    # Execute / Assert
    with pytest.raises(ChainBrokenError, match=r"1 entry\(s\) but its head recorded 2"):
        audit_log(tmp_path).read()
