"""A worker process for the App contract's kill test.

``python -m msglab.testing.app_worker TRANSPORT TOPIC GROUP OUT`` with the ClientConfig's
fields as JSON on standard input (as ``msglab.testing.worker``): runs an App whose one handler
appends its attempt number to OUT (fsynced) and fails, retried 4 times in all (1, 2, 4 s
apart) then dead-lettered; prints ``consuming`` once subscribed, and runs until killed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from msglab.app import App, Context, DeadLetter, Retry, Runtime
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.ports import Transport
from msglab.profiles import DeliveryProfile

ATTEMPTS = 4


class Failing(Exception):
    pass


def main(argv: list[str]) -> None:
    name, topic, group, out = argv
    fields = json.loads(sys.stdin.read())
    fields["profile"] = DeliveryProfile(fields["profile"])
    config = ClientConfig(**fields)
    app = App("killed", middleware=[DeadLetter(), Retry(ATTEMPTS, 1.0, 4.0, jitter=0)])

    @app.consumer(topic, transport=name, group=group)
    def handle(ctx: Context) -> None:
        with open(out, "a") as f:
            f.write(f"{ctx.attempt}\n")
            f.flush()
            os.fsync(f.fileno())
        raise Failing(f"attempt {ctx.attempt}")

    def connect(transport: str, profile: DeliveryProfile) -> Transport:
        return open_transport(transport, config.with_profile(profile))

    runtime = Runtime(app, connect)
    runtime.start()
    if not runtime.wait_consuming(120):
        sys.exit("not subscribed within 120 s")
    print("consuming", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1:])
