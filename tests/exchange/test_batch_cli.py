"""``msglab batch send | receive | status`` as a user runs them, on real folders: push into an
inbox, pull from an outbox by two groups, ``--exec`` success and failure, retention, an App,
a bad JSON Lines file, a graceful stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from msglab.cli import app
from msglab.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def msglab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msglab", *args], cwd=cwd, capture_output=True, text=True
    )


def wait_until(condition: Callable[[], Any], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status(root: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["batch", "status", str(root), "--json"])
    assert result.exit_code == 0, result.output
    topic: dict[str, Any] = json.loads(result.output)["topics"][0]
    return topic


class Receiver:
    """``msglab batch receive`` in its own process, its log kept."""

    def __init__(self, tmp: Path, *args: str, name: str = "r") -> None:
        self.log = tmp / f"{name}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "msglab", "batch", "receive", *args],
                cwd=tmp,
                env={**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{REPO / 'src'}"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def records(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(start, start + n)))
    return path


def test_a_bad_line_is_named_and_nothing_is_sent(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, oops}\n[4]\n')
    result = runner.invoke(app, ["batch", "send", str(source), "--outbox", str(tmp_path / "out")])
    assert isinstance(result.exception, UsageError)  # exit 2 in main()
    assert "line 3: not JSON" in str(result.exception)
    assert "oops" in str(result.exception) and "nothing was sent" in str(result.exception)
    assert not (tmp_path / "out").exists()
    source.write_text('{"n": 1}\n\n[4]\n')
    result = runner.invoke(
        app, ["batch", "send", "-", "--outbox", str(tmp_path / "out")], input=source.read_text()
    )
    assert "<stdin> line 3: a JSON list, not an object" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_push_into_a_missing_inbox_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["batch", "send", str(records(tmp_path / "in.jsonl", 1)), "--to", str(tmp_path / "x")]
    )
    assert isinstance(result.exception, UsageError)
    assert "no inbox at" in str(result.exception) and "batch receive --from" in str(
        result.exception
    )


def test_push_exec_processes_moves_and_expires(tmp_path: Path, receivers: list[Receiver]) -> None:
    """A receiver makes its inbox; the producer pushes 25 records in batches of 10; the command
    gets each batch's lines as sent; processed batches move aside, then expire (--keep 1s);
    a second group is refused on an inbox; SIGTERM stops with exit 0."""
    inbox, got = tmp_path / "inbox", tmp_path / "got"
    got.mkdir()
    cmd = f'cat > {got}/"$MSGLAB_BATCH.$MSGLAB_ATTEMPT"'
    receivers.append(Receiver(tmp_path, "--from", str(inbox), "--exec", cmd, "--keep", "1s"))
    wait_until(lambda: (inbox / "batches" / ".groups" / "batch").is_dir())
    sent = msglab(
        "batch",
        "send",
        str(records(tmp_path / "in.jsonl", 25)),
        "--to",
        str(inbox),
        "--batch",
        "10",
    )
    assert sent.returncode == 0, sent.stderr
    assert "sent 25 record(s) in 3 batch(es)" in sent.stdout
    wait_until(lambda: status(inbox)["processed"] == 3)
    assert status(inbox)["pending"] == 0
    lines = sorted((p.read_text() for p in got.iterdir()), key=len)
    assert [len(t.splitlines()) for t in lines] == [5, 10, 10]
    assert {json.loads(line)["n"] for t in lines for line in t.splitlines()} == set(range(25))
    assert all(p.name.endswith(".1") for p in got.iterdir())
    wait_until(lambda: status(inbox)["processed"] == 0)  # older than 1 s: deleted
    other = msglab("batch", "receive", "--from", str(inbox), "--group", "g2", "--exec", "cat")
    assert other.returncode == 2 and "has one reader" in other.stderr
    r = receivers[0]
    assert r.stop() == 0
    assert r.text().count(": processed") == 3 and "moved to" in r.text()


def test_a_command_past_its_timeout_is_killed_and_its_batch_set_aside(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    inbox, pid = tmp_path / "inbox", tmp_path / "sleeper.pid"
    hang = f"sleep 60 & echo $! > {pid}; wait"  # what it starts is killed with it
    args = ("--exec", hang, "--timeout", "0.5", "--attempts", "1")
    receivers.append(Receiver(tmp_path, "--from", str(inbox), *args))
    wait_until(lambda: (inbox / "batches" / ".groups" / "batch").is_dir())
    sent = msglab("batch", "send", str(records(tmp_path / "in.jsonl", 2)), "--to", str(inbox))
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: len(status(inbox)["quarantined"]) == 1)
    (aside,) = status(inbox)["quarantined"]
    assert "timed out after 0.5s, killed" in aside["reason"]
    sleeper = int(pid.read_text())
    wait_until(lambda: not Path(f"/proc/{sleeper}").exists() or _zombie(sleeper), 5)
    assert receivers[0].stop() == 0


def _zombie(pid: int) -> bool:
    """True when ``pid`` is dead and not yet reaped (this machine's init reaps late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_pull_two_groups_and_a_failing_command(tmp_path: Path, receivers: list[Receiver]) -> None:
    """The producer's outbox is read by two groups: each gets every batch, the one sent before
    they started too; group bad's command fails, so after 2 attempts it sets its copy aside
    with the stderr tail while group ok processes every batch; nothing moves in an outbox; the
    producer's retention deletes batches by age."""
    outbox, got = tmp_path / "outbox", tmp_path / "got"
    got.mkdir()
    first = msglab("batch", "send", str(records(tmp_path / "a.jsonl", 4)), "--outbox", str(outbox))
    assert first.returncode == 0, first.stderr
    ok = f"cat >> {got}/ok"
    bad = 'cat > /dev/null; echo "cannot parse record" >&2; exit 7'
    receivers.append(Receiver(tmp_path, "--from", str(outbox), "--group", "ok", "--exec", ok))
    receivers.append(
        Receiver(
            tmp_path,
            "--from",
            str(outbox),
            "--group",
            "bad",
            "--exec",
            bad,
            "--attempts",
            "2",
            "--retry-delay",
            "0.1",
            name="bad",
        )
    )
    sent = msglab(
        "batch",
        "send",
        str(records(tmp_path / "b.jsonl", 3, 4)),
        "--outbox",
        str(outbox),
        "--batch",
        "2",
    )
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: status(outbox)["processed"] == 3 and len(status(outbox)["quarantined"]) == 3)
    s = status(outbox)
    assert (s["pending"], s["in_progress"]) == (0, 0)
    assert [json.loads(line)["n"] for line in (got / "ok").read_text().splitlines()] == list(
        range(7)
    )
    assert len(s["quarantined"]) == 3
    assert {q["group"] for q in s["quarantined"]} == {"bad"}
    assert all(
        "exited 7 on attempt 2: cannot parse record" in q["reason"] for q in s["quarantined"]
    )
    table = runner.invoke(app, ["batch", "status", str(outbox)], terminal_width=80)
    assert table.exit_code == 0
    assert all(len(line) <= 80 for line in table.output.splitlines())
    assert all(q["batch"] in table.output for q in s["quarantined"])  # a row each, unwrapped
    assert all(r.stop() == 0 for r in receivers)
    assert len(list((outbox / "batches").glob("*.manifest"))) == 3  # nothing moved: the producer's
    time.sleep(1.1)
    again = msglab(
        "batch",
        "send",
        str(records(tmp_path / "c.jsonl", 1)),
        "--outbox",
        str(outbox),
        "--keep",
        "1s",
    )
    assert "deleted 3 batch(es) older than 1s" in again.stdout, again.stderr
    s = status(outbox)
    assert (s["pending"], s["processed"]) == (1, 0)


APP = """
from msglab.app import App

app = App("lines", middleware=[])

@app.consumer("batches", transport="files", group="app")
def handle(ctx):
    with open("handled.txt", "a") as f:
        f.write(ctx.message.payload.decode() + "\\n")
"""


def test_app_receives_every_record(tmp_path: Path, receivers: list[Receiver]) -> None:
    (tmp_path / "lineapp.py").write_text(APP)
    inbox = tmp_path / "inbox"
    receivers.append(Receiver(tmp_path, "--from", str(inbox), "--app", "lineapp:app"))
    wait_until(lambda: (inbox / "batches" / ".groups" / "app").is_dir())
    sent = msglab(
        "batch", "send", str(records(tmp_path / "in.jsonl", 5)), "--to", str(inbox), "--batch", "2"
    )
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: status(inbox)["processed"] == 3)
    handled = (tmp_path / "handled.txt").read_text().splitlines()
    assert [json.loads(line)["n"] for line in handled] == list(range(5))
    assert receivers[0].stop() == 0
