"""The order service of msglab's README, end to end on one transport:

    python examples/orders.py --transport kafka    # or rabbitmq, redis-streams, files
    msglab worker examples.orders:app              # the billing worker alone (until SIGTERM)

The shop records each order and its message in one PostgreSQL transaction (the transactional
outbox: ``place``); the relay publishes what was committed (``relay``); the billing worker
turns each order into an invoice row, once however often it is delivered (the idempotent
consumer: the invoice and the dedup row commit together), announces it on
``<topic>.invoices``, retries what fails (three attempts, 0.5 s then 1 s apart, while the orders
behind it flow) and dead-letters what can never succeed (a negative amount, a payload that is
not JSON) to ``<topic>.dlq`` with the reason. ``--transport`` starts msglab's own servers for
it (``msglab infra up``) and prints what happened.

Environment for the worker: ``ORDERS_TRANSPORT`` (redis-streams), ``ORDERS_TOPIC`` (orders),
``ORDERS_DB`` (msglab's own PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from msglab.app import (
    App,
    Context,
    DeadLetter,
    NonRetryable,
    Retry,
    Runtime,
    correlation,
    idempotent,
)
from msglab.app.observer import NoObserver
from msglab.brokers import open_transport, serverless_url, service_of
from msglab.config import ClientConfig
from msglab.consumers.idempotent import IdempotentConsumer
from msglab.db import engine
from msglab.infra import backend_for, service_url
from msglab.message import Message
from msglab.outbox import Outbox, Relay
from msglab.settings import Settings


def make_app(transport: str, topic: str, db: Any) -> App:
    """The billing worker: an invoice per order, once."""
    app = App(
        "billing",
        middleware=[
            DeadLetter(),
            Retry(attempts=3, first_s=0.5, max_s=1.0),
            correlation,
            idempotent(IdempotentConsumer(db, f"billing-{topic}")),
        ],
    )

    @app.consumer(topic, transport=transport, group="billing", decode=json.loads)
    def bill(ctx: Context) -> None:
        order = ctx.value  # DecodeError (dead-lettered at once) if it is not JSON
        if order["amount"] < 0:
            raise NonRetryable(f"order {order['id']}: negative amount")
        ctx.db.execute(INVOICE, {"topic": topic, "order": order["id"], "total": order["amount"]})
        invoice = {"order": order["id"], "total": order["amount"]}
        ctx.publish(f"{topic}.invoices", json.dumps(invoice).encode(), key=ctx.message.key)

    return app


def own_database() -> str:
    """``ORDERS_DB``, else msglab's own PostgreSQL (``msglab infra url postgres``)."""
    return os.environ.get("ORDERS_DB") or service_url(Settings.from_env(), "postgres")


def tables(db: Any) -> None:
    """The shop's orders, the billing's invoices, the outbox and the dedup table."""
    with db.begin() as conn:
        conn.execute(text(ORDERS_TABLE))
        conn.execute(text(INVOICES_TABLE))
    Outbox(db).create_table()
    IdempotentConsumer(db, "billing").create_table()


def place(db: Any, topic: str, orders: list[dict[str, Any]], raw: Sequence[bytes] = ()) -> None:
    """The shop: each order's row and its message in one transaction (``raw``: payloads sent
    as they are, to show what the worker does with a message that is not an order)."""
    for order in orders:
        with db.begin() as conn:
            conn.execute(text(ADD_ORDER), {"topic": topic, "order": order["id"]})
            message = Message(json.dumps(order).encode(), key=f"customer-{order['id'] % 3}")
            Outbox.add(conn, topic, [message])
    with db.begin() as conn:
        Outbox.add(conn, topic, [Message(payload) for payload in raw])


def relay(db: Any, transport: Any, topic: str) -> int:
    """Publish the topic's committed, unsent outbox rows; how many."""
    publisher = transport.publisher()
    try:
        sent, worker = 0, Relay(db, publisher, topics=[topic])
        while claimed := worker.run_once():
            sent += claimed
        return sent
    finally:
        publisher.close()


