"""Delivery profiles: what a transport is asked to promise, and what each promise means.

* ``at-most-once``: no message is handled twice; confirmed messages may be lost.
* ``at-least-once``: no confirmed message is lost; some may be handled twice.
* ``effectively-once``: at-least-once delivery plus an idempotent consumer
  (``msglab.consumers.idempotent``), so no loss and no duplicate effect. A transport sees it as
  at-least-once (``delivery``): the dedup is the consumer's.
* ``exactly-once``: a consume-transform-produce pipeline from one Kafka topic to others, each
  fetched batch handled in one Kafka transaction that also commits the batch's consumed
  offsets; read with ``isolation.level=read_committed``, every output appears once. Only a
  transport with such transactions takes it (Kafka: ``ports.TransactionalTransport``); every
  other refuses it when built (``refuse_exactly_once``). Effects outside Kafka are not covered:
  they need the idempotent consumer.
"""

from __future__ import annotations

from enum import StrEnum

from msglab.errors import UsageError

EXACTLY_ONCE_REASON = (
    "only Kafka has transactions that commit a consumer's offsets together with the messages "
    "it produced"
)
"""Why every transport but Kafka refuses ``exactly-once`` (part of each refusal's message)."""


class DeliveryProfile(StrEnum):
    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"
    EFFECTIVELY_ONCE = "effectively-once"
    EXACTLY_ONCE = "exactly-once"

    @classmethod
    def parse(cls, name: str) -> DeliveryProfile:
        try:
            return cls(name)
        except ValueError:
            valid = ", ".join(p.value for p in cls)
            raise UsageError(f"unknown profile {name!r}; valid: {valid}") from None

    @property
    def promise(self) -> str:
        return {
            DeliveryProfile.AT_MOST_ONCE: "no duplicate effects",
            DeliveryProfile.AT_LEAST_ONCE: "lost == 0",
            DeliveryProfile.EFFECTIVELY_ONCE: "lost == 0 and duplicate effects == 0",
            DeliveryProfile.EXACTLY_ONCE: (
                "lost == 0 and duplicates == 0 on the output topic read with read_committed"
            ),
        }[self]

    @property
    def delivery(self) -> DeliveryProfile:
        """What the transport is asked for: effectively-once is at-least-once delivery;
        exactly-once asks the transport itself for transactions (it stays exactly-once)."""
        if self is DeliveryProfile.EFFECTIVELY_ONCE:
            return DeliveryProfile.AT_LEAST_ONCE
        return self


def refuse_exactly_once(transport: str, profile: DeliveryProfile) -> None:
    """UsageError when ``profile`` is exactly-once: what a transport without Kafka's
    transactions calls when it is built."""
    if profile is DeliveryProfile.EXACTLY_ONCE:
        raise UsageError(
            f"{transport} cannot promise exactly-once: {EXACTLY_ONCE_REASON}; use kafka, or "
            "effectively-once (the idempotent consumer) on this transport"
        )
