"""The file-batch transport's own promises: manifests checked before delivery, bad batches
quarantined with a reason, claims released by a killed consumer, temp files and fsyncs per
profile, group state on disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from msglab.brokers import files, open_transport
from msglab.config import ClientConfig
from msglab.errors import ConfigError, ConnectError
from msglab.message import Delivery, Message
from msglab.ports import TopicAdmin, Transport
from msglab.profiles import DeliveryProfile

ALO, AMO = DeliveryProfile.AT_LEAST_ONCE, DeliveryProfile.AT_MOST_ONCE


def make(root: Path, profile: DeliveryProfile = ALO) -> Transport:
    return open_transport("files", ClientConfig(url=f"file://{root}", profile=profile))


def messages(n: int, tag: str, key: str = "k") -> list[Message]:
    return [Message(f"{tag}{i}".encode(), key=key, headers={"seq": str(i)}) for i in range(n)]


def publish(t: Transport, topic: str, *batches: list[Message]) -> None:
    pub = t.publisher()
    for batch in batches:
        pub.publish(topic, batch)
    pub.close()


def drain(
    t: Transport,
    topic: str,
    group: str,
    quiet_s: float = 0.6,
    settle: Callable[[Delivery], None] = Delivery.ack,
) -> list[Delivery]:
    """Every delivery a member of ``group`` gets until nothing came for ``quiet_s``."""
    sub = t.subscriber(group)
    got: list[Delivery] = []
    last = [time.monotonic()]

    def idle() -> None:
        if time.monotonic() - last[0] > quiet_s:
            sub.close()

    sub.on_idle(idle)
    guard = threading.Timer(30, sub.close)
    guard.start()
    for d in sub.subscribe(topic):
        got.append(d)
        settle(d)
        last[0] = time.monotonic()
    guard.cancel()
    return got


def batch_names(topic_dir: Path) -> list[str]:
    return sorted(p.name[: -len(".manifest")] for p in topic_dir.glob("*.manifest"))


def ids(batch: list[Message]) -> set[str]:
    return {m.id for m in batch}


def flip_a_byte(data: Path, manifest: Path) -> None:
    raw = bytearray(data.read_bytes())
    raw[12] ^= 0x01
    data.write_bytes(bytes(raw))


def truncate(data: Path, manifest: Path) -> None:
    data.write_bytes(data.read_bytes()[:-7])


def drop_sha(data: Path, manifest: Path) -> None:
    fields = json.loads(manifest.read_text())
    del fields["sha256"]
    manifest.write_text(json.dumps(fields))


def garbage_line(data: Path, manifest: Path) -> None:
    """A data file that matches its manifest but whose second line is not a message."""
    lines = data.read_bytes().split(b"\n")
    lines[1] = b'{"id": 7}'
    raw = b"\n".join(lines)
    fields = {"messages": raw.count(b"\n"), "bytes": len(raw)}
    manifest.write_text(json.dumps({**fields, "sha256": hashlib.sha256(raw).hexdigest()}))
    data.write_bytes(raw)


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (flip_a_byte, "sha256 is"),
        (truncate, "bytes, manifest says"),
        (drop_sha, "lacks messages, bytes or sha256"),
        (garbage_line, "line 2 is not a message"),
    ],
)
def test_a_corrupt_batch_is_quarantined_and_the_batches_around_it_are_delivered(
    tmp_path: Path, corrupt: Callable[[Path, Path], None], reason: str
) -> None:
    t = make(tmp_path)
    before, bad, after = messages(5, "a"), messages(5, "b"), messages(5, "c")
    publish(t, "orders", before, bad, after)
    d = tmp_path / "orders"
    name = batch_names(d)[1]
    corrupt(d / f"{name}.jsonl", d / f"{name}.manifest")

    got = drain(t, "orders", "billing")

    assert [x.message.id for x in got] == [m.id for m in before + after]
    q = d / ".quarantine"
    assert reason in (q / f"{name}.reason").read_text()
    assert "billing" in (q / f"{name}.reason").read_text()
    assert (q / f"{name}.jsonl").exists() and (q / f"{name}.manifest").exists()
    assert not (d / f"{name}.jsonl").exists() and not (d / f"{name}.manifest").exists()
    # another group neither gets it nor quarantines it again (nor loops on it)
    text = (q / f"{name}.reason").read_text()
    assert {x.message.id for x in drain(t, "orders", "audit")} == ids(before + after)
    assert (q / f"{name}.reason").read_text() == text


def test_a_data_file_without_manifest_waits_then_is_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = make(tmp_path, AMO)
    torn, good = messages(4, "torn"), messages(3, "good")
    publish(t, "orders", torn, good)
    d = tmp_path / "orders"
    name = batch_names(d)[0]
    (d / f"{name}.manifest").unlink()  # a producer killed mid-write: no manifest, half a file
    data = d / f"{name}.jsonl"
    data.write_bytes(data.read_bytes()[:50])

    assert ids(good) == {x.message.id for x in drain(t, "orders", "g1")}
    assert data.exists() and not (d / ".quarantine").exists()  # not ready yet: skipped

    monkeypatch.setattr(files, "ORPHAN_AFTER_S", 5.0)
    os.utime(data, (time.time() - 10, time.time() - 10))
    assert drain(t, "orders", "g1") == []
    assert not data.exists()
    assert "no manifest" in (d / ".quarantine" / f"{name}.reason").read_text()


def test_a_batch_is_delivered_only_once_its_manifest_exists(tmp_path: Path) -> None:
    t = make(tmp_path)
    sent = messages(3, "late")
    publish(t, "orders", sent)
    d = tmp_path / "orders"
    name = batch_names(d)[0]
    manifest = (d / f"{name}.manifest").read_bytes()
    (d / f"{name}.manifest").unlink()
    assert drain(t, "orders", "g", quiet_s=0.3) == []
    (d / f"{name}.manifest").write_bytes(manifest)
    assert [x.message.id for x in drain(t, "orders", "g")] == [m.id for m in sent]


CONSUMER = """
import sys, time
from msglab.brokers import open_transport
from msglab.config import ClientConfig

