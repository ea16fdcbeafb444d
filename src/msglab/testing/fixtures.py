"""pytest fixtures for tests on the real servers (registered as the ``msglab`` pytest plugin).

Servers come up once per test run (session scope) and stay up; each test gets isolated names
(``unique_name``) instead of fresh servers. Under CI (``CI=true``) a server that cannot start
*fails* the tests that need it; locally they are skipped with the reason.
``MSGLAB_BACKEND=testcontainers`` starts containers instead, where a Docker engine answers
(Toxiproxy and Kafka Connect excepted: they always run natively, in front of whichever servers
answer).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from msglab.errors import MsglabError
from msglab.infra import Backend, Status, backend_for
from msglab.infra import toxiproxy as toxiproxy_infra
from msglab.infra.toxics import ToxiproxyClient
from msglab.settings import Settings, in_ci
from msglab.testing.contract import ContractReport


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"server unavailable under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def msglab_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def msglab_infra(msglab_settings: Settings) -> Backend:
    """The native backend (the default) that owns the servers of this test run."""
    if msglab_settings.backend == "testcontainers":
        return backend_for(msglab_settings.with_backend("native"))
    return backend_for(msglab_settings)


_containers: dict[str, Any] = {}
NATIVE_ONLY = ("toxiproxy", "connect")


def _server(settings: Settings, infra: Backend, name: str) -> Status:
    if settings.backend == "testcontainers" and name not in NATIVE_ONLY:
        return _container(settings, infra, name)
    try:
        infra.up([name])
        (status,) = infra.status([name])
    except MsglabError as exc:
        _unavailable(f"{name} could not start: {exc}")
        raise
    if not status.healthy:
        _unavailable(f"{name} is not healthy at {status.address}")
    return status


def _container(settings: Settings, infra: Backend, name: str) -> Status:
    from msglab.testing import containers

    if name not in _containers:
        try:
            _containers[name] = containers.build(containers.specs(settings)[name]).start()
        except Exception as exc:  # no engine: docker's own error types vary by version
            _unavailable(f"testcontainers could not start {name}: {exc}")
    (status,) = infra.status([name])
    return status


@pytest.fixture(scope="session")
def lazyfs_available() -> None:
    """The lazy filesystem can be mounted here (/dev/fuse, fusermount3, mfusepy): skipped
    locally when not, a failure under CI."""
    from msglab.infra.lazyfs import unavailable

    lacking = unavailable()
    if lacking:
        _unavailable("the lazy filesystem needs " + "; ".join(lacking))


@pytest.fixture(scope="session")
def kafka_server(msglab_settings: Settings, msglab_infra: Backend) -> Status:
    return _server(msglab_settings, msglab_infra, "kafka")


@pytest.fixture(scope="session")
def rabbitmq_server(msglab_settings: Settings, msglab_infra: Backend) -> Status:
    return _server(msglab_settings, msglab_infra, "rabbitmq")


@pytest.fixture(scope="session")
def redis_server(msglab_settings: Settings, msglab_infra: Backend) -> Status:
    return _server(msglab_settings, msglab_infra, "redis")


@pytest.fixture(scope="session")
def postgres_server(msglab_settings: Settings, msglab_infra: Backend) -> Status:
    return _server(msglab_settings, msglab_infra, "postgres")


@pytest.fixture(scope="session")
def toxiproxy_server(msglab_settings: Settings, msglab_infra: Backend) -> Status:
    """Toxiproxy with the proxies ``kafka``, ``rabbitmq`` and ``redis`` (their upstreams need not
    run: ask for those servers' fixtures too). Clients connect with ``proxied_url``."""
    return _server(msglab_settings, msglab_infra, "toxiproxy")


@pytest.fixture(scope="session")
def connect_server(
    msglab_settings: Settings, msglab_infra: Backend, kafka_server: Status, postgres_server: Status
) -> Status:
    """The Kafka Connect worker with the Debezium PostgreSQL plugin (REST API at ``url``), started
    after the Kafka and PostgreSQL it needs."""
    return _server(msglab_settings, msglab_infra, "connect")


@pytest.fixture
def toxiproxy(toxiproxy_server: Status, msglab_settings: Settings) -> Iterator[ToxiproxyClient]:
    """A client of the Toxiproxy server; every proxy enabled and free of toxics before and after
    the test (``reset``), so that a test's faults never leak into the next one."""
    client = toxiproxy_infra.client(msglab_settings)
    client.reset()
    yield client
    client.reset()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: valid as a Kafka topic, a RabbitMQ queue, a Redis key and a
    PostgreSQL identifier (lowercase letters, digits, underscores; at most 40 characters)."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:28]
    return f"{base}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", autouse=True)
def _stop_containers() -> Iterator[None]:
    yield
    for container in _containers.values():
        container.stop()


_REPORT = ContractReport()


@pytest.fixture(scope="session")
def contract_report() -> ContractReport:
    """Deliveries and duplicates seen by the contract suite, per transport and test."""
    return _REPORT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _REPORT.rows:
        return
    path = Settings.from_env().home / "contract-report.json"
    _REPORT.write(path)
    terminalreporter.section("msglab contract: duplicates per transport")
    for name, t in sorted(_REPORT.totals().items()):
        terminalreporter.write_line(
            f"{name:<14} published {t['published']:>6}  delivered {t['delivered']:>6}  "
            f"duplicates {t['duplicates']:>4}"
        )
    terminalreporter.write_line(f"(per test: {path})")
