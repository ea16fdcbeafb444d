"""The table connector's config, the compose copies of both configs, and the decoding of
Debezium change events into Messages, without servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msglab.cdc import outbox_connector
from msglab.cdc.manage import kind_of
from msglab.cdc.table import TableChange, decode_change, table_change_middleware, table_connector
from msglab.errors import ConfigError
from msglab.message import Message

CONNECTORS = Path(__file__).parents[2] / "compose" / "connectors"
PLACEHOLDER = "postgresql://postgres:CHANGE_ME@127.0.0.1:25442/msglab"


@pytest.mark.parametrize(
    ("file", "name", "config"),
    [
        ("outbox.json", "msglab-outbox", outbox_connector("msglab-outbox", PLACEHOLDER)),
        (
            "table.json",
            "posts-changes",
            table_connector("posts-changes", PLACEHOLDER, "public.posts"),
        ),
    ],
)
def test_the_compose_connector_files_are_what_the_code_generates(
    file: str, name: str, config: dict[str, str]
) -> None:
    want = {"name": name, "config": config}
    got = json.loads((CONNECTORS / file).read_text())
    assert got == want, f"compose/connectors/{file} is stale; it should be:\n" + json.dumps(
        want, indent=2
    )


def test_a_table_connector_streams_one_table_without_the_outbox_router() -> None:
    c = table_connector("posts-changes", PLACEHOLDER, "posts")
    assert c["table.include.list"] == "public.posts" and c["slot.name"] == "msglab_posts_changes"
    assert c["tombstones.on.delete"] == "false" and "transforms" not in c
    assert c["key.converter.schemas.enable"] == c["value.converter.schemas.enable"] == "false"
    assert kind_of(c) == "table" and kind_of(outbox_connector("o", PLACEHOLDER)) == "outbox"
    routed = table_connector("x", PLACEHOLDER, "app.t", topic="one-topic", topic_prefix="p")
    assert routed["transforms.route.replacement"] == "one-topic" and routed["topic.prefix"] == "p"
    for bad in ("posts; drop", "a.b.c", ""):
        with pytest.raises(ConfigError):
            table_connector("x", PLACEHOLDER, bad)


def record(op: str, before: object, after: object, lsn: int = 42) -> Message:
    value = {
        "before": before,
        "after": after,
        "op": op,
        "ts_ms": 1700,
        "source": {"schema": "public", "table": "posts", "lsn": lsn},
    }
    return Message(json.dumps(value).encode(), '{"id":7}', {}, "posts:0:3")


def test_changes_decode_to_messages_whose_id_is_table_lsn_and_primary_key() -> None:
    m = decode_change(record("u", {"id": 7, "t": "a"}, {"id": 7, "t": "b"}))
    assert m is not None
    assert (m.id, m.key, m.headers["cdc-op"]) == ("public.posts:42:7", "7", "u")
    change = TableChange.of(m)
    assert (change.before, change.after, change.lsn) == (
        {"id": 7, "t": "a"},
        {"id": 7, "t": "b"},
        42,
    )
    deleted = decode_change(record("d", {"id": 7, "t": "b"}, None, lsn=43))
    assert deleted is not None and TableChange.of(deleted).after is None
    assert deleted.id == "public.posts:43:7"
    by_column = decode_change(record("c", None, {"id": 7, "message_id": "m-1"}), "message_id")
    assert by_column is not None and by_column.id == "m-1"


def test_the_middleware_skips_tombstones_and_refuses_what_is_not_a_change() -> None:
    seen: list[Message] = []
    handle = table_change_middleware(seen.append)
    handle(Message(b"", '{"id":7}', {}, "t"))  # a tombstone: nothing to handle
    handle(record("c", None, {"id": 7}))
    assert [m.id for m in seen] == ["public.posts:42:7"]
    with pytest.raises(ValueError, match="not a Debezium change event"):
        handle(Message(b'{"hello": 1}', None, {}, "x"))