sub = open_transport("files", ClientConfig(url=sys.argv[1])).subscriber("g")
for n, d in enumerate(sub.subscribe(sys.argv[2]), 1):
    if n <= 3:
        d.ack()
    if n == 5:  # the 4th and 5th are handled, never acked; the rest never handed out
        print("holding", flush=True)
        time.sleep(600)
"""


def test_a_consumer_killed_mid_batch_releases_its_claim_to_the_group(tmp_path: Path) -> None:
    t = make(tmp_path)
    sent = messages(10, "m")
    publish(t, "orders", sent)
    worker = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, f"file://{tmp_path}", "orders"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "holding"
        assert drain(t, "orders", "g", quiet_s=0.5) == [], "a claimed batch went to a second member"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    got = drain(t, "orders", "g")

    assert [x.message.id for x in got] == [m.id for m in sent[3:]], "acked ones came again"
    assert [(x.redelivered, x.attempt) for x in got[:2]] == [(True, 2)] * 2
    assert [(x.redelivered, x.attempt) for x in got[2:]] == [(False, 1)] * 5
    first = batch_names(tmp_path / "orders")[0]
    assert (tmp_path / "orders" / ".groups" / "g" / f"{first}.done").exists(), "no progress kept"


@pytest.fixture
def fs_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[object]]]:
    calls: dict[str, list[object]] = {"fsync": [], "rename": []}
    fsync, rename = os.fsync, os.rename

    def counted_fsync(fd: int) -> None:
        calls["fsync"].append(fd)
        fsync(fd)

    def counted_rename(src: str, dst: str) -> None:
        calls["rename"].append((Path(src).name, Path(dst).name))
        rename(src, dst)

    monkeypatch.setattr(os, "fsync", counted_fsync)
    monkeypatch.setattr(os, "rename", counted_rename)
    yield calls


def test_at_least_once_publish_writes_temp_names_fsyncs_and_renames_manifest_last(
    tmp_path: Path, fs_calls: dict[str, list[object]]
) -> None:
    publish(make(tmp_path, ALO), "orders", messages(3, "a"), messages(2, "b"))
    d = tmp_path / "orders"
    names = batch_names(d)
    assert sorted(p.name for p in d.iterdir() if p.is_file()) == sorted(
        f"{n}{ext}" for n in names for ext in (".jsonl", ".manifest")
    )
    assert not [p for p in d.rglob("*") if "tmp" in p.name]
    assert fs_calls["rename"] == [
        (f".{n}{ext}.tmp", f"{n}{ext}") for n in names for ext in (".jsonl", ".manifest")
    ]
    assert len(fs_calls["fsync"]) >= 2 * 4  # per batch: data, manifest, the directory twice


def test_at_most_once_publish_writes_final_names_without_fsync(
    tmp_path: Path, fs_calls: dict[str, list[object]]
) -> None:
    publish(make(tmp_path, AMO), "orders", messages(3, "a"), messages(2, "b"))
    d = tmp_path / "orders"
    assert len(batch_names(d)) == 2
    assert len([p for p in d.iterdir() if p.is_file()]) == 4
    assert not [p for p in d.rglob("*") if "tmp" in p.name]
    assert fs_calls == {"fsync": [], "rename": []}


def test_batches_sort_in_publish_order(tmp_path: Path) -> None:
    t = make(tmp_path)
    sent = [messages(1, f"p{i}-") for i in range(30)]
    publish(t, "orders", *sent)
    assert [x.message.id for x in drain(t, "orders", "g")] == [b[0].id for b in sent]


def test_two_groups_each_get_everything_and_keep_their_own_state(tmp_path: Path) -> None:
    t = make(tmp_path)
    sent = [messages(4, "a"), messages(4, "b"), messages(4, "c")]
    publish(t, "orders", *sent)
    everything = [m.id for b in sent for m in b]
    for group in ("billing", "audit"):
        assert [x.message.id for x in drain(t, "orders", group)] == everything
        state = tmp_path / "orders" / ".groups" / group
        assert len(list(state.glob("*.done"))) == 3
        assert not list(state.glob("*.lock"))


def test_native_batches_split_a_long_file_and_an_ack_is_one_progress_write(
    tmp_path: Path,
) -> None:
    t = make(tmp_path)
    sent = messages(120, "m")
    publish(t, "orders", sent)
    sub = t.subscriber("g")
    guard = threading.Timer(30, sub.close)
    guard.start()
    sizes: list[int] = []
    got: list[tuple[str, int]] = []
    for batch in sub.batches("orders", max_messages=50):
        sizes.append(len(batch))
        got += zip([m.id for m in batch.messages], batch.attempts, strict=True)
        if len(sizes) == 1:
            batch.nack(requeue=True)
            continue
        batch.ack()
        if sum(sizes) == 170:
            break
    sub.close()
    guard.cancel()
    assert sizes[:2] == [50, 50] and max(sizes) == 50
    first, again = got[:120], got[120:]  # a nacked batch comes after the rest of the file
    assert first == [(m.id, 1) for m in sent]
    assert again == [(m.id, 2) for m in sent[:50]]
    name = batch_names(tmp_path / "orders")[0]
    state = tmp_path / "orders" / ".groups" / "g"
    kinds = [line.split()[0] for line in (state / f"{name}.progress").read_text().splitlines()]
    assert kinds == ["h", "h", "a", "h", "a", "h", "a"]  # one line per batch handed out / acked
    assert (state / f"{name}.done").exists()


def test_at_most_once_marks_a_batch_done_before_handing_it_out(tmp_path: Path) -> None:
    t = make(tmp_path, AMO)
    sent = messages(10, "m")
    publish(t, "orders", sent)
    sub = t.subscriber("g")
    first = next(iter(sub.subscribe("orders")))
    state = tmp_path / "orders" / ".groups" / "g"
    assert list(state.glob("*.done")), "handed out before marked done"
    first.nack(requeue=True)  # ignored at-most-once
    sub.close()
    assert drain(t, "orders", "g") == [], "at-most-once delivered a message twice"


def test_close_from_another_thread_ends_the_iteration(tmp_path: Path) -> None:
    sub = make(tmp_path).subscriber("g")
    deliveries = sub.subscribe("orders")
    thread = threading.Thread(target=lambda: list(deliveries), daemon=True)
    thread.start()
    time.sleep(0.3)
    began = time.monotonic()
    sub.close()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - began < 0.5


@pytest.mark.parametrize("under", ["a-file", "a-file/below"])
def test_an_unusable_root_is_a_connect_error_naming_the_path(tmp_path: Path, under: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    root = tmp_path / under
    t = make(root)
    with pytest.raises(ConnectError, match=str(root)):
        t.publisher()
    with pytest.raises(ConnectError, match=str(root)):
        t.subscriber("g").subscribe("orders")


def test_a_url_that_is_not_an_absolute_file_url_is_a_config_error() -> None:
    for url in ("file://relative/dir", "memory://x", "file://host/dir"):
        with pytest.raises(ConfigError, match="file:///"):
            open_transport("files", ClientConfig(url=url)).publisher()


def test_delete_topic_removes_its_directory(tmp_path: Path) -> None:
    t = make(tmp_path)
    publish(t, "orders", messages(2, "m"))
    drain(t, "orders", "g")
    assert isinstance(t, TopicAdmin)
    t.delete_topic("orders", ["g"])
    assert not (tmp_path / "orders").exists()
    t.delete_topic("orders", ["g"])  # missing: ignored
