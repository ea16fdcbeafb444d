"""``msglab dlq`` as a user runs it, on the files transport under a fresh MSGLAB_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from msglab.app import App, Context, DeadLetter, NonRetryable
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.message import Message
from tests.app.helpers import Reader, Recorder, running, wait_until


def dlq(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msglab", "dlq", *args, "-t", "files", "--wait", "1"],
        env={**os.environ, "MSGLAB_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_show_replay_and_purge(tmp_path: Path) -> None:
    config = ClientConfig(url=f"file://{tmp_path / 'files'}")
    rec = Recorder()
    app = App("svc", middleware=[DeadLetter()], observer=rec)

    @app.consumer("orders", transport="files", group="g")
    def refuse(ctx: Context) -> None:
        raise NonRetryable(f"refused {ctx.message.payload.decode()}")

    sent = [Message(b"one", key="k", headers={"h": "1"}), Message(b"two")]
    with running(app, config):
        pub = open_transport("files", config).publisher()
        pub.publish("orders", sent)
        pub.close()
        wait_until(lambda: rec.kinds().count("dead_lettered") == 2, what="two dead letters")

    listed = dlq(tmp_path, "list", "--topic", "orders", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [m.id for m in sent]
    assert rows[0]["error"] == "refused one" and rows[0]["attempts"] == 1
    assert (rows[0]["origin"], rows[0]["handler"], rows[0]["headers"]) == (
        "orders",
        "refuse",
        {"h": "1"},
    )
    table = dlq(tmp_path, "list", "--topic", "orders")
    assert "2 dead letter(s)" in table.stdout and sent[0].id in table.stdout

    shown = dlq(tmp_path, "show", "--topic", "orders", "--id", sent[1].id, "--json")
    assert json.loads(shown.stdout)[0]["payload"] == "two"

    for args, reason in (
        (["replay", "--topic", "orders", "--id", "nope"], "no dead letter with id nope"),
        (["replay", "--topic", "orders"], "name dead letters with --id, or say --all"),
        (["show", "--topic", "orders", "--id", "nope"], "no dead letter with id nope"),
    ):
        refused = dlq(tmp_path, *args)
        assert refused.returncode == 2, refused
        assert reason in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    replayed = dlq(tmp_path, "replay", "--topic", "orders", "--id", sent[0].id, "--json")
    assert json.loads(replayed.stdout) == {"replayed": [sent[0].id], "kept": 1}
    again = Reader(open_transport("files", config), "orders", group="after-replay")
    try:
        got = again.wait(3)
    finally:
        again.stop()
    assert [m.id for m in got] == [sent[0].id, sent[1].id, sent[0].id]
    assert got[2] == sent[0], "the replayed message is not the original"

    purged = dlq(tmp_path, "purge", "--topic", "orders", "--all", "--json")
    assert json.loads(purged.stdout) == {"purged": [sent[1].id], "kept": 0}
    assert json.loads(dlq(tmp_path, "list", "--topic", "orders", "--json").stdout) == []
