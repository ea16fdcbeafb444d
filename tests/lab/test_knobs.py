"""``msglab run --set``: server knobs set on msglab's servers and put back after, client knobs
given to the run's clients; each read back into the report from the server or the clients, and
``msglab profiles`` showing what the servers have in force."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from msglab.config import ClientConfig
from msglab.errors import ConfigError, UsageError
from msglab.lab.knobs import KNOBS, LONG_MAX, client_fields, parse
from msglab.lab.run import Run, run
from msglab.lab.scenario import Scenario
from msglab.lab.workers.spec import WorkerSpec
from msglab.profiles import DeliveryProfile
from msglab.settings import Settings
from tests.conftest import run_cli

FLUSH = "log.flush.interval.messages"


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pair", "says"),
    [
        (f"{FLUSH}=0", f"valid: default, or an integer from 1 to {LONG_MAX}"),
        (f"{FLUSH}=-1", "an integer from 1"),
        (f"{FLUSH}=1.5", "an integer from 1"),
        (f"{FLUSH}=often", "an integer from 1"),
        (f"{FLUSH}={LONG_MAX + 1}", "an integer from 1"),
        (f"{FLUSH}=", "an integer from 1"),
        ("acks=2", "valid: 0, 1, all"),
        ("acks=-1", "valid: 0, 1, all"),
        ("queue-type=stream", "valid: classic, quorum"),
        ("min-replicas-max-lag=0", "valid: an integer from 1 to"),
        ("flush=1", "unknown setting 'flush'; valid: appendfsync, synchronous_commit, log.flush"),
        (FLUSH, "use KEY=VALUE"),
    ],
)
def test_a_bad_setting_is_refused_saying_what_is_valid(pair: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse([pair])
    assert says in str(caught.value)


def test_an_integer_knob_takes_default_and_any_count_from_one() -> None:
    assert parse([f"{FLUSH}=1", "acks=0"]) == {FLUSH: "1", "acks": "0"}
    assert parse([f"{FLUSH}=007"]) == {FLUSH: "7"}  # as the broker will show it
    assert parse([f"{FLUSH}={LONG_MAX}"]) == {FLUSH: str(LONG_MAX)}
    assert parse([f"{FLUSH}=default"]) == {FLUSH: "default"}
    assert KNOBS[FLUSH].choices == "default|N>=1"


@pytest.mark.parametrize(
    ("transport", "pattern", "pair", "says"),
    [
        ("rabbitmq", "direct", "acks=1", "--set acks applies to runs of kafka (-t kafka), not"),
        ("redis-streams", "direct", f"{FLUSH}=1", f"--set {FLUSH} applies to runs of kafka"),
        ("kafka", "direct", "queue-type=classic", "applies to runs of rabbitmq"),
        ("kafka", "direct", "appendfsync=no", "applies to runs of redis-streams and redis-pubsub"),
        ("kafka", "cdc", "acks=1", "publish-then-commit, outbox, not cdc"),
    ],
)
def test_a_knob_of_another_transport_is_refused_naming_its_own(
    transport: str, pattern: str, pair: str, says: str
) -> None:
    with pytest.raises(UsageError) as caught:
        Scenario(transport=transport, pattern=pattern, sets=(pair,))
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("transport", "pair"),
    [
        ("kafka", "min.insync.replicas=1"),
        ("kafka", "unclean.leader.election.enable=true"),
        ("kafka", "eligible.leader.replicas.version=1"),
        ("redis-streams", "wait=1"),
        ("redis-streams", "min-replicas-to-write=1"),
        ("redis-streams", "min-replicas-max-lag=2"),
    ],
)
def test_a_setting_of_replicas_needs_a_cluster(transport: str, pair: str) -> None:
    with pytest.raises(UsageError) as caught:
        Scenario(transport=transport, sets=(pair,))
    assert "a setting of replicas: it applies to runs with --cluster" in str(caught.value)
    assert Scenario(transport=transport, sets=(pair,), cluster=True).sets == (pair,)


def test_wait_reaches_the_redis_clients_as_a_count() -> None:
    config = ClientConfig(url="x").with_fields(client_fields(["wait=2"]))
    assert config.wait_replicas == 2
    from msglab.brokers.redis_streams import RedisStreamsTransport

    assert RedisStreamsTransport.client_settings(config) == {"wait": "2"}
    with pytest.raises(UsageError):
        parse(["wait=-1"])


def test_the_cli_exits_2_for_a_knob_of_another_transport() -> None:
    result = run_cli("run", "-t", "rabbitmq", "--set", "acks=1", check=False)
    assert result.returncode == 2, result.stderr
    assert "--set acks applies to runs of kafka" in result.stderr


def test_client_knobs_reach_the_config_every_worker_builds() -> None:
    """What ``Run._spec`` gives a worker goes through JSON (its standard input) into the
    ClientConfig the worker's transport is built with."""
    assert client_fields(["acks=1", "appendfsync=no", "queue-type=classic"]) == {
        "acks": "1",
        "queue_type": "classic",
    }
    spec = WorkerSpec(
        role="producer",
        name="p0",
        run_id="r",
        run_dir="/nonexistent",
        transport="kafka",
        url="127.0.0.1:1",
        profile="at-least-once",
        client_sets=client_fields(["acks=1"]),
    )
    config = WorkerSpec(**json.loads(json.dumps(asdict(spec)))).config()
    assert (config.acks, config.queue_type) == ("1", None)
    with pytest.raises(ConfigError):
        ClientConfig(url="x", acks="2")
    with pytest.raises(ConfigError):
        ClientConfig(url="x").with_fields({"partitions": "1"})


