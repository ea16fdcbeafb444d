"""Delivery profiles: what a transport is asked to promise, and what each promise means.

* ``at-most-once``: no message is handled twice; confirmed messages may be lost.
* ``at-least-once``: no confirmed message is lost; some may be handled twice.
* ``effectively-once`` (the outbox and idempotent consumer add it): at-least-once delivery
  plus an idempotent effect, so no loss and no duplicate effect.
"""

from __future__ import annotations

from enum import StrEnum

from msglab.errors import UsageError


class DeliveryProfile(StrEnum):
    AT_MOST_ONCE = "at-most-once"
    AT_LEAST_ONCE = "at-least-once"

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
        }[self]
