"""The errors msglab raises. Callers catch these, never a driver's exceptions.

    MsglabError                      every error msglab raises; the CLI maps it to an exit code
    ├── UsageError                   bad input: an unknown name, an impossible option (exit 2)
    │   └── MissingExtraError        a driver is not installed; names the extra (also ImportError)
    ├── ConfigError                  settings that cannot work together (exit 2)
    ├── TransportError               a broker operation failed
    │   ├── ConnectError             no connection within the connect timeout (names host:port)
    │   ├── PublishError             some messages not confirmed: ``failed`` and ``unknown`` ids
    │   ├── TransactionAborted       a transaction was aborted, its input rewound: it comes again
    │   └── FencedError              a newer instance with the same transactional identity runs
    └── InfraError                   a server could not be installed, started, stopped or reached
        ├── InstallError             a package, jar or binary could not be installed
        ├── PortInUseError           a port msglab needs is held by another process
        ├── ServerStartError         a server did not become ready (carries the tail of its log)
        ├── NotRunningError          the operation needs a running server that is not running
        ├── FuseUnavailableError     the lazy filesystem cannot be mounted here (names what lacks)
        └── ExternalServiceError     the operation is refused on a server msglab does not own

A driver's exception is converted at one boundary per module and chained (``raise ... from exc``).
"""

from __future__ import annotations

from collections.abc import Sequence


class MsglabError(Exception):
    """Base of every error msglab raises. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(MsglabError):
    """The user asked for something that does not exist or cannot be done; the message says why."""

    exit_code = 2


class MissingExtraError(UsageError, ImportError):
    """``what`` needs ``drivers`` that are not installed; the message names the pip extras that
    bring them (``pip install 'msglab[postgres]'``). An ImportError too, so that importing a
    module without its driver fails as an import does."""

    def __init__(self, what: str, extras: Sequence[str], drivers: Sequence[str]) -> None:
        super().__init__(
            f"{what} needs {', '.join(drivers)} (not installed): "
            f"pip install 'msglab[{','.join(extras)}]'"
        )
        self.extras = tuple(extras)
        self.name = drivers[0] if drivers else None  # ImportError's: the module not found


class ConfigError(MsglabError):
    """Settings that cannot work (a malformed URL, a port out of range, conflicting options)."""

    exit_code = 2


class TransportError(MsglabError):
    """A broker operation failed; the driver's exception is chained as ``__cause__``."""


class ConnectError(TransportError):
    """No connection to ``address`` (host:port) within the connect timeout."""

    def __init__(self, transport: str, address: str, reason: str) -> None:
        super().__init__(f"{transport}: cannot connect to {address}: {reason}")
        self.transport = transport
        self.address = address


class PublishError(TransportError):
    """Some messages were not confirmed.

    ``failed``: ids the broker definitely did not store. ``unknown``: ids whose fate is unknown
    (a timeout or a connection lost in flight): they may have been stored, so a retry may
    duplicate them and a reconciliation can find them later.
    """

    def __init__(self, message: str, failed: tuple[str, ...] = (), unknown: tuple[str, ...] = ()):
        detail = f"{message} ({len(failed)} failed, {len(unknown)} unknown)"
        super().__init__(detail)
        self.failed = failed
        self.unknown = unknown


class TransactionAborted(TransportError):
    """A transaction could not commit and was aborted (what it published is discarded); the
    input it consumed was rewound and comes again. Not fatal: go on with the next batch."""


class FencedError(TransportError):
    """A newer producer with the same transactional identity started (a restarted worker):
    this one is a zombie, fenced by the broker, and must stop rather than start again (a new
    producer would fence the newer one in turn)."""


class InfraError(MsglabError):
    """A server could not be installed, started, stopped, killed or reached."""


class InstallError(InfraError):
    """Installing a server's software failed; the message names the command that failed."""


class PortInUseError(InfraError):
    """A port msglab needs is held by a process msglab does not own. ``service`` is the port's
    setting (``MSGLAB_<SERVICE>_PORT``); ``server`` the server that needs it, when another name
    (a node of a cluster, ``kafka-cluster/n2``, on its own ``host``)."""

    def __init__(
        self,
        service: str,
        port: int,
        holder: str | None,
        host: str = "127.0.0.1",
        server: str | None = None,
    ) -> None:
        who = f" by {holder}" if holder else " by another process"
        super().__init__(
            f"{server or service}: port {host}:{port} is already in use{who}; "
            f"stop it or choose another port (MSGLAB_{service.upper()}_PORT)"
        )
        self.service = service
        self.port = port
        self.holder = holder
        self.host = host
        self.server = server


class ServerStartError(InfraError):
    """A server did not become ready in time; ``log_tail`` holds the last lines of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        text = message if not log_tail else f"{message}\n--- last lines of the log ---\n{log_tail}"
        super().__init__(text)
        self.log_tail = log_tail


class NotRunningError(InfraError):
    """The operation (kill, a ping) needs a running server and there is none."""


class FuseUnavailableError(InfraError):
    """``--lazyfs`` on a machine without FUSE (the device, fusermount3 or mfusepy): the message
    names each missing piece and how to get it."""

    exit_code = 2


class ExternalServiceError(InfraError):
    """kill / restart / down were asked of a server given by URL, which msglab does not own."""
