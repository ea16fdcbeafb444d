"""Message stays a value; Batch and Delivery settle once."""

from __future__ import annotations

import pytest

from msglab.message import Batch, Delivery, Message


def test_headers_are_read_only_and_copied_from_the_caller() -> None:
    given = {"trace": "abc"}
    m = Message(b"x", "k", given)
    given["trace"] = "changed"
    assert dict(m.headers) == {"trace": "abc"}
    with pytest.raises(TypeError):
        m.headers["trace"] = "y"  # type: ignore[index]


def test_a_message_equals_only_a_message_with_equal_fields() -> None:
    m = Message(b"x", "k", {"a": "b"}, id="1")
    assert m == Message(b"x", "k", {"a": "b"}, id="1")
    assert m != Message(b"x", "k", {"a": "c"}, id="1")
    assert m != (b"x", "k", {"a": "b"}, "1")
    with pytest.raises(TypeError):
        hash(m)


def test_payload_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="payload must be bytes"):
        Message("text")  # type: ignore[arg-type]


def test_a_batch_and_a_delivery_settle_once() -> None:
    calls: list[tuple[bool, bool]] = []
    batch = Batch("t", [Message(b"a")], [1], lambda b, ok, rq: calls.append((ok, rq)))
    batch.nack(requeue=False)
    batch.ack()
    delivery = Delivery(Message(b"a"), "t", 1, False, lambda d, ok, rq: calls.append((ok, rq)))
    delivery.ack()
    delivery.nack()
    assert calls == [(False, False), (True, False)]
    assert len(batch) == 1
