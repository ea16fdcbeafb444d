from __future__ import annotations

from pathlib import Path

import pytest

from msglab.config import redact_url
from msglab.errors import ConfigError, UsageError
from msglab.infra.external import host_port
from msglab.settings import DEFAULT_PORTS, SERVICES, Settings, check_services


def test_defaults_avoid_the_standard_ports() -> None:
    standard = {9092, 9093, 5672, 25672, 4369, 6379, 26379, 5432}
    assert not standard & set(DEFAULT_PORTS.values())
    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS)


def test_from_env_reads_home_ports_and_external_urls(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "MSGLAB_HOME": str(tmp_path),
            "MSGLAB_KAFKA_PORT": "19092",
            "MSGLAB_REDIS_URL": "redis://cache.internal:6380/1",
        }
    )
    assert s.home == tmp_path
    assert s.ports["kafka"] == 19092
    assert s.ports["redis"] == DEFAULT_PORTS["redis"]
    assert s.external == {"redis": "redis://cache.internal:6380/1"}


@pytest.mark.parametrize("raw", ["x", "0", "70000"])
def test_bad_port_is_a_config_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="MSGLAB_REDIS_PORT"):
        Settings.from_env({"MSGLAB_REDIS_PORT": raw})


def test_unknown_service_lists_valid_names() -> None:
    with pytest.raises(UsageError) as caught:
        check_services(["kafka", "zeromq"])
    assert all(name in str(caught.value) for name in SERVICES)
    on_demand = ("kafka2", "kafka-cluster", "rabbitmq-cluster", "redis-sentinel")
    assert check_services([]) == tuple(s for s in SERVICES if s not in on_demand)
    assert check_services([], on_demand=True) == SERVICES
    assert check_services(["kafka2"]) == ("kafka2",)
    assert check_services(["kafka-cluster"]) == ("kafka-cluster",)


def test_a_node_of_a_cluster_is_a_name_where_nodes_are_asked_for() -> None:
    assert check_services(["kafka-cluster/n2"], nodes=True) == ("kafka-cluster/n2",)
    with pytest.raises(UsageError, match="name the service"):
        check_services(["kafka-cluster/n2"])
    with pytest.raises(UsageError) as caught:
        check_services(["kafka-cluster/n7"], nodes=True)
    assert "kafka-cluster/n1, kafka-cluster/n2, kafka-cluster/n3" in str(caught.value)
    with pytest.raises(UsageError, match="redis is not a cluster"):
        check_services(["redis/n1"], nodes=True)
    with pytest.raises(UsageError, match="unknown service"):
        check_services(["zeromq/n1"], nodes=True)


def test_a_cluster_given_by_url_reads_its_variable_with_an_underscore() -> None:
    s = Settings.from_env({"MSGLAB_KAFKA_CLUSTER_URL": "b1:9092,b2:9092"})
    assert s.external == {"kafka-cluster": "b1:9092,b2:9092"}


def test_unknown_backend_and_fsync_are_refused() -> None:
    with pytest.raises(UsageError):
        Settings(backend="podman")
    with pytest.raises(ConfigError):
        Settings.from_env({"MSGLAB_REDIS_APPENDFSYNC": "sometimes"})


@pytest.mark.parametrize(
    ("service", "url", "expected"),
    [
        ("kafka", "b1.example:9094,b2.example:9094", ("b1.example", 9094)),
        ("kafka", "kafka://broker", ("broker", 9092)),
        ("rabbitmq", "amqp://u:p@mq.example/%2F", ("mq.example", 5672)),
        ("postgres", "postgresql://u:p@db.example:6543/app", ("db.example", 6543)),
        ("redis", "redis://:secret@cache.example:6380/0", ("cache.example", 6380)),
        (
            "rabbitmq-cluster",
            "amqp://u:p@mq1.example/%2F,amqp://u:p@mq2.example/%2F",
            ("mq1.example", 5672),
        ),
    ],
)
def test_external_urls_give_host_and_port(
    service: str, url: str, expected: tuple[str, int]
) -> None:
    assert host_port(service, url) == expected


def test_every_url_of_a_cluster_has_its_password_hidden() -> None:
    urls = "amqp://guest:s3cret@127.0.2.1:25682/%2F,amqp://guest:s3cret@127.0.2.2:25682/%2F"
    assert redact_url(urls) == (
        "amqp://guest:***@127.0.2.1:25682/%2F,amqp://guest:***@127.0.2.2:25682/%2F"
    )
    assert redact_url("127.0.1.1:29092,127.0.1.2:29092") == "127.0.1.1:29092,127.0.1.2:29092"
