"""Toxiproxy's wiring without a server: ports, proxies, proxied URLs, the probe, a missing Go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msglab.errors import InstallError, UsageError
from msglab.infra import external, probes
from msglab.infra.native import CLUSTER_TYPES, SERVICE_TYPES
from msglab.infra.toxiproxy import Toxiproxy, proxied_url, proxy_specs
from msglab.settings import DEFAULT_PORTS, SERVICES, Settings


def test_toxiproxy_starts_after_the_brokers() -> None:
    assert SERVICES[-1] == "toxiproxy"
    assert set(SERVICE_TYPES) | set(CLUSTER_TYPES) == set(SERVICES) == set(external.PROBES)
    assert not set(SERVICE_TYPES) & set(CLUSTER_TYPES)


def test_every_port_belongs_to_exactly_one_server(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    owned = [name for cls in SERVICE_TYPES.values() for name in cls(settings).owned_ports]
    assert len(owned) == len(set(owned))
    # epmd: a helper of RabbitMQ; sentinel: the Sentinels of redis-sentinel's nodes only
    assert set(owned) == set(DEFAULT_PORTS) - {"rabbitmq_epmd", "sentinel"}
    nodes = [svc for cls in CLUSTER_TYPES.values() for svc in cls(settings).nodes.values()]
    assert {name for svc in nodes for name in svc.owned_ports} <= set(DEFAULT_PORTS)


def test_a_cluster_node_takes_its_ports_on_its_own_address_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    servers = [cls(settings) for cls in SERVICE_TYPES.values()]
    nodes = [svc for cls in CLUSTER_TYPES.values() for svc in cls(settings).nodes.values()]
    bound = [(svc.host, port) for svc in servers + nodes for port in svc.owned_ports.values()]
    assert len(bound) == len(set(bound))
    hosts = [svc.host for svc in nodes]  # in CLUSTER_TYPES' order
    assert hosts == [f"127.0.{c}.{d}" for c in (1, 2, 3) for d in (1, 2, 3)]
    assert {svc.host for svc in servers} == {"127.0.0.1"}


def test_proxies_forward_the_proxy_ports_to_the_brokers() -> None:
    s = Settings.from_env({"MSGLAB_REDIS_PORT": "16389", "MSGLAB_REDIS_PROXY_PORT": "16399"})
    specs = {spec.name: (spec.listen, spec.upstream) for spec in proxy_specs(s)}
    assert specs == {
        "kafka": ("127.0.0.1:29095", "127.0.0.1:29094"),
        "rabbitmq": ("127.0.0.1:25692", "127.0.0.1:25682"),
        "redis": ("127.0.0.1:16399", "127.0.0.1:16389"),
    }


def test_proxied_urls() -> None:
    s = Settings()
    assert proxied_url(s, "kafka") == "127.0.0.1:29095"
    assert proxied_url(s, "rabbitmq") == "amqp://guest:guest@127.0.0.1:25692/%2F"
    assert proxied_url(s, "redis") == "redis://127.0.0.1:26399/0"
    remote = Settings.from_env({"MSGLAB_TOXIPROXY_URL": "http://faults.example:8474"})
    assert proxied_url(remote, "redis") == "redis://faults.example:26399/0"
    with pytest.raises(UsageError, match="kafka, rabbitmq, redis"):
        proxied_url(s, "postgres")


def test_external_toxiproxy_url_gives_host_and_port() -> None:
    assert external.host_port("toxiproxy", "http://faults.example") == ("faults.example", 8474)
    assert external.host_port("toxiproxy", "faults.example:18474") == ("faults.example", 18474)


def test_config_file_lists_the_proxies(tmp_path: Path) -> None:
    svc = Toxiproxy(Settings(home=tmp_path))
    svc.root.mkdir(parents=True)
    assert svc.prepare() is True and svc.prepare() is False
    names = [p["name"] for p in json.loads(svc.config_path.read_text())]
    assert names == ["kafka", "rabbitmq", "redis"]
    argv = list(svc.launch().argv)
    assert argv[argv.index("-config") + 1] == str(svc.config_path)
    assert argv[argv.index("-host") + 1] == "127.0.0.1"


def test_install_without_go_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    svc = Toxiproxy(Settings(home=tmp_path, cache=tmp_path / "cache"))
    assert not svc.is_installed()
    with pytest.raises(InstallError, match="`go` is not on PATH"):
        svc.install()


def test_version_probe_reads_the_json_answer(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    body = b'{"version": "2.12.0"}\n'
    replies.append(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    assert probes.toxiproxy_version("127.0.0.1", port, 1) == "2.12.0"


def test_version_probe_refuses_an_error_answer(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    replies.append(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert probes.toxiproxy_version("127.0.0.1", port, 1) is None
