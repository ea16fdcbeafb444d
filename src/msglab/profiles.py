"""Delivery profiles: what a transport is asked to promise, and what each promise means.

* ``at-most-once``: no message is handled twice; confirmed messages may be lost.
* ``at-least-once``: no confirmed message is lost; some may be handled twice.
* ``effectively-once``: at-least-once delivery plus an idempotent consumer
  (``msglab.consumers.idempotent``), so no loss and no duplicate effect. A transport sees it as
  at-least-once (``delivery``): the dedup is the consumer's.
"""

from __future__ import annotations

from enum import StrEnum

from msglab.errors import UsageError


class DeliveryProfile(StrEnum):
    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"
    EFFECTIVELY_ONCE = "effectively-once"

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
        }[self]

    @property
    def delivery(self) -> DeliveryProfile:
        """What the transport is asked for: effectively-once is at-least-once delivery."""
        if self is DeliveryProfile.EFFECTIVELY_ONCE:
            return DeliveryProfile.AT_LEAST_ONCE
        return self
