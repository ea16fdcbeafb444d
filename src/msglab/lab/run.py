"""``msglab run``: one scenario on the real servers, from set-up to ``report.json`` and
``report.html``.

Flow: servers up -> run folder -> consumers (separate processes) subscribed -> producers
(separate processes) -> the fault, at its moment, recorded -> producers done -> drain until
every confirmed message arrived and all is quiet (bounded) -> consumers stopped -> effects
dumped -> checker -> report.json -> report.html (its picture). Ctrl-C stops every worker and
keeps the evidence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import cached_property, partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from msglab.app.records import dlq_topic, retry_group, retry_topic
from msglab.app.runner import DLQ_GROUP
from msglab.brokers import open_transport
from msglab.config import ClientConfig
from msglab.db import engine
from msglab.errors import InfraError, MsglabError
from msglab.infra import backend_for, toxiproxy
from msglab.infra.toxics import ToxiproxyClient
from msglab.lab import effects
from msglab.lab.checker import check, promise
from msglab.lab.evidence import (
    DEAD_LETTERS,
    DELIVERIES,
    EFFECTS,
    FAULTS,
    ORDERS,
    OUTPUT,
    QUARANTINED,
    REPLAYS,
    SENDS,
    STORED,
    Ledger,
    ReadStats,
    Tail,
    confirmed_ids,
    first_sendings,
    ids,
    message_id_prefix,
    read,
)
from msglab.lab.faults import Context, FaultLog, when
from msglab.lab.faults.base import BROKER, DATABASE
from msglab.lab.html import run_page
from msglab.lab.knobs import Dials
from msglab.lab.scenario import Scenario
from msglab.lab.servers import Endpoint, Servers, plan
from msglab.lab.workers.spec import (
    GROUP,
    OUTPUT_GROUP,
    OUTPUT_KEPT_GROUP,
    POISON_ATTEMPTS,
    REPLAY_GROUP,
    STORAGE_GROUP,
    WorkerSpec,
    output_topic_of,
    reply_topic_of,
    topic_of,
)
from msglab.ports import TopicAdmin
from msglab.profiles import DeliveryProfile
from msglab.settings import Settings

Progress = Callable[[str, float], None]  # (stage, fraction of messages sent)


class Run:
    def __init__(
        self,
        scenario: Scenario,
        settings: Settings,
        runs_dir: Path,
        progress: Progress | None = None,
    ) -> None:
        self.s = scenario
        self.settings = settings
        self.dir = runs_dir / scenario.run_id
        self.progress = progress or (lambda stage, done: None)
        self.infra = backend_for(settings)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.interrupted = False
        self.proxies: ToxiproxyClient | None = None  # network faults: Toxiproxy's API
        self._sends = Tail(self.dir, SENDS)
        self._deliveries = Tail(self.dir, DELIVERIES)
        self._sent = 0  # messages attempted (first tries)
        self._confirmed: set[bytes] = set()
        self._delivered: set[bytes] = set()
        self._delivery_lines = 0
        self._poison_deliveries = 0

    # -- workers ---------------------------------------------------------------------------

    def _spec(self, role: str, name: str, **extra: Any) -> WorkerSpec:
        """The spec of worker ``name``, with what the fault asks of it (``die_after_*``) and,
        for a consumer of a slow-consumer run, ``slow_ms``."""
        asks: dict[str, Any] = dict(self.s.fault_kind.worker_asks(self.s, role, name))
        if role == "consumer" and self.s.workload_kind.slow:
            asks["slow_ms"] = self.s.slow_ms
        if role == "consumer" and self.s.workload_kind.poison:
            asks["poison"] = (self.poison_id,)
        return WorkerSpec(
            role=role,
            name=name,
            run_id=self.s.run_id,
            run_dir=str(self.dir),
            transport=self.s.transport,
            url=self.url,
            profile=self.s.profile,
            pattern=self.s.pattern,
            db_url=self.db_url,
            keys=self.s.keys,
            size=self.s.size,
            batch=self.s.batch,
            seed=self.s.seed,
            replies=self.s.replies,
            client_sets=self.dials.clients,
            relay_ordering=self.s.relay_ordering,
            **asks,
            **extra,
        )

    def _start(self, spec: WorkerSpec) -> None:
        """Start a worker process. Its spec (with the servers' passwords) goes through its
        standard input: a command line is readable by every user of the machine (``ps``)."""
        log = open(self.dir / f"worker-{spec.name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "msglab.lab.workers", spec.role, spec.name, self.s.run_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(json.dumps(asdict(spec)).encode())
        self.workers[spec.name] = proc

    def _start_consumers(self, suffix: str = "") -> list[str]:
        names = [f"c{i}{suffix}" for i in range(self.s.consumers)]
        for name in names:
            self._start(self._spec("consumer", name))
        for name in names:
            self._wait_subscribed(name)
        return names

    def _wait_subscribed(self, name: str) -> None:
        ready = self.dir / f"ready-{name}"
        if not when(ready.exists, 60, partial(_exited, self.workers[name])):
            raise InfraError(
                f"consumer {name} did not subscribe; see {self.dir / f'worker-{name}.log'}"
            )

    def _stop(self, names: list[str], grace_s: float = 10.0) -> None:
        for name in names:
            proc = self.workers[name]
            if proc.poll() is None:
                proc.terminate()
        for name in names:
            try:
                self.workers[name].wait(grace_s)
            except subprocess.TimeoutExpired:
                self.workers[name].kill()
                self.workers[name].wait()

    @cached_property
    def poison_id(self) -> str:
        """The poison workload's message: a third into producer p0's share."""
        share, extra = divmod(self.s.messages, self.s.producers)
        return f"{message_id_prefix(self.s.run_id, 'p0')}{(share + bool(extra)) // 3}"

    def _read_quarantine(self) -> None:
        """The files transport: each batch the run's topic's quarantine holds once the
        consumers stopped, a line per batch (``batch``, ``reason``, ``ids``) in
        ``quarantined-orchestrator.jsonl``; ``ids``: those its lines still hold, and those the
        corrupt fault recorded for it before the damage."""
        from msglab.exchange.folder import quarantined_batches

        damaged = {
            r["target"]: r.get("ids", [])
            for r in read(self.dir, FAULTS)
            if r["action"] == "corrupt"
        }
        tdir = Path(unquote(urlsplit(self.url).path)) / topic_of(self.s.run_id)
        ledger = Ledger(self.dir, QUARANTINED, "orchestrator", sync=True)
        try:
            for q, ids in quarantined_batches(tdir):
                known = sorted({*ids, *damaged.get(q.batch, [])})
                ledger.write(
                    {"ts": time.time(), "batch": q.batch, "reason": q.reason, "ids": known}
                )
        finally:
            ledger.close()

    def _read_dead_letters(self) -> None:
        """The poison workload: what ``<topic>.dlq`` holds once the consumers stopped, a line
        per dead letter (id, error, attempts) in ``dead-letters-orchestrator.jsonl``."""
        from msglab.app.dlq import DeadLetterBox

        config = ClientConfig(url=self.url, profile=DeliveryProfile.parse(self.s.profile))
        box = DeadLetterBox(
            lambda c: open_transport(self.s.transport, c), config, topic_of(self.s.run_id)
        )
        ledger = Ledger(self.dir, DEAD_LETTERS, "orchestrator", sync=True)
        try:
            for entry in box.list():
                failure = entry.record.failure if entry.record else None
                ledger.write(
                    {
                        "ts": time.time(),
                        "id": entry.id,
                        "error_type": failure.error_type if failure else None,
                        "error": failure.error if failure else "no msglab- headers",
                        "attempts": failure.attempt if failure else None,
                    }
                )
        finally:
            ledger.close()

    def _start_producers(self) -> list[str]:
        names = []
        share, extra = divmod(self.s.messages, self.s.producers)
        first = 0
        for i in range(self.s.producers):
            count = share + (1 if i < extra else 0)
            name = f"p{i}"
            rate = self.s.rate / self.s.producers
            self._start(self._spec("producer", name, first=first, count=count, rate=rate))
            names.append(name)
            first += count
        return names

    # -- evidence while running ------------------------------------------------------------

    def _follow(self) -> None:
        """Read what the workers appended since the last call (each byte once), picking the
        fields out of the lines without parsing them as JSON (that would take most of a core
        at lab speed; the checker parses every line)."""
        sends = self._sends.new()
        self._sent += first_sendings(sends)
        self._confirmed.update(confirmed_ids(sends))
        deliveries = self._deliveries.new()
        self._delivery_lines += deliveries.count(b"\n")
        self._delivered.update(ids(deliveries))
        if self.s.workload_kind.poison:  # each delivery line holds its id once
            self._poison_deliveries += deliveries.count(self.poison_id.encode())

    # -- the run ---------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        self.servers, self.dials = preflight(self.s, self.settings)
        servers = self.servers
        self.dir.mkdir(parents=True, exist_ok=False)  # two runs never share a folder
        self.infra.up(servers.services)
        fault = self.s.fault_kind
        # power-cut: the server (or the files folder) onto the lazy filesystem
        prepared = fault.prepare(self.infra, self.s, servers.broker_url)
        try:
            self.dials.apply()
            self.settings_in_force = self.dials.read_back(servers.services)
            return self._execute(servers)
        finally:
            self.dials.restore()
            if prepared:
                fault.finish(self.infra, self.s, servers.broker_url)

    def _execute(self, servers: Servers) -> dict[str, Any]:
        if self.s.through_proxy:
            toxiproxy.point_proxies(self.settings)
            self.proxies = toxiproxy.client(self.settings)
        self.url, self.db_url = servers.broker_url, servers.database.url
        db = engine(self.db_url)
        effects.create(db)
        if servers.connect:
            self._start_connector(servers.connect)
        run_json = {"scenario": self.s.to_json(), "servers": servers.to_json()}
        (self.dir / "run.json").write_text(
            json.dumps({**run_json, "started": time.time()}, indent=2) + "\n"
        )
        log = FaultLog(self.dir)
        began = time.monotonic()
        try:
            self._drive(log)
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            for proc in self.workers.values():
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            log.close()
            if self.s.uses_connect:  # also when the run failed: a stale slot holds WAL
                self._stop_connector()
        effects.dump(db, self.s.run_id, self.dir / f"{EFFECTS}-db.jsonl")
        if self.s.fault_kind.storage(self.s) == DATABASE:
            effects.dump_orders(db, self.s.run_id, self.dir / f"{STORED}-db.jsonl")
        if self.s.commits_first:  # the business rows: phantom (delivered, never committed)
            effects.dump_orders(db, self.s.run_id, self.dir / f"{ORDERS}-db.jsonl")
        if self.s.pattern in ("outbox", "cdc"):
            effects.discard_outbox(db, topic_of(self.s.run_id))
        self.settings_in_force |= self.dials.read_queues(topic_of(self.s.run_id))
        report = self.report(time.monotonic() - began)
        report["broker_cleanup"] = self._clean_broker()
        (self.dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.dir / "report.html").write_text(run_page(self.dir))
        if self.interrupted:
            raise KeyboardInterrupt
        return report

    def _drive(self, log: FaultLog) -> None:
        s, fault, workload = self.s, self.s.fault_kind, self.s.workload_kind
        consumers: list[str] = []
        stored_by_broker = fault.storage(s) == BROKER
        if stored_by_broker:  # first: the consumers' queues keep their age at the fault
            self._storage_group()
        if workload.idle_consumers:
            self._stop(self._start_consumers(suffix="-setup"))  # the group exists, idle
            log.record(s.workload, "stop", "consumers", note="every consumer is down")
        else:
            consumers = self._start_consumers()
        if workload.second_group == "alongside":
            self._start_second_group(log)
        if s.exactly_once:  # what is delivered: the pipeline's committed copies
            self._start(self._spec("output", "o0"))
            self._wait_subscribed("o0")
            consumers.append("o0")
        if s.pattern == "outbox":
            for name in self._relays:
                self._start(self._spec("relay", name))
        time.sleep(s.warmup_s)
        self.progress("publishing", 0.0)
        producers = self._start_producers()
        ctx = Context(
            s,
            self.infra,
            log,
            url=self.url,
            workers=self.workers,
            producers=producers,
            proxies=self.proxies,
            after_restart=self.dials.reapply,
        )
        fault_pending = fault.fired_by_orchestrator(s)
        limit = time.monotonic() + (s.messages / s.rate if s.rate else 0) + 300
        while any(self.workers[p].poll() is None for p in producers):
            if time.monotonic() > limit:
                raise InfraError("producers did not finish in time; see the worker logs")
            self._follow()
            sent = self._sent
            self.progress("publishing", min(1.0, sent / s.messages))
            if fault_pending and sent >= s.fault_at:
                fault_pending = False
                fault.hold(ctx)
            consumers += self._replace_killed()
            time.sleep(0.05)
        if fault_pending:  # the producers finished before the trigger: fire it now
            fault.hold(ctx)
        if workload.idle_consumers:
            log.record(s.workload, "start", "consumers")
            consumers = self._start_consumers()
        self.progress("draining", 1.0)
        self._drain(lambda: consumers.extend(self._replace_killed()))
        relays = (*self._relays, "relay-r")
        self._stop([w for w in (*consumers, *relays) if w in self.workers])
        if workload.poison:
            self._read_dead_letters()
        if s.transport == "files":
            self._read_quarantine()
        if workload.second_group == "after":
            self._start_second_group(log)
        if workload.second_group:
            self._follow_second_group()
        if stored_by_broker:
            self._read_storage()
        if s.exactly_once:  # every committed copy, read once
            self._start(self._spec("output-kept", "o1"))
            self._wait_subscribed("o1")
            self._read_until_quiet("o1", OUTPUT)

    def _start_second_group(self, log: FaultLog) -> None:
        """A consumer of a group that did not exist before (``REPLAY_GROUP``) subscribes."""
        log.record(self.s.workload, "start", "r0", group=REPLAY_GROUP)
        self._start(self._spec("replayer", "r0"))
        self._wait_subscribed("r0")

    def _follow_second_group(self) -> None:
        """The second group's consumer reads (see ``_read_until_quiet``), then stops."""
        self._read_until_quiet("r0", REPLAYS)

    def _read_until_quiet(self, name: str, kind: str) -> None:
        """Let worker ``name`` read (its ``kind`` lines) until it has every confirmed message
        and 1 s passed quietly, or 5 s passed without any; then stop it."""
        tail, read = Tail(self.dir, kind), set[bytes]()

        def count() -> int:
            read.update(ids(tail.new()))
            return len(read)

        self._until_quiet(count, lambda: self._confirmed <= read, quiet_s=5.0)
        self._stop([name])

    def _storage_group(self) -> None:
        """A durability fault: ``STORAGE_GROUP`` subscribes before the first send and reads
        nothing until the run is over (Kafka and Redis Streams: a group at the start of the
        topic; RabbitMQ: a queue bound from the start), so that it then reads what the broker
        kept, whatever the consumers saw before the fault (``lost_from_storage``)."""
        self._start(self._spec("storage", "s0-setup"))
        self._wait_subscribed("s0-setup")
        self._stop(["s0-setup"])

    def _read_storage(self) -> None:
        self._start(self._spec("storage", "s0"))
        self._wait_subscribed("s0")
        self._read_until_quiet("s0", STORED)

    def _start_connector(self, connect: Endpoint) -> None:
        """cdc: a Debezium connector for this run's outbox rows; table-cdc: for the changes of
        the business table ``lab_orders``, routed to the run's topic. Running before the first
        commit (rows committed before it are not published: no snapshot)."""
        from msglab.cdc import ConnectClient, start_outbox_connector  # httpx: only for cdc

        self.connector = f"msglab-lab-{self.s.run_id}"
        topic, secrets = topic_of(self.s.run_id), self.servers.connect_secrets
        with ConnectClient(connect.url) as client:
            if self.s.pattern == "table-cdc":
                from msglab.cdc.table import start_table_connector

                # keyed by run_id, not by the primary key (message_id, which would spread one
                # business key's rows over the topic's partitions): one partition, commit order
                table = f"public.{effects.ORDERS.name}"
                key = {"message.key.columns": f"{table}:run_id"}
                start_table_connector(
                    client, self.connector, self.db_url, table, topic=topic, extra=key,
                    secrets_dir=secrets,
                )  # fmt: skip
                return
            start_outbox_connector(
                client, self.connector, self.db_url, topics=[topic], secrets_dir=secrets
            )

    def _stop_connector(self) -> None:
        """Delete the run's connector, its replication slot (a stale slot holds WAL) and its
        password file."""
        from msglab.cdc import ConnectClient, stop_outbox_connector

        assert self.servers.connect is not None  # a cdc or table-cdc run's
        with ConnectClient(self.servers.connect.url) as client:
            secrets = self.servers.connect_secrets
            stop_outbox_connector(client, self.connector, secrets_dir=secrets)

    @property
    def _relays(self) -> list[str]:
        """The outbox's relay workers: ``relay`` (the one relay-kill kills), ``relay-1``..."""
        return ["relay", *(f"relay-{i}" for i in range(1, self.s.relays))]

    def _replace_killed(self) -> list[str]:
        """A worker the fault killed (consumer-kill: c0 after an effect, before the ack;
        relay-kill: the relay midway through a pass; a power cut of the files folder: every
        consumer) is replaced by a fresh one once dead. The consumers started here."""
        started = []
        for name, role in self.s.fault_kind.replaced(self.s):
            if f"{name}-r" in self.workers or self.workers[name].poll() is None:
                continue
            self._start(self._spec(role, f"{name}-r"))
            if role == "consumer":
                started.append(f"{name}-r")
        return started

    def _drain(self, tick: Callable[[], None]) -> None:
        """Until every confirmed message arrived and 1 s passed quietly, or nothing arrived
        for ``Scenario.quiet_s``."""

        def deliveries() -> int:
            tick()
            self._follow()
            return self._delivery_lines

        def done() -> bool:  # and the poison's last attempt made (its dead letter follows)
            poisoned = not self.s.workload_kind.poison or (
                self._poison_deliveries >= POISON_ATTEMPTS
            )
            return poisoned and self._confirmed <= self._delivered

        self._until_quiet(deliveries, done, self.s.quiet_s)

    def _until_quiet(
        self, count: Callable[[], int], done: Callable[[], bool], quiet_s: float
    ) -> None:
        """Poll ``count()`` every 0.25 s until it stayed the same for 1 s with ``done()``, or
        for ``quiet_s`` (bounded by ``drain_max_s``)."""
        end = time.monotonic() + self.s.drain_max_s
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < end:
            now_count = count()
            if now_count != last_count:
                last_count, last_change = now_count, time.monotonic()
            quiet = time.monotonic() - last_change
            if quiet >= quiet_s or (quiet >= 1.0 and done()):
                return
            time.sleep(0.25)

    def _clean_broker(self) -> str:
        """Delete the run's topic and its group's queue: a broker that keeps every run's
        queues restarts ever slower (RabbitMQ: 4 s -> 15 s after a few hundred quorum
        queues). The evidence is in the run folder; a failed cleanup is reported, not fatal."""
        config = ClientConfig(url=self.url, profile=DeliveryProfile.parse(self.s.profile))
        transport = open_transport(self.s.transport, config)
        if not isinstance(transport, TopicAdmin):
            return "nothing stored"
        try:
            transport.delete_topic(topic_of(self.s.run_id), [GROUP, REPLAY_GROUP, STORAGE_GROUP])
            if self.s.replies:
                transport.delete_topic(reply_topic_of(self.s.run_id), [REPLAY_GROUP])
            if self.s.exactly_once:
                transport.delete_topic(
                    output_topic_of(self.s.run_id), [OUTPUT_GROUP, OUTPUT_KEPT_GROUP]
                )
            if self.s.workload_kind.poison:  # the runtime's retry flow and dead letters
                topic = topic_of(self.s.run_id)
                transport.delete_topic(retry_topic(topic), [retry_group(GROUP)])
                transport.delete_topic(dlq_topic(topic), [DLQ_GROUP])
        except MsglabError as exc:
            return f"failed: {exc}"
        return "deleted"

    # -- the report ------------------------------------------------------------------------

    def report(self, seconds: float) -> dict[str, Any]:
        stats = ReadStats()
        deliveries: Iterable[dict[str, Any]] = read(self.dir, DELIVERIES, stats)
        if self.s.workload_kind.poison:  # read once: the checker and the poison's count
            deliveries = list(deliveries)
        counts = check(
            read(self.dir, SENDS, stats),
            deliveries,
            read(self.dir, EFFECTS, stats),
            read(self.dir, REPLAYS, stats) if self.s.workload_kind.second_group else None,
            read(self.dir, STORED, stats) if self.s.fault_kind.storage(self.s) else None,
            read(self.dir, OUTPUT, stats) if self.s.exactly_once else None,
            read(self.dir, ORDERS, stats) if self.s.commits_first else None,
        )
        fault_records = list(read(self.dir, "faults"))
        report: dict[str, Any] = {
            "run_id": self.s.run_id,
            "transport": self.s.transport,
            "profile": self.s.profile,
            "fault": self.s.fault,
            "cluster": self.s.cluster,
            "partition": self.s.partition,
            "cut": self.s.cut,
            "relays": self.s.relays,
            "relay_ordering": self.s.relay_ordering,
            "workload": self.s.workload,
            "pattern": self.s.pattern,
            "sets": list(self.s.sets),
            "settings": self.settings_in_force,
            **{k: v for k, v in asdict(counts).items() if k != "lost_ids"},
            "promise": promise(self.s.profile, self.s.pattern),
            "verdict": counts.verdict(self.s.profile),
            "evidence_dir": str(self.dir.resolve()),
            "lost_ids": counts.lost_ids,
            "faults": fault_records,
            "simulated": self.s.fault_kind.simulated,
            "torn_lines": stats.torn_lines,
            "seconds": round(seconds, 2),
            "interrupted": self.interrupted,
            "worker_exits": {name: proc.returncode for name, proc in self.workers.items()},
            **(self._poison_report(deliveries) if self.s.workload_kind.poison else {}),
            **(self._quarantine_report() if self.s.transport == "files" else {}),
            "scenario": self.s.to_json(),
        }
        return report

    def _quarantine_report(self) -> dict[str, Any]:
        """The files transport: ``quarantined``, the distinct messages of the quarantined
        batches (counted in ``lost`` too: named, not silently lost), and each batch's reason."""
        batches = list(read(self.dir, QUARANTINED))
        return {
            "quarantined": len({i for b in batches for i in b["ids"]}),
            "quarantined_batches": [
                {"batch": b["batch"], "messages": len(b["ids"]), "reason": b["reason"]}
                for b in batches
            ],
        }

    def _poison_report(self, deliveries: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """The poison workload: its message, how often it was delivered, what the
        dead-letter place holds (``dead_lettered``, and the poison's record)."""
        letters = list(read(self.dir, DEAD_LETTERS))
        delivered = sum(1 for d in deliveries if d["id"] == self.poison_id)
        poison = [d for d in letters if d["id"] == self.poison_id]
        return {
            "poison": {
                "id": self.poison_id,
                "deliveries": delivered,
                "dead_lettered": bool(poison),
                **_dead_letter_fields(poison),
            },
            "dead_lettered": len(letters),
        }


def _dead_letter_fields(letters: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: letters[0][k] for k in ("error_type", "error", "attempts")} if letters else {}


def preflight(scenario: Scenario, settings: Settings) -> tuple[Servers, Dials]:
    """The servers ``scenario`` uses and its settings' dials; UsageError, before anything
    starts, for what they cannot take (a fault on a server msglab does not own, a setting of
    an external server)."""
    return plan(scenario, settings), Dials(settings, scenario)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def run(
    scenario: Scenario,
    settings: Settings | None = None,
    runs_dir: Path = Path("runs"),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Carry out ``scenario``; the report (also in ``<runs_dir>/<run_id>/report.json``, and
    drawn in ``report.html`` beside it)."""
    try:
        return Run(scenario, settings or Settings.from_env(), runs_dir, progress).execute()
    except MsglabError:
        raise
    except OSError as exc:
        raise InfraError(f"lab run {scenario.run_id} failed: {exc}") from exc
