"""Change data capture: Debezium publishes msglab's outbox table to Kafka through Kafka Connect.

``ConnectClient`` drives Kafka Connect's REST API; ``outbox_connector`` is the Debezium
PostgreSQL connector config whose records are msglab's Kafka wire format;
``start_outbox_connector`` / ``stop_outbox_connector`` run one (the latter drops its replication
slot). Delivery is at-least-once: after a Connect worker crash, what was published since the
last offset flush is published again (see ``msglab.cdc.outbox``). Imports httpx and msglab's
core only: the servers are ``msglab infra up kafka postgres connect``.
"""

from msglab.cdc.connect import ConnectClient, ConnectorError, ConnectorStatus, TaskState
from msglab.cdc.outbox import (
    HEADERS_HEADER,
    ID_HEADER,
    OUTBOX_TABLE,
    database_settings,
    drop_slot_sql,
    expand_headers,
    expand_headers_middleware,
    outbox_connector,
    password_file_of,
    slot_name,
    start_outbox_connector,
    stop_outbox_connector,
    write_password_file,
)

__all__ = [
    "HEADERS_HEADER",
    "ID_HEADER",
    "OUTBOX_TABLE",
    "ConnectClient",
    "ConnectorError",
    "ConnectorStatus",
    "TaskState",
    "database_settings",
    "drop_slot_sql",
    "expand_headers",
    "expand_headers_middleware",
    "outbox_connector",
    "password_file_of",
    "slot_name",
    "start_outbox_connector",
    "stop_outbox_connector",
    "write_password_file",
]
