"""Change data capture: Debezium publishes msglab's outbox table, or a team's own table's
changes, to Kafka through Kafka Connect.

``ConnectClient`` drives Kafka Connect's REST API; ``outbox_connector`` is the Debezium
PostgreSQL connector config whose records are msglab's Kafka wire format;
``start_outbox_connector`` / ``stop_outbox_connector`` run one (the latter drops its replication
slot). Delivery is at-least-once: after a Connect worker crash, what was published since the
last offset flush is published again (see ``msglab.cdc.outbox``). ``table_connector`` /
``start_table_connector`` stream one table's changes, and ``decode_change`` (or the middleware
``table_change_middleware``) turns each into a Message whose id ``<table>:<lsn>:<pk>`` is the
idempotent consumer's dedup key (``msglab.cdc.table``). Imports httpx and msglab's core only;
``msglab.cdc.database`` (SQLAlchemy: the checks before a connector starts, its replication
slot) and ``msglab.cdc.manage`` (what ``msglab cdc`` runs) are imported by name. The servers
are ``msglab infra up kafka postgres connect``.
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
from msglab.cdc.table import (
    TableChange,
    change_decoder,
    decode_change,
    start_table_connector,
    table_change_middleware,
    table_connector,
)

__all__ = [
    "HEADERS_HEADER",
    "ID_HEADER",
    "OUTBOX_TABLE",
    "ConnectClient",
    "ConnectorError",
    "ConnectorStatus",
    "TableChange",
    "TaskState",
    "change_decoder",
    "database_settings",
    "decode_change",
    "drop_slot_sql",
    "expand_headers",
    "expand_headers_middleware",
    "outbox_connector",
    "password_file_of",
    "slot_name",
    "start_outbox_connector",
    "start_table_connector",
    "stop_outbox_connector",
    "table_change_middleware",
    "table_connector",
    "write_password_file",
]