def demo(transport_name: str, count: int) -> int:
    """The whole story on ``transport_name``: servers up, ``count`` orders placed plus a
    negative one and one that is not JSON, relayed, billed; what happened, printed."""
    settings = Settings.from_env()
    service = service_of(transport_name)
    print(f"servers: {', '.join(filter(None, (service, 'postgres')))} (msglab infra up)")
    backend_for(settings).up([s for s in (service, "postgres") if s])
    url = (
        service_url(settings, service) if service else serverless_url(transport_name, settings.home)
    )
    config = ClientConfig(url=url)
    transport = open_transport(transport_name, config)
    db = engine(own_database())
    tables(db)
    topic = f"orders-{uuid.uuid4().hex[:6]}"

    class DeadLetters(NoObserver):
        count = 0

        def dead_lettered(self, topic: str, group: str, handler: str, n: int) -> None:
            DeadLetters.count += n

    # the accounting team's group on the invoices, there before the first one: RabbitMQ keeps
    # a message only for the queues bound when it is published (else: unroutable, refused)
    accounting = transport.subscriber("accounting")
    accounting.subscribe(f"{topic}.invoices")
    accounting.close()
    app = make_app(transport_name, topic, db)
    app.observer = DeadLetters()
    runtime = Runtime(app, lambda name, profile: open_transport(name, config.with_profile(profile)))
    runtime.start()
    runtime.wait_consuming(60)
    orders = [{"id": i, "amount": 10 + i} for i in range(count)]
    place(db, topic, [*orders, {"id": count, "amount": -5}], raw=[b"<order/>"])
    print(f"shop: {count + 1} orders committed with their outbox rows, and 1 message not JSON")
    print(f"relay: {relay(db, transport, topic)} messages published to {transport_name}:{topic}")
    deadline = time.monotonic() + 60
    with db.connect() as conn:
        while time.monotonic() < deadline:
            invoices = conn.execute(text(COUNT_INVOICES), {"topic": topic}).scalar_one()
            conn.rollback()
            if invoices >= count and DeadLetters.count >= 2:
                break
            time.sleep(0.2)
    runtime.stop(10)
    print(f"billing: {invoices} invoices for {count} orders; {DeadLetters.count} dead-lettered")
    print(f"see them: msglab dlq list -t {transport_name} --topic {topic}")
    return 0 if invoices == count and DeadLetters.count == 2 else 1


ORDERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS shop_orders (topic text, order_id int, "
    "placed_at timestamptz DEFAULT now(), PRIMARY KEY (topic, order_id))"
)
INVOICES_TABLE = (
    "CREATE TABLE IF NOT EXISTS invoices (topic text, order_id int, total int, "
    "billed_at timestamptz DEFAULT now(), PRIMARY KEY (topic, order_id))"
)
ADD_ORDER = "INSERT INTO shop_orders (topic, order_id) VALUES (:topic, :order)"
COUNT_INVOICES = "SELECT count(*) FROM invoices WHERE topic = :topic"


def _invoice_statement() -> Any:

    return text("INSERT INTO invoices (topic, order_id, total) VALUES (:topic, :order, :total)")


INVOICE = _invoice_statement()
TRANSPORT = os.environ.get("ORDERS_TRANSPORT", "redis-streams")
TOPIC = os.environ.get("ORDERS_TOPIC", "orders")

if __name__ == "__main__":  # the demo: it starts the servers before it opens the database
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", default="redis-streams")
    parser.add_argument("--orders", type=int, default=20)
    args = parser.parse_args()
    sys.exit(demo(args.transport, args.orders))
else:  # what `msglab worker examples.orders:app` runs; its tables made if missing
    app_db = engine(own_database())
    tables(app_db)
    app = make_app(TRANSPORT, TOPIC, app_db)
