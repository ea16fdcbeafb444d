"""``msglab publish``, ``consume``, ``roundtrip`` and ``profiles``: the transports by hand."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from msglab.brokers import (
    CLUSTER_OF,
    EXTRA_OF,
    SERVICE_OF,
    TRANSPORTS,
    open_transport,
    serverless_url,
    service_of,
    transport_class,
)
from msglab.config import ClientConfig, check_name, redact_url
from msglab.errors import ConfigError, MissingExtraError, UsageError
from msglab.infra import backend_for, service_url
from msglab.jobs import consume_job, publish_job, round_trip
from msglab.lab.knobs import KNOBS, server_settings
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile
from msglab.settings import Settings, env_name

console = Console()
REAL = [t for t in TRANSPORTS if t != "memory"]

TransportOpt = Annotated[
    str, typer.Option("--transport", "-t", help=f"One of {', '.join(TRANSPORTS)}.")
]
ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="at-most-once | at-least-once | exactly-once (kafka: read_committed)",
    ),
]
TopicOpt = Annotated[str, typer.Option("--topic", help="Topic name.")]
GroupOpt = Annotated[str, typer.Option("--group", "-g", help="Consumer group.")]
CountOpt = Annotated[int, typer.Option("--count", "-n", min=1, help="Number of messages.")]
SizeOpt = Annotated[int, typer.Option("--size", min=0, help="Payload bytes per message.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ClusterOpt = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="Connect to the transport's replicated cluster, as `msglab run --cluster` does ("
        + ", ".join(f"{t}: {c}" for t, c in CLUSTER_OF.items())
        + "): msglab's own, which must be up (`msglab infra up CLUSTER`), or the one "
        + ", ".join(f"MSGLAB_{env_name(c)}_URL" for c in dict.fromkeys(CLUSTER_OF.values()))
        + " names.",
    ),
]


def build(
    transport: str, profile: str, settings: Settings | None = None, cluster: bool = False
) -> Transport:
    """The transport by name, pointed at msglab's server (or the external one) for it; with
    ``cluster``, at its replicated cluster's URL (every node), resolved as ``msglab run
    --cluster`` resolves it (``service_of``, then ``service_url``).

    Refused before connecting: a transport without a cluster (UsageError naming those with
    one); ``--cluster`` while ``MSGLAB_<SERVER>_URL`` names the transport's single server and
    no ``MSGLAB_<CLUSTER>_URL`` names a cluster (ConfigError: which server was meant is not
    clear); msglab's own cluster with none of its nodes running (NotRunningError naming
    ``msglab infra up <cluster>``, at once)."""
    transport_class(transport)  # an unknown name fails here, listing the valid ones
    settings = settings or Settings.from_env()
    service = service_of(transport, cluster)
    if cluster:
        _check_named(transport, str(service), settings)
    url = service_url(settings, service) if service else serverless_url(transport, settings.home)
    config = ClientConfig(
        url=url,
        profile=DeliveryProfile.parse(profile),
        connect_timeout_s=settings.connect_timeout_s,
    )
    built = open_transport(transport, config)  # a profile it cannot keep is refused here
    if cluster and service not in settings.external:
        backend_for(settings).cluster(str(service)).check_running()
    return built


def _check_named(transport: str, cluster: str, settings: Settings) -> None:
    """``--cluster`` uses the cluster's own URL: msglab's cluster, or MSGLAB_<CLUSTER>_URL's.
    A URL that names only the transport's single server is refused rather than ignored."""
    single = SERVICE_OF[transport]
    if cluster in settings.external or single not in settings.external:
        return
    raise ConfigError(
        f"--cluster connects {transport} to {cluster}, but MSGLAB_{env_name(str(single))}_URL "
        f"names a single {single} ({redact_url(settings.external[str(single)])}): unset it to "
        f"use msglab's own {cluster}, or name your cluster with "
        f"MSGLAB_{env_name(cluster)}_URL"
    )


def cluster_label(transport: str, cluster: bool) -> str | None:
    """The cluster a command ran on (``kafka-cluster``), None without ``--cluster``."""
    return service_of(transport, cluster) if cluster else None


def _where(transport: str, topic: str, cluster: str | None) -> str:
    """``kafka:orders``, or ``kafka:orders on kafka-cluster``."""
    return f"{transport}:{topic}" + (f" on {cluster}" if cluster else "")


