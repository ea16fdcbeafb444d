"""compose/stack.yml is valid compose and runs the servers with the native backend's settings.

No Docker engine runs here, so the file is checked statically: against the compose
specification's JSON schema (shipped in the docker-compose 1.29 wheel), and setting by setting
against what the native backend writes (each node of each cluster too) and the testcontainers
specs. The compose backend's ``docker`` command lines are checked with a fake ``docker`` first on
PATH, which records its arguments and answers as an engine would.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import socket
import stat
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import pytest
import yaml

from msglab.errors import NotRunningError, UsageError
from msglab.infra.compose import COOKIE_VARIABLE, ComposeBackend, node_servers, service_name
from msglab.infra.kafka import KAFKA_VERSION, Kafka
from msglab.infra.kafka_cluster import HEAP, KafkaCluster
from msglab.infra.native import CLUSTER_TYPES, NativeBackend
from msglab.infra.postgres import PASSWORD, Postgres
from msglab.infra.rabbitmq_cluster import RabbitMQCluster
from msglab.infra.redis import Redis
from msglab.infra.redis_sentinel import RedisSentinel
from msglab.infra.toxiproxy import PROXIED, TOXIPROXY_VERSION, Toxiproxy, proxy_specs
from msglab.settings import CLUSTER_NODES, DEFAULT_PORTS, SERVICES, Settings
from msglab.testing.containers import specs
from tests.conftest import run_cli

STACK = Path(__file__).resolve().parents[2] / "compose" / "stack.yml"


def interpolate(value: Any) -> Any:
    """Resolve ``${VAR:-default}`` to its default, as compose does with the variable unset, and
    ``$$`` to ``$``."""
    if isinstance(value, str):
        return re.sub(r"(?<!\$)\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value).replace("$$", "$")
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


def node_services(settings: Settings) -> dict[str, str]:
    """Every cluster's compose services (a node's server each), with the cluster's name."""
    return {
        service_name(server): name
        for name, cluster_type in CLUSTER_TYPES.items()
        for svc in cluster_type(settings).nodes.values()
        for server in node_servers(svc)
    }


def test_every_port_is_published_on_loopback_at_the_native_port(
    stack: dict[str, Any], native: Settings
) -> None:
    """The single servers publish their ports on 127.0.0.1; a cluster's nodes publish none: on
    the host's network, each binds its own address (the node checks below), and each is started
    only with its cluster's profile, with a volume of its node's."""
    nodes = node_services(native)
    assert set(PUBLISHED) == set(SERVICES) - set(CLUSTER_NODES)
    assert set(stack["services"]) == set(PUBLISHED) | set(nodes)
    for service, names in PUBLISHED.items():
        ports = [DEFAULT_PORTS[name] for name in names]
        if not names:
            assert stack["services"][service]["network_mode"] == "host"
            continue
        assert stack["services"][service]["ports"] == [f"127.0.0.1:{p}:{p}" for p in ports]
    for service, cluster in nodes.items():
        found = stack["services"][service]
        assert (found["network_mode"], found["profiles"]) == ("host", [cluster]), service
        assert "ports" not in found, service
        (volume,) = found["volumes"]
        assert volume.split(":")[0] in stack["volumes"], service


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


# -- the clusters: each node's compose services against the native node ------------------------

RABBITMQ_PATHS = (
    "HOME",
    "RABBITMQ_MNESIA_BASE",
    "RABBITMQ_LOG_BASE",
    "RABBITMQ_PID_FILE",
    "RABBITMQ_CONFIG_FILE",
    "RABBITMQ_ENABLED_PLUGINS_FILE",
    "RABBITMQ_CONF_ENV_FILE",
    "ERL_CRASH_DUMP",
)
"""The native node's folders: a container has the image's own (its volume, /etc/rabbitmq)."""


def kafka_variable(key: str) -> str:
    """The apache/kafka image's variable for a property (its rule, reversed: ``_`` is ``__``,
    ``-`` is ``___``, ``.`` is ``_``)."""
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def setting_lines(config: str) -> list[str]:
    """A config file's settings: its lines but blank ones and comments."""
    return [line for line in config.splitlines() if line.strip() and not line.startswith("#")]


