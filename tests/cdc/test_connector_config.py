"""The outbox connector's config and the REST client's errors, without servers."""

from __future__ import annotations

import socket
import time

import pytest

from msglab.brokers.kafka import ID_HEADER as KAFKA_ID_HEADER
from msglab.cdc import (
    ID_HEADER,
    ConnectClient,
    drop_slot_sql,
    expand_headers,
    expand_headers_middleware,
    outbox_connector,
    slot_name,
)
from msglab.errors import ConfigError, ConnectError
from msglab.message import Message

DB = "postgresql://postgres:s%40cret@127.0.0.1:25442/msglab"


def test_rows_map_onto_msglabs_kafka_wire_format() -> None:
    c = outbox_connector("orders-cdc", DB)
    assert ID_HEADER == KAFKA_ID_HEADER
    assert c["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert c["plugin.name"] == "pgoutput"
    assert c["publication.autocreate.mode"] == "filtered"
    assert c["table.include.list"] == "public.msglab_outbox"
    assert c["slot.name"] == "msglab_orders_cdc"
    assert c["publication.name"] == "msglab_orders_cdc_pub"
    assert c["topic.prefix"] == "orders-cdc"
    assert c["database.password"] == "s@cret" and c["database.port"] == "25442"
    assert c["transforms"] == "outbox,dropRouterId"
    assert c["transforms.outbox.type"] == "io.debezium.transforms.outbox.EventRouter"
    assert c["transforms.outbox.route.by.field"] == "topic"
    assert c["transforms.outbox.route.topic.replacement"] == "${routedByValue}"
    assert c["transforms.outbox.table.field.event.key"] == "key"
    assert c["transforms.outbox.table.field.event.payload"] == "payload"
    assert c["transforms.outbox.table.fields.additional.placement"] == (
        "id:header:msglab-id,headers:header:msglab-headers"
    )
    assert c["key.converter"].endswith("StringConverter")
    assert c["value.converter"].endswith("ByteArrayConverter")
    assert c["skipped.operations"] == "u,d,t"
    assert c["slot.drop.on.stop"] == "false"
    assert "predicates" not in c


def test_topics_filter_keeps_only_the_named_topics() -> None:
    c = outbox_connector("x", DB, topics=["a.b", "c"], headers_header=None)
    assert c["transforms"] == "outbox,dropRouterId,onlyTopics"
    assert c["transforms.onlyTopics.negate"] == "true"
    assert c["predicates.isWanted.pattern"] == r"a\.b|c"
    assert c["transforms.outbox.table.fields.additional.placement"] == "id:header:msglab-id"


def test_bad_names_and_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        outbox_connector("x", DB, slot="Bad-Slot")
    with pytest.raises(ConfigError):
        outbox_connector("x", "mysql://u@h/db")
    with pytest.raises(ConfigError):
        outbox_connector("x", DB, topics=[])
    with pytest.raises(ConfigError):
        drop_slot_sql("x'; drop table t; --")
    assert slot_name("A" * 100) == ("msglab_" + "a" * 100)[:63]


def test_expand_headers_restores_the_messages_own_headers() -> None:
    m = Message(b"p", "k", {"msglab-headers": '{"trace": "t1", "n": "2"}'}, "id-1")
    assert expand_headers(m) == Message(b"p", "k", {"trace": "t1", "n": "2"}, "id-1")
    plain = Message(b"p", None, {"other": "x"}, "id-2")
    assert expand_headers(plain) is plain
    odd = Message(b"p", None, {"msglab-headers": "[1]"}, "id-3")
    assert expand_headers(odd) is odd
    seen: list[Message] = []
    expand_headers_middleware(seen.append)(m)
    assert seen[0].headers == {"trace": "t1", "n": "2"}


def test_unreachable_connect_is_an_error_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        began = time.monotonic()
        client = ConnectClient(f"http://127.0.0.1:{port}", connect_timeout_s=3)
        with client, pytest.raises(ConnectError) as caught:
            client.connectors()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert time.monotonic() - began < 10
