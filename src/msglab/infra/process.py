"""Operating-system facts about server processes: alive or not, killing, who holds a port.

On these machines a SIGKILLed server that is nobody's child can stay a zombie for a while
(PID 1 reaps slowly), and ``kill -0`` succeeds on a zombie: ``is_alive`` reads the state
from ``/proc`` instead, and reaps the process when it is our own child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a child of this process (else do nothing)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int | None) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    if not pid or pid <= 0:
        return False
    reap(pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    for line in status.splitlines():
        if line.startswith("State:"):
            return "Z" not in line.split()[1]
    return True


def alive_pid(pid_file: Path) -> int | None:
    """The PID written in ``pid_file`` if that process is alive (not a zombie), else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_alive(pid) else None


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` is dead or a zombie; True if it went within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def parent(pid: int) -> int | None:
    """The PID of ``pid``'s parent (None once ``pid`` is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` in the process tree (children first)."""
    parents: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(proc.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_hard(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait until the kernel has it gone; raises OSError if it survives."""
    send(pid, signal.SIGKILL)
    if not wait_gone(pid, timeout_s):
        raise OSError(f"process {pid} ({process_name(pid)}) survived SIGKILL for {timeout_s}s")


def crash(pid: int, orphan_grace_s: float = 15.0) -> None:
    """SIGKILL ``pid`` as a crash does, then wait for its children to notice and exit.

    Only the server process is killed; its helpers (PostgreSQL backends, Erlang's
    erl_child_setup) exit by themselves when they see it gone, as after a real crash.
    Those still there after ``orphan_grace_s`` are SIGKILLed so that a restart can proceed.
    """
    children = descendants(pid)
    kill_hard(pid)
    for child in children:
        if not wait_gone(child, orphan_grace_s):
            kill_hard(child)


def stop(pid: int, sig: signal.Signals, timeout_s: float) -> bool:
    """Send ``sig`` and wait up to ``timeout_s``; SIGKILL if it is still there. True if graceful."""
    send(pid, sig)
    if wait_gone(pid, timeout_s):
        return True
    kill_hard(pid)
    return False


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server detached from this process (own session, no stdin), output to ``log_path``.

    The server outlives the command that started it; ``user`` runs it as that user (root only);
    ``group``, with that group id (a cluster node's identity for ``netrules``; root only).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            user=user,
            group=group if group is not None else user,
            extra_groups=[] if user is not None else None,
        )


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _address(hex_address: str) -> str:
    """An address of ``/proc/net/tcp{,6}`` ("0100007F", 32 hex digits for IPv6) as text; an
    IPv4-mapped IPv6 address (a JVM's listener) as its IPv4 address, a wildcard as ``*``."""
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if not any(raw):
        return "*"
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        raw = raw[12:]
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _listening_inodes(port: int, host: str | None = None) -> set[str]:
    """The socket inodes listening on TCP ``port``: on any address when ``host`` is None, else on
    ``host`` or on every address (a wildcard listener takes the port on ``host`` too)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            address, _, hex_port = local.rpartition(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            if host is None or _address(address) in (host, "*"):
                inodes.add(inode)
    return inodes


def port_holder(port: int, host: str | None = None) -> str | None:
    """Describe the process listening on TCP ``port`` ("pid 123 (redis-server)"), if found
    (``host``: on that address or every address, as ``port_in_use``)."""
    inodes = _listening_inodes(port, host)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return f"pid {proc.name} ({process_name(int(proc.name))})"
    return "an unknown process"


def port_in_use(port: int, host: str | None = None) -> bool:
    """True if something listens on TCP ``port``: on any address when ``host`` is None, else
    where a server binding ``host:port`` would collide (``host`` itself or every address)."""
    if _listening_inodes(port, host):
        return True
    return port_is_open(host or "127.0.0.1", port, 0.2)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def holders(path: Path) -> list[int]:
    """Every process (but this one) with a file, its working folder or a mapping under
    ``path``."""
    prefix = str(path.resolve()) + "/"
    root = prefix[:-1]
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            links = [os.readlink(proc / "cwd")]
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    links.append(os.readlink(fd))
            maps = (proc / "maps").read_text()
            if any(link == root or link.startswith(prefix) for link in links) or prefix in maps:
                found.append(int(proc.name))
    return found
