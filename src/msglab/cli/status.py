"""``msglab status``: how far a consumer group is behind on a topic (the consumer's view;
``msglab infra status`` is the servers')."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from msglab.cli.messaging import (
    ClusterOpt,
    GroupOpt,
    JsonOpt,
    TopicOpt,
    TransportOpt,
    build,
    cluster_label,
)
from msglab.config import check_name
from msglab.errors import UsageError
from msglab.lag import Lag, total
from msglab.ports import LagReader

console = Console()


def status(
    transport: TransportOpt,
    topic: TopicOpt = "msglab-demo",
    group: GroupOpt = "msglab-cli",
    cluster: ClusterOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """How far GROUP is behind on TOPIC, read from the broker now: per partition (Kafka: end
    minus committed offset), the group's queue (RabbitMQ: ready; unacked only while no
    consumer is attached), the stream (Redis Streams: lag and pending) or the pending batches
    (files). lag: not acked by the group yet; ready: not handed out; unacked: handed out."""
    check_name("topic", topic)
    check_name("group", group)
    # the profile changes nothing read here; at-most-once is the one every transport accepts
    t = build(transport, "at-most-once", cluster=cluster)
    if not isinstance(t, LagReader):
        raise UsageError(
            f"{transport} stores nothing: a message published while nobody listens is gone, "
            "so no group has a backlog to show"
        )
    lags = t.lag(topic, group)
    if as_json:
        rows = [lag.to_json() for lag in lags]
        on = cluster_label(transport, cluster)
        data = {"transport": transport, "topic": topic, "group": group, "cluster": on}
        print(json.dumps({**data, "lag": total(lags), "partitions": rows}))
        return
    console.print(lag_table(lags, f"{group} on {transport}:{topic}", console.width))
    for note in dict.fromkeys(lag.note for lag in lags if lag.note):
        console.print(escape(note), highlight=False)


def _cell(value: int | None) -> str:
    return "?" if value is None else str(value)


def lag_table(lags: Sequence[Lag], title: str, width: int) -> Table:
    """One line per partition, without borders: lag, ready and unacked whole (``?``:
    unknown), the partition (a RabbitMQ queue's name can be 401 characters) folded into what
    is left of ``width``, then the broker's own figures cut to what remains (left out when
    fewer than 8 columns do); a total line when there are several partitions."""
    table = Table(title=f"{title}: lag {_cell(total(lags))}", box=None, pad_edge=False)
    rows = [[lag.partition, _cell(lag.lag), _cell(lag.ready), _cell(lag.unacked)] for lag in lags]
    if len(lags) > 1:
        rows.append(["total", _cell(total(lags)), *(_sum(lags, f) for f in ("ready", "unacked"))])
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(COLUMNS)]
    figures = sum(widths[1:]) + 2 * 3
    name = max(len(COLUMNS[0]), min(widths[0], width - figures - 2))
    table.add_column(COLUMNS[0], overflow="fold", width=name, header_style="bold")
    for col, widest in zip(COLUMNS[1:], widths[1:], strict=True):
        table.add_column(col, no_wrap=True, min_width=widest, justify="right", header_style="bold")
    used = name + 2 + figures
    details = [", ".join(f"{k} {v}" for k, v in lag.details.items()) for lag in lags]
    with_details = width - used >= 8 and any(details)
    if with_details:
        table.add_column("details", no_wrap=True, overflow="ellipsis", header_style="bold")
    for i, row in enumerate(rows):
        extra = [details[i] if i < len(details) else ""] if with_details else []
        table.add_row(*map(escape, row), *extra)
    return table


COLUMNS = ("partition", "lag", "ready", "unacked")


def _sum(lags: Sequence[Lag], field: str) -> str:
    values = [getattr(lag, field) for lag in lags]
    return "?" if None in values else str(sum(values))
