"""Client configuration shared by every transport: explicit, frozen, validated.

Timeouts follow the design notes' client hygiene: connect within 5 s, a request within 10 s,
a bounded number of reconnects with exponential backoff. A send whose outcome is not known
when a timeout fires is reported as *unknown*, never as failed or sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit, urlunsplit

from msglab.errors import ConfigError, UsageError
from msglab.profiles import DeliveryProfile

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
NAME_RULE_TEXT = (
    "1-200 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"
)


ACKS = ("0", "1", "all")  # ClientConfig.acks (Kafka)
QUEUE_TYPES = ("classic", "quorum")  # ClientConfig.queue_type (RabbitMQ)
SET_FIELDS = ("acks", "queue_type", "wait_replicas")  # ClientConfig.with_fields

SECRET_PARAM = re.compile(r"(?i)((?:password|passwd|pwd|secret|token)=)[^&;\s]*")
URL_LIST = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.-]*://)")  # the comma before each next URL


RELAY_ORDERINGS = ("keys", "skip-locked")
"""How several outbox relays share the rows (``msglab.outbox.Relay``): ``keys``, each owns a
share of the keys (order per key); ``skip-locked``, each takes the next unlocked rows."""

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``30m``, ``45s``, ``250ms`` or a plain number of seconds;
    ConfigError naming the forms for anything else."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"duration {text!r}: use a number and d, h, m, s or ms (7d, 30m, 0)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def redact_url(url: str) -> str:
    """``url`` as a person or a file may see it: the password of its user part and of any
    ``password=`` / ``secret=`` / ``token=`` parameter replaced by ``***``
    (``postgresql://postgres:***@127.0.0.1:25442/msglab``); each URL of a comma-separated list
    (a cluster's: ``amqp://guest:***@127.0.2.1:25682/%2F,amqp://guest:***@...``) so. A URL
    without a secret (a Kafka bootstrap list, ``redis://host:port/0``) comes back unchanged."""
    several = URL_LIST.split(url)
    if len(several) > 1:
        return ",".join(redact_url(one) for one in several)
    url = SECRET_PARAM.sub(r"\1***", url)
    if "://" not in url:
        return url
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid topic / group name on every broker, else UsageError."""
    if not NAME_RULE.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: use {NAME_RULE_TEXT}")
    return name


@dataclass(frozen=True)
class Backoff:
    """Reconnect policy: at most ``attempts`` tries, waiting ``first_s`` doubling to ``max_s``."""

    attempts: int = 8
    first_s: float = 0.2
    max_s: float = 3.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.first_s < 0 or self.max_s < self.first_s:
            raise ConfigError(f"invalid backoff {self}")

    def delays(self) -> list[float]:
        return [min(self.max_s, self.first_s * 2**i) for i in range(self.attempts)]


@dataclass(frozen=True)
class ClientConfig:
    """How a transport reaches its broker and what it is asked to promise.

    url: the broker (Kafka: a bootstrap list ``host:port[,host:port]``; RabbitMQ ``amqp://``;
        Redis ``redis://``). profile: the delivery profile (effectively-once is kept as
        at-least-once: a transport delivers, the consumer's dedup makes it effectively once).
    connect_timeout_s: a connection not made within this is an error naming host:port.
    request_timeout_s: a request (a confirm, a produce) not answered within this is *unknown*.
    reconnect: backoff for reconnecting after a lost connection.
    max_payload_bytes: larger payloads are refused before sending.
    prefetch: how many unacked deliveries a subscriber may hold.
    claim_idle_s: Redis Streams: pending entries idle this long are claimed from dead consumers.
    session_timeout_s: Kafka: a consumer silent this long is out of its group.
    partitions: Kafka: partitions of topics the transport creates.
    acks: Kafka: the producer's ``acks``, ``0`` | ``1`` | ``all`` (None: the profile's, ``all``
        under at-least-once, ``1`` under at-most-once).
    queue_type: RabbitMQ: the type of the queues subscribers declare, ``classic`` | ``quorum``
        (None: the profile's, quorum under at-least-once, classic under at-most-once).
    wait_replicas: Redis: after each pipelined chunk of writes, ``WAIT`` until this many
        replicas have them (at most half the request timeout); writes fewer replicas
        acknowledged are *unknown*, not confirmed. 0: no WAIT.
    """

    url: str
    profile: DeliveryProfile = DeliveryProfile.AT_LEAST_ONCE
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    reconnect: Backoff = field(default_factory=Backoff)
    max_payload_bytes: int = 1_000_000
    prefetch: int = 500
    claim_idle_s: float = 30.0
    session_timeout_s: float = 10.0
    partitions: int = 4
    client_id: str = "msglab"
    acks: str | None = None
    queue_type: str | None = None
    wait_replicas: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", self.profile.delivery)
        if self.acks not in (None, *ACKS):
            raise ConfigError(f"acks {self.acks!r}: use one of {', '.join(ACKS)}")
        if self.queue_type not in (None, *QUEUE_TYPES):
            raise ConfigError(
                f"queue_type {self.queue_type!r}: use one of {', '.join(QUEUE_TYPES)}"
            )
        if self.wait_replicas < 0:
            raise ConfigError(f"wait_replicas {self.wait_replicas}: use 0 or more")
        if self.connect_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise ConfigError("timeouts must be positive")
        if self.max_payload_bytes <= 0 or self.prefetch <= 0 or self.partitions <= 0:
            raise ConfigError("max_payload_bytes, prefetch and partitions must be positive")

    def __repr__(self) -> str:
        """The fields, with the URL's password hidden (configs end up in logs)."""
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "url"]
        return f"ClientConfig(url={redact_url(self.url)!r}, {', '.join(shown)})"

    def with_profile(self, profile: DeliveryProfile) -> ClientConfig:
        return replace(self, profile=profile)

    def with_fields(self, fields: Mapping[str, str]) -> ClientConfig:
        """This config with the fields named in ``fields`` changed, from their text (``acks``,
        ``queue_type``, ``wait_replicas``: what ``msglab run --set`` gives a run's clients);
        ConfigError for another name or a value the field does not take."""
        unknown = sorted(set(fields) - set(SET_FIELDS))
        if unknown:
            raise ConfigError(f"not a field --set may change: {', '.join(unknown)}")
        changed: dict[str, str | int] = dict(fields)
        if "wait_replicas" in fields:
            if not fields["wait_replicas"].isdigit():
                raise ConfigError(f"wait_replicas {fields['wait_replicas']!r}: not a count")
            changed["wait_replicas"] = int(fields["wait_replicas"])
        return replace(self, **changed)  # type: ignore[arg-type]

    def check_payload(self, size: int) -> None:
        if size > self.max_payload_bytes:
            raise UsageError(
                f"payload of {size} bytes exceeds the limit of {self.max_payload_bytes} bytes "
                "(ClientConfig.max_payload_bytes)"
            )
