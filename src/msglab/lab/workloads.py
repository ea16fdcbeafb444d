"""Workloads: what a run's consumers do besides the plain one group that reads along, for the
claims that are not about a fault (``msglab run --workload NAME``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """``second_group``: a consumer of a second group (``r0``) reads the topic, ``after`` the
    drain or ``alongside`` the first group; ``replies``: the consumers answer every message on
    the reply topic, which the second group reads; ``idle_consumers``: every consumer is down
    while the producers publish, and starts after; ``slow``: each consumer takes
    ``Scenario.slow_ms`` per message; ``poison``: one message's handler always fails (the
    App runtime retries it, then dead-letters it with the reason)."""

    name: str
    does: str
    second_group: str | None = None  # None, "after" or "alongside"
    replies: bool = False
    idle_consumers: bool = False
    slow: bool = False
    poison: bool = False


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("none", "one group of consumers reads along"),
        Workload(
            "replay",
            "after the drain, a consumer of a new group reads the topic from the beginning",
            second_group="after",
        ),
        Workload(
            "fanout",
            "a consumer of a second group subscribes with the first and reads along (no "
            "effects): does every group get every message?",
            second_group="alongside",
        ),
        Workload(
            "request-reply",
            "each consumer answers every message, after its effect and before its ack, on the "
            "topic `<topic>-replies`; a requester group reads the replies (the round trip)",
            second_group="alongside",
            replies=True,
        ),
        Workload(
            "no-subscriber",
            "publish everything while no consumer runs, then start the consumers",
            idle_consumers=True,
        ),
        Workload("slow-consumer", "consumers take `slow_ms` per message", slow=True),
        Workload(
            "poison",
            "the handler always fails on one message (a third into p0's share): three attempts "
            "on the runtime's retry flow, then `<topic>.dlq` with the reason",
            poison=True,
        ),
    )
}
"""Every workload by name, in the order ``--help`` lists them."""
