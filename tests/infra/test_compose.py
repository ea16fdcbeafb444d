"""compose/stack.yml is valid compose and runs the servers with the native backend's settings.

No Docker engine runs here, so the file is checked statically: against the compose
specification's JSON schema (shipped in the docker-compose 1.29 wheel), and setting by setting
against what the native backend writes and the testcontainers specs.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from msglab.errors import UsageError
from msglab.infra.compose import NATIVE_ONLY, ComposeBackend
from msglab.infra.kafka import KAFKA_VERSION, Kafka
from msglab.infra.postgres import PASSWORD, Postgres
from msglab.infra.redis import Redis
from msglab.infra.toxiproxy import PROXIED, TOXIPROXY_VERSION, Toxiproxy, proxy_specs
from msglab.settings import DEFAULT_PORTS, SERVICES, Settings
from msglab.testing.containers import specs

STACK = Path(__file__).resolve().parents[2] / "compose" / "stack.yml"


def interpolate(value: Any) -> Any:
    """Resolve ``${VAR:-default}`` to its default, as compose does with the variable unset."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return dict(interpolate(yaml.safe_load(STACK.read_text())))


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"))


def test_validates_against_the_compose_schema() -> None:
    dist = metadata.distribution("docker-compose")
    schema = json.loads(Path(str(dist.locate_file("compose/config/compose_spec.json"))).read_text())
    jsonschema.Draft201909Validator(schema).validate(yaml.safe_load(STACK.read_text()))


def test_schema_check_can_fail() -> None:
    dist = metadata.distribution("docker-compose")
    schema = json.loads(Path(str(dist.locate_file("compose/config/compose_spec.json"))).read_text())
    broken = yaml.safe_load(STACK.read_text())
    broken["services"]["redis"]["ports"] = "26389"  # must be a list
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


PUBLISHED = {
    "kafka": ("kafka", "kafka_proxied"),
    "kafka2": ("kafka2",),
    "rabbitmq": ("rabbitmq",),
    "redis": ("redis",),
    "postgres": ("postgres",),
    "connect": (),  # on the host network: it reaches Kafka's advertised 127.0.0.1 listener
    "toxiproxy": ("toxiproxy", "kafka_proxy", "rabbitmq_proxy", "redis_proxy"),
}


def test_every_port_is_published_on_loopback_at_the_native_port(stack: dict[str, Any]) -> None:
    assert set(PUBLISHED) == set(SERVICES) - set(NATIVE_ONLY) == set(stack["services"])
    for service, names in PUBLISHED.items():
        ports = [DEFAULT_PORTS[name] for name in names]
        if not names:
            assert stack["services"][service]["network_mode"] == "host"
            continue
        assert stack["services"][service]["ports"] == [f"127.0.0.1:{p}:{p}" for p in ports]


def test_a_service_the_stack_lacks_is_refused_naming_the_native_backend(native: Settings) -> None:
    backend = ComposeBackend(native.with_backend("compose"))
    for action in (lambda: backend.up(["kafka-cluster"]), lambda: backend.kill("kafka-cluster")):
        with pytest.raises(UsageError, match=r"kafka-cluster: not in compose/stack\.yml"):
            action()


def test_kafka_settings_match_the_native_broker(stack: dict[str, Any], native: Settings) -> None:
    env = stack["services"]["kafka"]["environment"]
    assert stack["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    skip = {"listeners", "advertised.listeners", "controller.quorum.bootstrap.servers", "log.dirs"}
    props = dict(line.split("=", 1) for line in Kafka(native)._properties().splitlines() if line)
    for key, value in props.items():
        if key not in skip:
            assert env["KAFKA_" + key.upper().replace(".", "_")] == value, key
    assert env["KAFKA_ADVERTISED_LISTENERS"] == (
        f"PLAINTEXT://127.0.0.1:{DEFAULT_PORTS['kafka']},"
        f"PROXIED://127.0.0.1:{DEFAULT_PORTS['kafka_proxy']}"
    )
    assert f"PROXIED://0.0.0.0:{DEFAULT_PORTS['kafka_proxied']}" in env["KAFKA_LISTENERS"]


def test_toxiproxy_matches_the_native_server(stack: dict[str, Any], native: Settings) -> None:
    service = stack["services"]["toxiproxy"]
    assert service["image"] == f"shopify/toxiproxy:{TOXIPROXY_VERSION}"
    argv = list(Toxiproxy(native).launch().argv)
    assert f"-port={argv[argv.index('-port') + 1]}" in service["command"]
    (mount,) = service["volumes"]
    source, target, _mode = mount.split(":")
    assert f"-config={target}" in service["command"]
    # The same proxies as the native config, reached from inside the compose network.
    in_compose = proxy_specs(native, "0.0.0.0", {name: name for name in PROXIED})
    config = json.loads((STACK.parent / source).read_text())
    assert config == [spec.to_json() for spec in in_compose]
    native_ports = {spec.listen.rsplit(":", 1)[1] for spec in proxy_specs(native)}
    assert {spec.listen.rsplit(":", 1)[1] for spec in in_compose} == native_ports


def test_redis_settings_match(stack: dict[str, Any], native: Settings) -> None:
    native_args = list(Redis(native).launch().argv)
    compose_args = stack["services"]["redis"]["command"]
    for flag in ("--port", "--save", "--appendonly", "--appendfsync"):
        assert (
            compose_args[compose_args.index(flag) + 1] == native_args[native_args.index(flag) + 1]
        )


def test_postgres_settings_match(stack: dict[str, Any], native: Settings, tmp_path: Path) -> None:
    svc = Postgres(Settings(home=tmp_path))
    svc.data_dir.mkdir(parents=True)
    (svc.data_dir / "postgresql.conf").write_text("")
    svc._write_conf()
    conf = dict(
        (k.strip(), v.strip().strip("'"))
        for k, v in (
            line.split("=", 1)
            for line in (svc.data_dir / "msglab.conf").read_text().splitlines()
            if line
        )
    )
    command = stack["services"]["postgres"]["command"]
    compose = dict(arg.split("=", 1) for arg in command[2::2])
    for key in (
        "port",
        "wal_level",
        "max_replication_slots",
        "max_wal_senders",
        "max_connections",
        "fsync",
    ):
        assert compose[key] == conf[key], key
    assert stack["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD


def test_testcontainers_specs_match_the_stack(stack: dict[str, Any], native: Settings) -> None:
    for name, spec in specs(native).items():
        service = stack["services"][name]
        assert spec.image == service["image"], name
        assert dict(spec.env) == {k: str(v) for k, v in service.get("environment", {}).items()}, (
            name
        )
        assert list(spec.command) == service.get("command", []), name
        ports = (spec.port, *spec.more_ports)
        assert service["ports"] == [f"127.0.0.1:{p}:{p}" for p in ports], name