def check_kafka_node(stack: dict[str, Any], settings: Settings, node: str) -> None:
    """Every property the native node writes, as the image's variable, and no other; its heap;
    its data on its volume; its healthcheck asks its own address."""
    svc = KafkaCluster(settings).nodes[node]
    service = stack["services"][service_name(svc)]
    assert service["image"] == f"apache/kafka:{KAFKA_VERSION}"
    props = dict(line.split("=", 1) for line in svc._properties().splitlines() if line)
    del props["log.dirs"]  # the container's own folder, on the node's volume (below)
    env = dict(service["environment"])
    assert env.pop("KAFKA_HEAP_OPTS") == " ".join(HEAP)
    assert service["volumes"] == [f"{service_name(svc)}:{env.pop('KAFKA_LOG_DIRS')}"]
    env.pop("CLUSTER_ID")  # one for the three nodes: test_kafka_nodes_share_one_cluster_id
    assert env == {kafka_variable(key): value for key, value in props.items()}
    assert f"--bootstrap-server {svc.address} " in service["healthcheck"]["test"][1]


def check_rabbitmq_node(stack: dict[str, Any], settings: Settings, node: str) -> None:
    """The native node's environment but its folders, and its rabbitmq.conf, line for line."""
    svc = RabbitMQCluster(settings).nodes[node]
    service = stack["services"][service_name(svc)]
    assert service["image"] == stack["services"]["rabbitmq"]["image"]
    with mock.patch.dict(os.environ, clear=True):  # the native env starts from os.environ
        native_env = svc.env()
    env = dict(service["environment"])
    assert env.pop("MSGLAB_CONF").splitlines() == svc._config()
    env.pop("MSGLAB_ERLANG_COOKIE")  # test_rabbitmq_nodes_get_the_cookie_msglab_passes
    assert env == {k: v for k, v in native_env.items() if k not in RABBITMQ_PATHS}
    assert service["volumes"] == [f"{service_name(svc)}:/var/lib/rabbitmq"]


def check_redis_node(stack: dict[str, Any], settings: Settings, node: str) -> None:
    """The Redis server and the Sentinel: each with the native argv (the node's files in its
    volume), the native config file's settings, the node's volume, and a healthcheck asking
    its own address."""
    svc = RedisSentinel(settings).nodes[node]
    in_volume = {
        str(svc.config_path): "/data/redis.conf",
        str(svc.data_dir): "/data",
        str(svc.sentinel.config_path): "/data/sentinel.conf",
        f'dir "{svc.sentinel.root.resolve()}"': 'dir "/data"',
    }
    for server, config in ((svc, svc._config()), (svc.sentinel, svc.sentinel._config())):
        service = stack["services"][service_name(server)]
        assert service["image"] == stack["services"]["redis"]["image"]
        assert service["command"] == [in_volume.get(a, a) for a in server.launch().argv]
        native_lines = [in_volume.get(line, line) for line in setting_lines(config)]
        assert setting_lines(service["environment"]["MSGLAB_CONF"]) == native_lines
        assert service["volumes"] == [f"{service_name(svc)}:/data"]
        probe = service["healthcheck"]["test"]
        assert probe[probe.index("-h") :] == ["-h", server.host, "-p", str(server.port), "ping"]


CHECKS: dict[str, Callable[[dict[str, Any], Settings, str], None]] = {
    "kafka-cluster": check_kafka_node,
    "rabbitmq-cluster": check_rabbitmq_node,
    "redis-sentinel": check_redis_node,
}
NODES = [(cluster, node) for cluster, nodes in CLUSTER_NODES.items() for node in nodes]


@pytest.mark.parametrize(("cluster", "node"), NODES)
def test_cluster_node_matches_the_native_node(
    stack: dict[str, Any], native: Settings, cluster: str, node: str
) -> None:
    CHECKS[cluster](stack, native, node)