def test_the_transports_build_their_clients_as_the_fields_say() -> None:
    from msglab.brokers.kafka import producer_settings
    from msglab.brokers.rabbitmq import queue_arguments

    safe = ClientConfig(url="x", profile=DeliveryProfile.AT_LEAST_ONCE)
    fast = ClientConfig(url="x", profile=DeliveryProfile.AT_MOST_ONCE)
    assert (
        producer_settings(safe)["acks"] == "all" and producer_settings(safe)["enable.idempotence"]
    )
    one = producer_settings(safe.with_fields({"acks": "1"}))
    assert (one["acks"], one["enable.idempotence"]) == ("1", False)  # idempotence needs all
    assert producer_settings(fast.with_fields({"acks": "all"}))["acks"] == "all"
    assert queue_arguments(safe) == {"durable": True, "arguments": {"x-queue-type": "quorum"}}
    classic = queue_arguments(safe.with_fields({"queue_type": "classic"}))
    assert classic == {"durable": True, "arguments": {"x-queue-type": "classic"}}
    assert queue_arguments(fast) == {"durable": False, "arguments": {"x-queue-type": "classic"}}
    quorum = queue_arguments(fast.with_fields({"queue_type": "quorum"}))
    assert quorum == {"durable": True, "arguments": {"x-queue-type": "quorum"}}


# -- on the real servers -------------------------------------------------------------------


def _broker_flush() -> str:
    from msglab.infra.kafka import Kafka

    return Kafka(Settings.from_env()).setting(FLUSH)


@pytest.mark.kafka
@pytest.mark.postgres
def test_a_kafka_run_flushes_per_message_and_puts_the_default_back(
    kafka_server: Any, postgres_server: Any, tmp_path: Path
) -> None:
    assert _broker_flush() == "default"
    r = run(
        Scenario(transport="kafka", sets=(f"{FLUSH}=1",), messages=500, drain_quiet_s=5.0),
        runs_dir=tmp_path,
    )
    # read from the broker during the run: what it had in force, not what was asked
    assert r["settings"]["kafka.log.flush.interval.messages"] == "1", r["settings"]
    assert r["settings"]["kafka.acks"] == "all"  # not set: read back all the same
    assert r["settings"]["postgres.synchronous_commit"] == "on"
    assert r["lost"] == 0 and r["confirmed"] == 500, r
    assert _broker_flush() == "default"  # the cluster-wide dynamic config was deleted