@contextmanager
def progress_bar(total: int, label: str, quiet: bool):  # type: ignore[no-untyped-def]
    if quiet or total < 5000:
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def publish(
    transport: TransportOpt,
    topic: TopicOpt = "msglab-demo",
    count: CountOpt = 1000,
    size: SizeOpt = 100,
    profile: ProfileOpt = "at-least-once",
    keys: Annotated[int, typer.Option(min=1, help="Distinct keys.")] = 8,
    cluster: ClusterOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish COUNT messages; counts confirmed, failed and unknown sends."""
    t = build(transport, profile, cluster=cluster)
    on = cluster_label(transport, cluster)
    check_name("topic", topic)
    with progress_bar(count, f"publishing to {topic}", as_json) as tick:
        s = publish_job(t, topic, count, size, keys, progress=tick)
    if as_json:
        print(json.dumps({**s.to_json(), "cluster": on}))
        return
    table = Table(title=f"published to {_where(transport, topic, on)}")
    for col in ("profile", "sent", "confirmed", "failed", "unknown", "seconds", "msgs/s", "MB/s"):
        table.add_column(col, justify="right")
    table.add_row(
        s.profile,
        str(s.sent),
        str(s.confirmed),
        str(s.failed),
        str(s.unknown),
        f"{s.seconds:.2f}",
        f"{s.msgs_per_s:,.0f}",
        f"{s.msgs_per_s * size / 1e6:.2f}",
    )
    console.print(table)


def consume(
    transport: TransportOpt,
    topic: TopicOpt = "msglab-demo",
    group: GroupOpt = "msglab-cli",
    count: CountOpt = 1000,
    profile: ProfileOpt = "at-least-once",
    idle: Annotated[float, typer.Option(help="Stop after this many idle seconds.")] = 5.0,
    show: Annotated[int, typer.Option(help="Print the first N messages.")] = 0,
    cluster: ClusterOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Consume up to COUNT messages as GROUP (acking each); stops when idle."""
    t = build(transport, profile, cluster=cluster)
    on = cluster_label(transport, cluster)
    check_name("topic", topic)
    with progress_bar(count, f"consuming {topic}", as_json) as tick:
        s = consume_job(t, topic, group, count, idle, progress=tick, keep=show)
    if as_json:
        print(json.dumps({**s.to_json(), "cluster": on}))
        return
    for sample in s.samples:
        console.print_json(json.dumps(sample))
    table = Table(title=f"consumed from {_where(transport, topic, on)} as {group}")
    for col in ("deliveries", "distinct", "duplicates", "redelivered", "seconds", "msgs/s"):
        table.add_column(col, justify="right")
    table.add_row(
        str(s.deliveries),
        str(s.distinct),
        str(s.duplicates),
        str(s.redelivered),
        f"{s.seconds:.2f}",
        f"{s.msgs_per_s:,.0f}",
    )
    console.print(table)


def roundtrip(
    transports: Annotated[
        list[str] | None, typer.Argument(help="Transports; all real ones by default.")
    ] = None,
    count: CountOpt = 1000,
    size: SizeOpt = 100,
    report: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe, publish COUNT, consume: a round trip per transport with its counts."""
    names = transports or REAL
    unknown = [n for n in names if n not in TRANSPORTS]
    if unknown:
        raise UsageError(f"unknown transport {unknown[0]!r}; valid: {', '.join(TRANSPORTS)}")
    rows: list[dict[str, Any]] = []
    for name in names:
        profile = "at-most-once" if name == "redis-pubsub" else "at-least-once"
        rt = round_trip(build(name, profile), f"roundtrip-{name}", count, size)
        rows.append({"transport": name, **rt.to_json()})
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(rows, indent=2) + "\n")
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"round trip of {count} messages per transport")
    for col in ("transport", "profile", "sent", "confirmed", "delivered", "dups", "pub/s"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        p, c = row["publish"], row["consume"]
        cells = (p["sent"], p["confirmed"], c["deliveries"], c["duplicates"])
        table.add_row(row["transport"], p["profile"], *map(str, cells), f"{p['msgs_per_s']:,.0f}")
    console.print(table)
    if report is not None:
        console.print(f"report written to {report}")


def profiles(
    transport: Annotated[str | None, typer.Option("--transport", "-t")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per transport, the exact client and server settings each delivery profile turns on
    (of every transport whose driver is installed, when none is named); then the durability
    settings msglab's own servers have in force now, read from them (`msglab run --set`
    changes them for a run). --json: the servers' under "servers"."""
    names = [transport] if transport else list(TRANSPORTS)
    data: dict[str, dict[str, dict[str, str]]] = {}
    absent: list[str] = []
    for name in names:
        try:
            data[name] = transport_class(name).profile_settings()
        except MissingExtraError:
            if transport:
                raise
            absent.append(name)
    if absent:
        needed = ",".join(dict.fromkeys(str(EXTRA_OF[n]) for n in absent))
        Console(stderr=True).print(
            f"not shown (driver not installed): {', '.join(absent)}; "
            f"pip install 'msglab[{needed}]'",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    # the servers behind the transports shown, and PostgreSQL: every lab run's effects
    services = {s for n in names if (s := SERVICE_OF.get(n))} | {"postgres"}
    servers = server_settings(Settings.from_env(), services)
    if as_json:
        print(json.dumps({**data, "servers": servers}, indent=2))
        return
    for name, per_profile in data.items():
        table = Table(title=name, show_lines=False)
        keys = list(dict.fromkeys(k for p in per_profile.values() for k in p))
        # the settings' names whole, up to half the terminal (librdkafka's are long and have no
        # space to wrap at); a longer name or value is folded, never cut
        widest = max(len(k) for k in keys)
        table.add_column("setting", overflow="fold", width=min(widest, console.width // 2 - 1))
        for profile in per_profile:
            table.add_column(profile, overflow="fold")
        for key in keys:
            table.add_row(key, *[per_profile[p].get(key, "-") for p in per_profile])
        console.print(table)
    table = Table(title="msglab's servers now (read from them; msglab run --set KEY=VALUE)")
    for col in ("server", "setting", "in force", "--set values"):
        table.add_column(col)
    for service, found in servers.items():
        for key, value in found.items():
            table.add_row(service, key, value, KNOBS[key].choices)
    console.print(table)


COMMANDS: list[Callable[..., None]] = [publish, consume, roundtrip, profiles]