def _set_env(service: str, key: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(stack: dict[str, Any]) -> None:
        env = stack["services"][service]["environment"]
        assert old in env[key]
        env[key] = env[key].replace(old, new)

    return change


@pytest.mark.parametrize(
    ("cluster", "node", "change"),
    [
        (
            "kafka-cluster",
            "n2",
            _set_env("kafka-cluster-n2", "KAFKA_MIN_INSYNC_REPLICAS", "2", "1"),
        ),
        (
            "rabbitmq-cluster",
            "n3",
            _set_env("rabbitmq-cluster-n3", "MSGLAB_CONF", "pause_minority", "autoheal"),
        ),
        (
            "redis-sentinel",
            "n1",
            _set_env("redis-sentinel-n1-sentinel", "MSGLAB_CONF", "26389 2\n", "26389 1\n"),
        ),
    ],
)
def test_a_node_setting_changed_in_the_stack_is_caught(
    stack: dict[str, Any],
    native: Settings,
    cluster: str,
    node: str,
    change: Callable[[dict[str, Any]], None],
) -> None:
    changed = copy.deepcopy(stack)
    change(changed)
    with pytest.raises(AssertionError):
        CHECKS[cluster](changed, native, node)


def test_kafka_nodes_share_one_cluster_id(stack: dict[str, Any], native: Settings) -> None:
    nodes = KafkaCluster(native).nodes.values()
    ids = {stack["services"][service_name(svc)]["environment"]["CLUSTER_ID"] for svc in nodes}
    (cluster_id,) = ids
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16  # as kafka-storage makes one


def test_rabbitmq_nodes_get_the_cookie_msglab_passes(native: Settings) -> None:
    raw = yaml.safe_load(STACK.read_text())
    for svc in RabbitMQCluster(native).nodes.values():
        env = raw["services"][service_name(svc)]["environment"]
        assert env["MSGLAB_ERLANG_COOKIE"] == f"${{{COOKIE_VARIABLE}:-}}"


# -- the compose backend's docker command lines, with a fake docker ------------------------------

FAKE_DOCKER = """#!{python}
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    cookie = os.environ.get("{cookie}")
    log.write(json.dumps({{"argv": args, "cookie": cookie}}) + "\\n")
running = [s for s in os.environ.get("FAKE_DOCKER_RUNNING", "").split(",") if s]
if args[0] == "info":
    print("27.0.0")
elif args[0] == "inspect":  # inspect -f FORMAT id...: "<service> <pid>"
    for cid in args[3:]:
        service = cid.removeprefix("cid-")
        print(service, 4000 + running.index(service))
elif args[0] == "compose":
    i = args.index("-p") + 2
    while args[i] == "--profile":
        i += 2
    command, named = args[i], [a for a in args[i + 1 :] if not a.startswith("-")]
    if command == "ps":
        print("\\n".join(f"cid-{{s}}" for s in named if s in running))
    elif command == "logs":
        print("\\n".join(f"{{s}}  | started" for s in named))
"""


class FakeDocker:
    """A ``docker`` first on PATH: records each call (its arguments, and the rabbitmq-cluster
    cookie it got), answers ``info`` as an engine, ``compose ps -q`` with the running services'
    container ids, ``inspect`` with each one's service and PID (4000, 4001 ... in the order
    ``running`` names them)."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        script = folder / "docker"
        script.write_text(FAKE_DOCKER.format(python=sys.executable, cookie=COOKIE_VARIABLE))
        script.chmod(0o755)
        self.log = folder / "calls.jsonl"
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_DOCKER_LOG", str(self.log))
        self.monkeypatch = monkeypatch

    def running(self, *services: str) -> None:
        self.monkeypatch.setenv("FAKE_DOCKER_RUNNING", ",".join(services))

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def compose(self, command: str) -> list[list[str]]:
        """The arguments after ``compose -f <stack> -p msglab`` of each ``command`` call."""
        found = []
        for call in self.calls():
            argv = call["argv"]
            if argv[0] == "compose":
                rest = argv[argv.index("-p") + 2 :]
                if command in rest:
                    found.append(rest)
        return found


def free_ports() -> dict[str, int]:
    """Every port free on every address: nothing answers a probe there, and no server of the
    machine's is reached."""
    chosen = {}
    for name in DEFAULT_PORTS:
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            chosen[name] = s.getsockname()[1]
    return chosen


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    folder = tmp_path / "bin"
    folder.mkdir()
    return FakeDocker(folder, monkeypatch)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", backend="compose", ports=free_ports())


def nodes_of(cluster: str, *nodes: str) -> list[str]:
    return [f"{cluster}-{node}" for node in nodes or CLUSTER_NODES[cluster]]


def test_up_starts_a_cluster_s_node_services_with_its_profile(
    docker: FakeDocker, settings: Settings
) -> None:
    reports = ComposeBackend(settings).up(["kafka", "kafka-cluster"])
    assert [r.service for r in reports] == ["kafka", "kafka-cluster"]
    (up,) = docker.compose("up")
    assert up == [
        "--profile",
        "kafka-cluster",
        "up",
        "-d",
        "--wait",
        "kafka",
        *nodes_of("kafka-cluster"),
    ]


def test_up_with_no_name_starts_no_cluster(
    docker: FakeDocker, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ComposeBackend, "_populate_proxies", lambda self: None)  # no Toxiproxy
    ComposeBackend(settings).up([])
    (up,) = docker.compose("up")
    assert "--profile" not in up
    assert not [s for s in up if s.endswith(("-n1", "-n2", "-n3", "-sentinel"))]


def test_rabbitmq_cluster_gets_the_native_cluster_s_cookie(
    docker: FakeDocker, settings: Settings
) -> None:
    ComposeBackend(settings).up(["rabbitmq-cluster"])
    cookie = RabbitMQCluster(settings).cookie_path
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o400
    (up,) = [c for c in docker.calls() if "up" in c["argv"]]
    assert up["cookie"] == cookie.read_text() != ""
    assert up["argv"][-3:] == nodes_of("rabbitmq-cluster")


def test_down_stops_every_service_and_every_cluster(docker: FakeDocker, settings: Settings) -> None:
    ComposeBackend(settings).down([])
    (stop,) = docker.compose("stop")
    profiles = stop[: stop.index("stop")]
    assert profiles == [a for cluster in CLUSTER_NODES for a in ("--profile", cluster)]
    assert set(stop[stop.index("stop") + 1 :]) == set(PUBLISHED) | set(node_services(settings))


def test_kill_of_a_redis_node_kills_its_server_and_its_sentinel(
    docker: FakeDocker, settings: Settings
) -> None:
    docker.running("redis-sentinel-n2", "redis-sentinel-n2-sentinel")
    victims = ComposeBackend(settings).kill_all("redis-sentinel/n2")
    assert victims == [("redis-sentinel/n2", 4000), ("redis-sentinel/n2/sentinel", 4001)]
    (kill,) = docker.compose("kill")
    assert kill == [
        "--profile", "redis-sentinel", "kill", "-s", "SIGKILL",
        "redis-sentinel-n2", "redis-sentinel-n2-sentinel",
    ]  # fmt: skip


def test_kill_of_a_cluster_kills_its_running_nodes_at_once(
    docker: FakeDocker, settings: Settings
) -> None:
    docker.running("kafka-cluster-n1", "kafka-cluster-n3")
    backend = ComposeBackend(settings)
    victims = backend.kill_all("kafka-cluster")
    assert victims == [("kafka-cluster/n1", 4000), ("kafka-cluster/n3", 4001)]
    (kill,) = docker.compose("kill")
    assert kill[-2:] == ["kafka-cluster-n1", "kafka-cluster-n3"]
    assert backend.kill("kafka-cluster/n3") == 4001
    with pytest.raises(UsageError, match="kafka-cluster is a cluster: kill one node"):
        backend.kill("kafka-cluster")


def test_kill_of_a_node_that_does_not_run_is_refused(
    docker: FakeDocker, settings: Settings
) -> None:
    with pytest.raises(NotRunningError, match="kafka-cluster/n2 is not running"):
        ComposeBackend(settings).kill_all("kafka-cluster/n2")
    assert docker.compose("kill") == []


def test_restart_and_logs_of_a_node_name_its_services(
    docker: FakeDocker, settings: Settings
) -> None:
    backend = ComposeBackend(settings)
    assert backend.restart("rabbitmq-cluster/n3").service == "rabbitmq-cluster/n3"
    (up,) = docker.compose("up")
    assert up == ["--profile", "rabbitmq-cluster", "up", "-d", "--wait", "rabbitmq-cluster-n3"]
    out = backend.logs("redis-sentinel/n1", 5)
    assert "redis-sentinel-n1-sentinel  | started" in out
    (logs,) = docker.compose("logs")
    assert logs[logs.index("--tail") :] == [
        "--tail", "5", "redis-sentinel-n1", "redis-sentinel-n1-sentinel",
    ]  # fmt: skip


@pytest.mark.parametrize("cluster", list(CLUSTER_NODES))
def test_status_has_a_row_per_node_like_the_native_backend(
    docker: FakeDocker, settings: Settings, cluster: str
) -> None:
    """The same service, node, address and URL as the native rows; the container's PID; not
    healthy (nothing answers on these free ports); a running node's role read from the cluster
    (unknown: no node answers), but RabbitMQ's, read with its CLI tools (native only)."""
    docker.running(*nodes_of(cluster, "n1", "n2"))
    rows = ComposeBackend(settings).status([cluster])
    native = NativeBackend(settings.with_backend("native")).status([cluster])

    def where(rows: list[Any]) -> list[tuple[str, str | None, str, str]]:
        return [(r.service, r.node, r.address, r.url) for r in rows]

    assert where(rows) == where(native)
    assert [(r.pid, r.healthy, r.owner) for r in rows] == [
        (4000, False, "compose"),
        (4001, False, "compose"),
        (None, False, "compose"),
    ]
    running_role = None if cluster == "rabbitmq-cluster" else "unknown"
    assert [r.role for r in rows] == [running_role, running_role, None]
    assert [r.data_dir for r in rows] == [f"volume msglab_{s}" for s in nodes_of(cluster)]


def test_status_of_one_node(docker: FakeDocker, settings: Settings) -> None:
    (row,) = ComposeBackend(settings).status(["redis-sentinel/n3"])
    assert (row.node, row.address) == ("n3", f"127.0.3.3:{settings.ports['redis']}")
    (ps,) = docker.compose("ps")
    assert ps[-6:] == [
        s for n in ("n1", "n2", "n3") for s in nodes_of("redis-sentinel", n, f"{n}-sentinel")
    ]


def test_lab_faults_on_a_cluster_are_refused_naming_the_native_backend(
    docker: FakeDocker, settings: Settings
) -> None:
    backend = ComposeBackend(settings)
    with pytest.raises(UsageError, match=r"kafka-cluster: .*native backend.*nftables.*FUSE"):
        backend.cluster("kafka-cluster")
    with pytest.raises(UsageError, match="kafka is not a cluster"):
        backend.cluster("kafka")
    with pytest.raises(UsageError, match="power cuts need the native backend"):
        backend.power_cut_all("redis-sentinel/n1")
    assert docker.calls() == []  # refused before any docker command


def test_infra_kill_of_a_node_on_the_command_line(
    docker: FakeDocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSGLAB_HOME", str(tmp_path / "home"))
    docker.running("kafka-cluster-n2")
    result = run_cli("infra", "kill", "kafka-cluster/n2", "--backend", "compose")
    assert "kafka-cluster/n2: killed pid 4000 with SIGKILL" in result.stdout
    (kill,) = docker.compose("kill")
    assert kill == ["--profile", "kafka-cluster", "kill", "-s", "SIGKILL", "kafka-cluster-n2"]
