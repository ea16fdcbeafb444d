"""PostgreSQL 15 as msglab's own cluster, ready for CDC (``wal_level=logical``).

``initdb`` and ``postgres`` refuse root: as root, msglab runs them as the ``postgres`` user
and makes the cluster folder theirs. SIGINT is the fast shutdown (SIGTERM waits for clients).
A replication role ``msglab_replicator`` and the database ``msglab`` are created on first start.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path

from msglab.errors import InstallError, ServerStartError, UsageError
from msglab.infra import probes, process
from msglab.infra.service import HOST, Launch, NativeService, apt_install

PG_MAJOR = "15"
USER = "postgres"
PASSWORD = "msglab"
DATABASE = "msglab"
REPLICATION_ROLE = "msglab_replicator"


def _check_name(key: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_.]*", key):
        raise UsageError(f"not a PostgreSQL setting name: {key!r}")


def _bin_dir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    preferred = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin/postgres")
    if preferred.exists():
        return preferred.parent
    return candidates[0].parent if candidates else None


class Postgres(NativeService):
    keeps_settings = True  # ALTER SYSTEM: postgresql.auto.conf
    name = "postgres"
    stop_signal = signal.SIGINT

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@{self.address}/{DATABASE}"

    @property
    def _run_as(self) -> str | None:
        return USER if os.geteuid() == 0 else None

    def _bin(self, tool: str) -> str:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise InstallError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        return str(bin_dir / tool)

    def is_installed(self) -> bool:
        return _bin_dir() is not None and shutil.which("psql") is not None

    def install(self) -> None:
        apt_install([f"postgresql-{PG_MAJOR}", f"postgresql-client-{PG_MAJOR}"])

    def _own(self, path: Path) -> None:
        if self._run_as is None:
            return
        entry = pwd.getpwnam(self._run_as)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)

    def _make_traversable(self) -> None:
        """The postgres user must reach the data dir: add o+x to parents that lack it."""
        if self._run_as is None:
            return
        for parent in self.root.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def prepare(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_traversable()
        socket_dir = self.root / "socket"
        socket_dir.mkdir(exist_ok=True)
        self._own(socket_dir)
        if (self.data_dir / "PG_VERSION").exists():
            self._remove_stale_lock()
            self._write_conf()
            return False
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        self._own(self.data_dir)
        self._own(pwfile)
        argv = [
            self._bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]
        if self._run_as:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerStartError("initdb failed", (result.stdout + result.stderr)[-3000:])
        with open(self.data_dir / "pg_hba.conf", "a") as hba:
            hba.write(f"host replication {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256\n")
            hba.write(f"host all {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256\n")
        self._write_conf()
        return True

    def _remove_stale_lock(self) -> None:
        """A killed postmaster may linger as a zombie, which PostgreSQL takes for alive:
        remove its lock files (data dir and socket) when the PID in them is dead or a zombie."""
        for lock in (
            self.data_dir / "postmaster.pid",
            self.root / "socket" / f".s.PGSQL.{self.port}.lock",
        ):
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not process.is_alive(pid):
                lock.unlink(missing_ok=True)

    def _write_conf(self) -> None:
        conf = self.data_dir / "msglab.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listen_addresses = '{HOST}'",
                    f"port = {self.port}",
                    f"unix_socket_directories = '{self.root / 'socket'}'",
                    "wal_level = logical",
                    "max_replication_slots = 10",
                    "max_wal_senders = 10",
                    "max_connections = 200",
                    "max_prepared_transactions = 50",  # two-phase commit (a lab probe)
                    "fsync = on",
                    "",
                ]
            )
        )
        self._own(conf)
        main = self.data_dir / "postgresql.conf"
        if "include_if_exists = 'msglab.conf'" not in main.read_text():
            with open(main, "a") as f:
                f.write("\ninclude_if_exists = 'msglab.conf'\n")

    def launch(self) -> Launch:
        return Launch([self._bin("postgres"), "-D", str(self.data_dir)], user=self._run_as)

    def ping(self, timeout_s: float) -> bool:
        return probes.postgres_ready(HOST, self.port, timeout_s)

    def after_ready(self, cold: bool) -> None:
        marker = self.root / "bootstrapped"
        if marker.exists():
            return
        self.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='{REPLICATION_ROLE}')"
            f" THEN CREATE ROLE {REPLICATION_ROLE} LOGIN REPLICATION PASSWORD '{PASSWORD}';"
            f" END IF; END$$;"
        )
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'")
        if exists.strip() != "1":
            self.psql(f"CREATE DATABASE {DATABASE}")
        marker.write_text("roles and database created\n")

    def setting(self, key: str) -> str:
        """``SHOW key`` (``synchronous_commit`` ...)."""
        _check_name(key)
        return self.psql(f"SHOW {key}").strip()

    def set_setting(self, key: str, value: str) -> None:
        """``ALTER SYSTEM SET key`` and a reload: every session from its next statement, and
        after restarts (``postgresql.auto.conf``); ``value`` ``default`` resets it."""
        _check_name(key)
        if value == "default":
            self.psql(f"ALTER SYSTEM RESET {key}")
        else:
            self.psql(f"ALTER SYSTEM SET {key} = '{value.replace(chr(39), '')}'")
        self.psql("SELECT pg_reload_conf()")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL statement as the superuser; its tuples-only output."""
        argv = [
            "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-c",
            sql,
        ]
        env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ServerStartError(f"psql failed: {sql}", result.stderr[-2000:])
        return result.stdout

    def version(self) -> str | None:
        try:
            out = subprocess.run([self._bin("postgres"), "-V"], capture_output=True, text=True)
        except (InstallError, OSError):
            return None
        match = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
        return match.group(1) if match else None