@pytest.fixture
def producer_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every confluent-kafka Producer made by a process this test starts (the lab's workers
    inherit the environment) appends the settings it was made with to the returned file."""
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import json, os
            import confluent_kafka

            class Producer(confluent_kafka.Producer):
                def __init__(self, config, *args, **kwargs):
                    with open(os.environ["MSGLAB_TEST_PRODUCERS"], "a") as out:
                        shown = {k: str(v) for k, v in config.items() if k != "logger"}
                        out.write(json.dumps(shown) + "\\n")
                    super().__init__(config, *args, **kwargs)

            confluent_kafka.Producer = Producer
            """
        )
    )
    made = tmp_path / "producers.jsonl"
    monkeypatch.setenv("MSGLAB_TEST_PRODUCERS", str(made))
    pythonpath = [str(spy), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", ":".join(pythonpath))
    return made


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.parametrize("acks", [None, "1"])
def test_acks_reaches_the_producer_and_the_report(
    kafka_server: Any,
    postgres_server: Any,
    tmp_path: Path,
    producer_configs: Path,
    acks: str | None,
) -> None:
    sets = (f"acks={acks}",) if acks else ()
    scenario = Scenario(transport="kafka", sets=sets, messages=300, drain_quiet_s=5.0)
    r = run(scenario, runs_dir=tmp_path)
    made = [json.loads(line) for line in producer_configs.read_text().splitlines()]
    assert made, "no producer was made"
    expected = acks or "all"
    assert {m["acks"] for m in made} == {expected}, made  # the worker's real producer
    assert {m["enable.idempotence"] for m in made} == {str(expected == "all")}
    assert r["settings"]["kafka.acks"] == expected
    assert r["settings"][f"kafka.{FLUSH}"] == "default"
    assert r["lost"] == 0, r


class _QueuesBeforeCleanup(Run):
    """A run that lists RabbitMQ's queues before it deletes its own."""

    def _clean_broker(self) -> str:
        from msglab.infra.rabbitmq import RabbitMQ

        self.queues = RabbitMQ(self.settings).queues()
        return super()._clean_broker()


@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sets", "expected"), [(("queue-type=classic",), "classic"), ((), "quorum")]
)
def test_a_rabbitmq_run_reads_its_queue_type_from_rabbitmq(
    rabbitmq_server: Any,
    postgres_server: Any,
    tmp_path: Path,
    sets: tuple[str, ...],
    expected: str,
) -> None:
    scenario = Scenario(transport="rabbitmq", sets=sets, messages=300, drain_quiet_s=5.0)
    lab = _QueuesBeforeCleanup(scenario, Settings.from_env(), tmp_path)
    r = lab.execute()
    assert r["settings"]["rabbitmq.queue-type"] == expected, r["settings"]
    mine = [q for q in lab.queues if q.name.startswith(f"lab-{scenario.run_id}")]
    assert mine and all(q.type == expected and q.durable for q in mine), mine
    assert r["lost"] == 0 and r["confirmed"] == 300, r
    assert r["broker_cleanup"] == "deleted"


@pytest.mark.redis
def test_profiles_shows_what_the_running_redis_has_in_force(redis_server: Any) -> None:
    from msglab.infra.redis import Redis

    redis = Redis(Settings.from_env())
    before = redis.setting("appendfsync")
    changed = "everysec" if before != "everysec" else "no"
    redis.set_setting("appendfsync", changed)
    try:
        shown = json.loads(run_cli("profiles", "-t", "redis-streams", "--json").stdout)
    finally:
        redis.set_setting("appendfsync", before)
    assert shown["servers"]["redis"] == {"appendfsync": changed}
    assert "at-least-once" in shown["redis-streams"]  # the profiles as before
