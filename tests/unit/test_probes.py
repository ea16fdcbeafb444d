"""The wire-protocol probes against tiny fake servers: ready answers vs. not-ready answers."""

from __future__ import annotations

import os
import socket
import struct

from msglab.infra import probes
from msglab.infra.process import port_holder, port_in_use


def test_redis_loading_is_not_ready(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    replies.append(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert probes.redis_ping("127.0.0.1", port, 1) is False


def test_redis_pong_is_ready(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    replies.append(b"+PONG\r\n")
    assert probes.redis_ping("127.0.0.1", port, 1) is True


def test_kafka_error_code_is_not_ready(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    replies.append(struct.pack(">iih", 6, 7, 35))  # UNSUPPORTED_VERSION
    assert probes.kafka_api_versions("127.0.0.1", port, 1) is False


def test_kafka_ok_is_ready(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    replies.append(struct.pack(">iih", 6, 7, 0))
    assert probes.kafka_api_versions("127.0.0.1", port, 1) is True


def test_amqp_start_frame_yields_the_server_version(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server

    def field(name: bytes, value: bytes) -> bytes:
        return bytes([len(name)]) + name + b"S" + struct.pack(">I", len(value)) + value

    table = field(b"product", b"RabbitMQ") + field(b"version", b"3.10.8")
    payload = b"\x00\x0a\x00\x0a\x00\x09" + struct.pack(">I", len(table)) + table
    replies.append(struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce")
    assert probes.amqp_handshake("127.0.0.1", port, 1) == "3.10.8"


def test_nothing_listening_is_not_ready() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probes.redis_ping("127.0.0.1", port, 0.5) is False
    assert probes.amqp_handshake("127.0.0.1", port, 0.5) is None
    assert probes.kafka_api_versions("127.0.0.1", port, 0.5) is False


def test_port_holder_names_this_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert f"pid {os.getpid()}" in (port_holder(s.getsockname()[1]) or "")


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def test_kafka_brokers_reads_the_live_brokers(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server

    def broker(node: int, host: bytes) -> bytes:
        return struct.pack(">ih", node, len(host)) + host + struct.pack(">ih", 29092, -1)

    body = struct.pack(">ii", 7, 2) + broker(1, b"127.0.1.1") + broker(3, b"127.0.1.3")
    replies.append(_frame(body + struct.pack(">ii", 1, 0)))  # controller id, no topics
    assert probes.kafka_brokers("127.0.0.1", port, 1) == {
        1: "127.0.1.1:29092",
        3: "127.0.1.3:29092",
    }


def _describe_quorum(partition_error: int, leader: int) -> bytes:
    """A DescribeQuorum v0 response (flexible: compact arrays N+1, tagged fields)."""
    voters = b"\x04" + b"".join(struct.pack(">iq", v, 90) + b"\x00" for v in (1, 2, 3))
    observers = b"\x01"  # empty
    partition = struct.pack(">ihiiq", 0, partition_error, leader, 5, 90) + voters + observers
    topic = b"\x13__cluster_metadata" + b"\x02" + partition + b"\x00" + b"\x00"
    return _frame(struct.pack(">i", 7) + b"\x00" + struct.pack(">h", 0) + b"\x02" + topic + b"\x00")


def test_kafka_quorum_reads_the_leader_and_the_voters(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    replies.append(_describe_quorum(0, 2))
    assert probes.kafka_quorum("127.0.0.1", port, 1) == probes.Quorum(2, 5, (1, 2, 3), ())


def test_a_controller_that_is_not_the_leader_describes_no_quorum(
    fake_server: tuple[int, list[bytes]],
) -> None:
    port, replies = fake_server
    replies.append(_describe_quorum(6, 0))  # NOT_LEADER_OR_FOLLOWER
    assert probes.kafka_quorum("127.0.0.1", port, 1) is None


def test_a_port_is_taken_per_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.1.2", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port) and port_in_use(port, "127.0.1.2")
        assert not port_in_use(port, "127.0.1.3")
        assert f"pid {os.getpid()}" in (port_holder(port, "127.0.1.2") or "")
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # every address: taken on each
        s.listen()
        assert port_in_use(s.getsockname()[1], "127.0.1.3")
