"""A consumer process for the contract suite's consumer-kill test.

``python -m msglab.testing.worker TRANSPORT TOPIC GROUP OUT`` with the ClientConfig's fields as
JSON on standard input (they hold the broker's password; a command line is readable by every
user of the machine): subscribes, prints
``subscribed``, handles the first delivery by writing its id to OUT (fsynced), and then hangs
without acking until it is killed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.profiles import DeliveryProfile


def main(argv: list[str]) -> None:
    name, topic, group, out = argv
    fields = json.loads(sys.stdin.read())
    fields["profile"] = DeliveryProfile(fields["profile"])
    sub = open_transport(name, ClientConfig(**fields)).subscriber(group)
    deliveries = sub.subscribe(topic)
    print("subscribed", flush=True)
    delivery = next(iter(deliveries))
    partial = f"{out}.partial"
    with open(partial, "w") as f:
        f.write(delivery.message.id + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, out)  # the test sees the file only once it holds the id
    while True:  # the effect is done; the ack never comes
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1:])
