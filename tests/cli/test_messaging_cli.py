"""`msglab publish | consume | profiles | bench`: bad input, and plain clients reading what
`msglab publish` wrote with key and headers intact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import run_cli


def test_unknown_transport_exits_2_listing_the_valid_ones() -> None:
    result = run_cli("publish", "--transport", "zeromq", check=False)
    assert result.returncode == 2
    for name in ("kafka", "rabbitmq", "redis-pubsub", "redis-streams", "memory"):
        assert name in result.stderr


def test_unknown_profile_exits_2_listing_the_valid_ones() -> None:
    result = run_cli("publish", "-t", "memory", "--profile", "exactly-twice", check=False)
    assert result.returncode == 2
    assert "at-most-once" in result.stderr and "exactly-once" in result.stderr
    refused = run_cli("publish", "-t", "memory", "--profile", "exactly-once", check=False)
    assert refused.returncode == 2 and "only Kafka has transactions" in refused.stderr


def test_invalid_topic_is_refused_with_the_rule() -> None:
    result = run_cli("publish", "-t", "memory", "--topic", "no spaces/here", check=False)
    assert result.returncode == 2
    assert "letters, digits" in result.stderr


def test_oversized_payload_is_refused_naming_the_limit() -> None:
    result = run_cli("publish", "-t", "memory", "--size", "2000000", "-n", "1", check=False)
    assert result.returncode == 2
    assert "1000000 bytes" in result.stderr


def test_redis_pubsub_at_least_once_is_refused_saying_why() -> None:
    result = run_cli("publish", "-t", "redis-pubsub", "--profile", "at-least-once", check=False)
    assert result.returncode == 2
    assert "stores nothing" in result.stderr


@pytest.mark.parametrize("command", ["publish", "consume"])
@pytest.mark.parametrize("transport", ["kafka", "rabbitmq", "redis-streams", "redis-pubsub"])
def test_unreachable_server_fails_within_the_connect_timeout_naming_host_port(
    transport: str, command: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = {"redis-streams": "REDIS", "redis-pubsub": "REDIS"}.get(transport, transport.upper())
    url = {
        "KAFKA": f"127.0.0.1:{port}",
        "RABBITMQ": f"amqp://guest:guest@127.0.0.1:{port}/",
        "REDIS": f"redis://127.0.0.1:{port}/0",
    }[service]
    env = {**os.environ, f"MSGLAB_{service}_URL": url, "MSGLAB_CONNECT_TIMEOUT": "2"}
    profile = "at-most-once" if transport == "redis-pubsub" else "at-least-once"
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "msglab", command, "-t", transport, "-p", profile, "-n", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert elapsed < 2 + 4, f"{elapsed:.1f}s"  # the timeout plus interpreter start-up


def test_profiles_lists_every_transport_and_profile() -> None:
    data = json.loads(run_cli("profiles", "--json").stdout)
    assert data["kafka"]["at-least-once"]["producer acks"] == "all"
    assert data["kafka"]["at-most-once"]["producer acks"] == "1"
    assert "quorum" in data["rabbitmq"]["at-least-once"]["queue"]
    assert "refused" in data["redis-pubsub"]["at-least-once"]


@pytest.mark.kafka
def test_plain_kafka_consumer_reads_what_msglab_published(
    kafka_server: Any, unique_name: str
) -> None:
    from confluent_kafka import Consumer

    run_cli("publish", "-t", "kafka", "--topic", unique_name, "-n", "5", "--keys", "2")
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_server.url,
            "group.id": unique_name,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([unique_name])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < 5 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg)
    consumer.close()
    assert len(got) == 5
    for msg in got:
        headers = dict(msg.headers())
        seq = int(headers["seq"])
        assert msg.key() == f"k{seq % 2}".encode()
        assert len(headers["msglab-id"]) == 32
        assert msg.value() == b"x" * 100


@pytest.mark.rabbitmq
def test_plain_rabbitmq_queue_bound_to_the_topic_exchange_gets_messages(
    rabbitmq_server: Any, unique_name: str
) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_server.url))
    ch = conn.channel()
    ch.exchange_declare(unique_name, "fanout", durable=True)
    ch.queue_declare(unique_name, durable=True)
    ch.queue_bind(unique_name, unique_name)
    run_cli("publish", "-t", "rabbitmq", "--topic", unique_name, "-n", "5", "--keys", "2")
    got = []
    for method, props, body in ch.consume(unique_name, auto_ack=True, inactivity_timeout=3):
        if method is None:
            break
        got.append((method, props, body))
        if len(got) == 5:
            break
    ch.cancel()
    ch.queue_delete(unique_name)
    conn.close()
    assert len(got) == 5
    for method, props, body in got:
        seq = int(props.headers["seq"])
        assert method.routing_key == f"k{seq % 2}"
        assert len(props.message_id) == 32 and props.delivery_mode == 2
        assert body == b"x" * 100


@pytest.mark.redis
def test_plain_redis_client_reads_the_stream(redis_server: Any, unique_name: str) -> None:
    import redis

    run_cli("publish", "-t", "redis-streams", "--topic", unique_name, "-n", "5", "--keys", "2")
    entries = redis.Redis.from_url(redis_server.url).xrange(unique_name)
    assert len(entries) == 5
    for _id, fields in entries:
        seq = int(fields[b"h.seq"])
        assert fields[b"key"] == f"k{seq % 2}".encode()
        assert fields[b"payload"] == b"x" * 100 and len(fields[b"id"]) == 32


@pytest.mark.redis
def test_consume_counts_what_publish_sent(redis_server: Any, unique_name: str) -> None:
    run_cli("publish", "-t", "redis-streams", "--topic", unique_name, "-n", "50")
    out = json.loads(
        run_cli(
            "consume",
            "-t",
            "redis-streams",
            "--topic",
            unique_name,
            "-n",
            "50",
            "--idle",
            "2",
            "--json",
        ).stdout
    )
    assert out["deliveries"] == 50 and out["distinct"] == 50 and out["duplicates"] == 0


@pytest.mark.redis
def test_bench_json_has_the_documented_keys(redis_server: Any) -> None:
    out = json.loads(
        run_cli(
            "bench", "publish", "-t", "redis-streams", "-n", "2000", "--rounds", "1", "--json"
        ).stdout
    )
    assert {"msglab_msgs_per_s", "raw_msgs_per_s", "ratio", "baselines"} <= out.keys()
    assert out["msglab_msgs_per_s"] > 0 and out["raw_msgs_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["msglab_msgs_per_s"] / out["raw_msgs_per_s"], rel=0.01)


@pytest.mark.redis
def test_bench_consume_worker_drains_every_message_through_the_runtime(redis_server: Any) -> None:
    argv = ("bench", "consume", "-t", "redis-streams", "-n", "2000", "--rounds", "1")
    out = json.loads(run_cli(*argv, "--worker", "--json").stdout)
    variants = out["msglab_variants"]
    assert {"msglab worker", "msglab worker per message"} <= variants.keys()
    assert all(variants[v] > 0 for v in variants)
    assert out["delivered"]["msglab worker"] == out["delivered"]["msglab worker per message"]
    assert out["delivered"]["msglab worker"] == 2000
    refused = run_cli(*argv, "--effectively-once", check=False)
    assert refused.returncode == 2 and "add --worker" in refused.stderr


@pytest.mark.redis
@pytest.mark.postgres
def test_bench_relay_measures_drains_and_latency(redis_server: Any, postgres_server: Any) -> None:
    argv = ("bench", "relay", "-t", "redis-streams", "-n", "1000", "--rounds", "1")
    quick = ("--instances", "1", "--rate", "200", "--seconds", "1", "--json")
    out = json.loads(run_cli(*argv, *quick).stdout)
    assert set(out["rows_per_s"]) == {
        f"{d} x1 {mode}" for d in ("raw", "redis-streams") for mode in ("delete", "mark")
    }
    assert all(v > 0 for v in out["rows_per_s"].values())
    latency = out["commit_to_publish_ms"]
    assert set(latency) == {"listen", "poll 50 ms"}
    assert all(m["missing"] == 0 and 0 < m["p50"] <= m["p99"] <= m["max"] for m in latency.values())
    assert "***" in out["database"]  # the password hidden
