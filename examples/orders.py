"""An order-billing service on msglab's App runtime: ``msglab worker examples.orders:app``.

Each order (JSON) on ``orders`` becomes an invoice on ``invoices``, carrying the order's
correlation id. A failing order is retried 3 times, 0.5 s then 1 s apart, without holding up
the orders behind it; an order that can never be billed (negative amount, or not JSON) goes to
``orders.dlq`` with the reason. The transport and topic come from the environment so the same
module runs on every transport (``ORDERS_TRANSPORT``, ``ORDERS_TOPIC``).
"""

import json
import os

from msglab.app import App, Context, DeadLetter, NonRetryable, Retry, correlation

TRANSPORT = os.environ.get("ORDERS_TRANSPORT", "redis-streams")
TOPIC = os.environ.get("ORDERS_TOPIC", "orders")

app = App(
    "billing",
    middleware=[DeadLetter(), Retry(attempts=3, first_s=0.5, max_s=1.0), correlation],
)


@app.consumer(TOPIC, transport=TRANSPORT, group="billing", decode=json.loads)
def bill(ctx: Context) -> None:
    order = ctx.value  # DecodeError (dead-lettered at once) if it is not JSON
    if order["amount"] < 0:
        raise NonRetryable(f"order {order['id']}: negative amount")
    invoice = {"order": order["id"], "total": order["amount"]}
    ctx.publish(f"{TOPIC}.invoices", json.dumps(invoice).encode(), key=ctx.message.key)
