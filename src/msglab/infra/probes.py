"""Protocol-level readiness probes, written against the wire protocols (no client drivers).

An open port is not readiness: Redis answers ``-LOADING`` while it replays its AOF, Kafka
accepts connections before it serves requests. Each probe speaks one request of the
server's own protocol and returns what it learned, or None / False when the server did
not answer as a ready server does.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from typing import BinaryIO, TypeAlias


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by peer")
        data += chunk
    return data


def kafka_api_versions(host: str, port: int, timeout_s: float) -> bool:
    """Send an ApiVersions v0 request; True when the broker answers with error code 0."""
    client_id = b"msglab-probe"
    correlation = 7
    body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            reply = _recv_exactly(sock, min(size, 6))
    except OSError:
        return False
    got_correlation, error_code = struct.unpack(">ih", reply[:6])
    return bool(got_correlation == correlation and error_code == 0)


def _kafka_call(host: str, port: int, timeout_s: float, request: bytes) -> bytes | None:
    """Send one framed Kafka request; the response (after its correlation id), or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            reply = _recv_exactly(sock, size)
    except OSError:
        return None
    (correlation,) = struct.unpack(">i", reply[:4])
    return reply[4:] if correlation == _CORRELATION else None


_CORRELATION = 7
_CLIENT_ID = b"msglab-probe"


def _request_header(api_key: int, version: int, flexible: bool) -> bytes:
    header = struct.pack(">hhih", api_key, version, _CORRELATION, len(_CLIENT_ID)) + _CLIENT_ID
    return header + (b"\x00" if flexible else b"")  # header v2: no tagged fields


class _Reader:
    """Reads a Kafka response body: big-endian numbers, compact (flexible) arrays and strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.at += self.uvarint()

    def compact_len(self) -> int:
        return max(self.uvarint() - 1, 0)  # N + 1; 0 is null

    def compact_string(self) -> str:
        n = self.compact_len()
        self.at += n
        return self.data[self.at - n : self.at].decode("utf-8", "replace")

    def string(self) -> str | None:
        (n,) = self.take(">h")
        if n < 0:
            return None
        self.at += n
        return self.data[self.at - n : self.at].decode("utf-8", "replace")


def kafka_brokers(host: str, port: int, timeout_s: float) -> dict[int, str] | None:
    """A Metadata v1 request for no topic: the brokers this broker knows as alive (in KRaft:
    registered and unfenced), id -> advertised ``host:port``; None when it did not answer."""
    found = kafka_metadata(host, port, timeout_s, [])
    return None if found is None else found.brokers


@dataclass(frozen=True)
class Metadata:
    """What a broker's Metadata (v1) answer says: the live brokers (id -> ``host:port``) and,
    per topic asked, each partition's leader id (-1: none) and in-sync replicas."""

    brokers: dict[int, str]
    leaders: dict[str, dict[int, int]]
    isr: dict[str, dict[int, tuple[int, ...]]]


def kafka_metadata(host: str, port: int, timeout_s: float, topics: list[str]) -> Metadata | None:
    """A Metadata v1 request for ``topics`` (none: brokers only); None when the broker did not
    answer. A topic it does not know is left out of ``leaders``."""
    body = _request_header(3, 1, flexible=False) + struct.pack(">i", len(topics))
    for topic in topics:
        encoded = topic.encode()
        body += struct.pack(">h", len(encoded)) + encoded
    reply = _kafka_call(host, port, timeout_s, body)
    if reply is None:
        return None
    try:
        read = _Reader(reply)
        brokers = {}
        for _ in range(read.take(">i")[0]):
            (node_id,) = read.take(">i")
            broker_host = read.string()
            (broker_port,) = read.take(">i")
            read.string()  # rack
            brokers[node_id] = f"{broker_host}:{broker_port}"
        read.take(">i")  # controller id
        leaders: dict[str, dict[int, int]] = {}
        isr: dict[str, dict[int, tuple[int, ...]]] = {}
        for _ in range(read.take(">i")[0]):
            (topic_error,) = read.take(">h")
            name = read.string() or ""
            read.take(">?")  # is_internal
            partitions, in_sync = {}, {}
            for _ in range(read.take(">i")[0]):
                _error, index, leader = read.take(">hii")
                read.take(f">{read.take('>i')[0]}i")  # replicas
                (n_isr,) = read.take(">i")
                in_sync[index] = tuple(read.take(f">{n_isr}i"))
                partitions[index] = leader
            if not topic_error:
                leaders[name], isr[name] = partitions, in_sync
    except (struct.error, IndexError):
        return None
    return Metadata(brokers, leaders, isr)


@dataclass(frozen=True)
class Quorum:
    """A KRaft controller quorum as its leader describes it (DescribeQuorum): the leader's node
    id and epoch, the voters' and the observers' (brokers only) ids."""

    leader: int
    epoch: int
    voters: tuple[int, ...]
    observers: tuple[int, ...]


_METADATA_TOPIC = b"__cluster_metadata"


def kafka_quorum(host: str, port: int, timeout_s: float) -> Quorum | None:
    """Ask a KRaft node's listener (a controller's, or a broker's, which forwards it to the
    active controller) to DescribeQuorum (v0). The quorum, or None when it did not answer or is
    a controller that is not the leader (it answers NOT_LEADER_OR_FOLLOWER)."""
    topic = bytes([len(_METADATA_TOPIC) + 1]) + _METADATA_TOPIC
    # topics: [{name, partitions: [{index 0}]}], each struct and the body ending in no tags
    body = _request_header(55, 0, flexible=True) + b"\x02" + topic + b"\x02"
    body += struct.pack(">i", 0) + b"\x00" + b"\x00" + b"\x00"
    reply = _kafka_call(host, port, timeout_s, body)
    if reply is None:
        return None
    try:
        read = _Reader(reply)
        read.skip_tags()  # response header v1
        (error,) = read.take(">h")
        if error or read.compact_len() != 1:
            return None
        read.compact_string()
        if read.compact_len() != 1:
            return None
        _index, error, leader, epoch, _high_watermark = read.take(">ihiiq")
        if error or leader < 0:
            return None
        replicas = []
        for _ in range(2):  # current voters, then observers: [{id, log end offset}]
            ids = []
            for _ in range(read.compact_len()):
                ids.append(read.take(">iq")[0])
                read.skip_tags()
            replicas.append(tuple(ids))
    except (struct.error, IndexError):
        return None
    return Quorum(leader, epoch, replicas[0], replicas[1])


def _compact(text: str) -> bytes:
    encoded = text.encode()
    return _uvarint(len(encoded) + 1) + encoded


def _uvarint(value: int) -> bytes:
    out = b""
    while value > 0x7F:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def kafka_features(host: str, port: int, timeout_s: float) -> dict[str, int] | None:
    """The cluster's finalized feature levels (``{"eligible.leader.replicas.version": 1,
    "metadata.version": 27, ...}``) as a broker lists them in its ApiVersions (v3) answer; None
    when it did not answer."""
    body = _request_header(18, 3, flexible=True) + _compact("msglab") + _compact("1") + b"\x00"
    reply = _kafka_call(host, port, timeout_s, body)
    if reply is None:
        return None
    try:
        read = _Reader(reply)  # ApiVersions answers with header v0 (no tags), whatever asked
        (error,) = read.take(">h")
        if error:
            return None
        for _ in range(read.compact_len()):
            read.take(">hhh")
            read.skip_tags()
        read.take(">i")  # throttle time
        finalized: dict[str, int] = {}
        for _ in range(read.uvarint()):  # tagged fields; tag 2: the finalized features
            tag, size = read.uvarint(), read.uvarint()
            end = read.at + size
            if tag == 2:
                for _ in range(read.compact_len()):
                    name = read.compact_string()
                    (level, _min_level) = read.take(">hh")
                    read.skip_tags()
                    finalized[name] = level
            read.at = end
    except (struct.error, IndexError):
        return None
    return finalized


UPGRADE, SAFE_DOWNGRADE = 1, 2  # UpdateFeatures' upgrade types


def kafka_update_feature(host: str, port: int, timeout_s: float, feature: str, level: int) -> str:
    """Ask the cluster (through the broker at host:port, which forwards it to the active
    controller) to finalize ``feature`` at ``level`` (UpdateFeatures v1): an upgrade, or a safe
    downgrade to a lower level. ``""`` when done, else why not (the controller's error)."""
    current = kafka_features(host, port, timeout_s)
    if current is None:
        return f"the broker at {host}:{port} did not answer"
    kind = SAFE_DOWNGRADE if level < current.get(feature, 0) else UPGRADE
    update = _compact(feature) + struct.pack(">hb", level, kind) + b"\x00"
    body = _request_header(57, 1, flexible=True) + struct.pack(">i", int(timeout_s * 1000))
    body += _uvarint(2) + update + b"\x00" + b"\x00"  # one update, validate_only false, tags
    reply = _kafka_call(host, port, timeout_s, body)
    if reply is None:
        return f"the broker at {host}:{port} did not answer UpdateFeatures"
    try:
        read = _Reader(reply)
        read.skip_tags()  # response header v1
        _throttle, error = read.take(">ih")
        message = read.compact_string() if error else ""
        if not error:
            for _ in range(read.compact_len()):
                read.compact_string()
                (error,) = read.take(">h")
                message = read.compact_string()
                read.skip_tags()
    except (struct.error, IndexError):
        return "an UpdateFeatures answer msglab could not read"
    return f"error {error}: {message or 'no message'}" if error else ""


def redis_ping(host: str, port: int, timeout_s: float) -> bool:
    """Send PING; True on ``+PONG`` or ``-NOAUTH`` (up, needs a password), False on ``-LOADING``."""
    try:
        reply = redis_call(host, port, timeout_s, "PING")
    except ConnectionError:
        return False
    return reply == "PONG" or (isinstance(reply, RespError) and reply.startswith("NOAUTH"))


class RespError(str):
    """An error reply of a Redis server (``-ERR ...``, ``-LOADING ...``), as its text."""


Resp: TypeAlias = "str | int | list[Resp] | None"
"""A RESP2 reply: a simple or bulk string (str; a ``RespError`` for an error), an integer, a
null, or an array of replies."""


def redis_call(host: str, port: int, timeout_s: float, *command: str) -> Resp:
    """Send one command (``ROLE``, ``SENTINEL MASTER name``) to a Redis server or Sentinel
    over RESP2 and return its reply; ConnectionError when it does not answer, or answers with
    something that is not RESP."""
    request = f"*{len(command)}\r\n".encode()
    for arg in command:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(request)
            with sock.makefile("rb") as stream:
                return _resp_read(stream)
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"{host}:{port}: {exc or type(exc).__name__}") from exc


def _resp_read(stream: BinaryIO) -> Resp:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("closed by peer")
    kind, rest = line[:1], line[1:-2].decode("utf-8", "replace")
    if kind == b"+":
        return rest
    if kind == b"-":
        return RespError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("closed by peer")
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_resp_read(stream) for _ in range(size)]
    raise ValueError(f"not a RESP reply: {line[:40]!r}")


def _amqp_shortstr(buf: bytes, at: int) -> tuple[str, int]:
    n = buf[at]
    return buf[at + 1 : at + 1 + n].decode("utf-8", "replace"), at + 1 + n


def _amqp_server_version(table: bytes) -> str | None:
    """Find ``version`` in an AMQP field table (only the value types a server sends at start)."""
    at = 0
    while at < len(table):
        name, at = _amqp_shortstr(table, at)
        kind = chr(table[at])
        at += 1
        if kind in "SF":
            (n,) = struct.unpack(">I", table[at : at + 4])
            value = table[at + 4 : at + 4 + n]
            at += 4 + n
            if name == "version" and kind == "S":
                return value.decode("utf-8", "replace")
        elif kind == "t":
            at += 1
        else:
            return None
    return None


def amqp_handshake(host: str, port: int, timeout_s: float) -> str | None:
    """Open AMQP 0-9-1 and read Connection.Start; the server's version, or None if not ready."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame_type, _channel, size = struct.unpack(">BHI", _recv_exactly(sock, 7))
            payload = _recv_exactly(sock, size)
    except OSError:
        return None
    if frame_type != 1 or payload[:4] != b"\x00\x0a\x00\x0a":
        return None
    (table_len,) = struct.unpack(">I", payload[6:10])
    return _amqp_server_version(payload[10 : 10 + table_len]) or "unknown"


def postgres_ready(host: str, port: int, timeout_s: float) -> bool:
    """``pg_isready``: True when the server accepts connections (not starting, not recovering)."""
    exe = shutil.which("pg_isready")
    if exe is None:
        return _postgres_ssl_request(host, port, timeout_s)
    result = subprocess.run(
        [exe, "-q", "-h", host, "-p", str(port), "-t", str(max(1, round(timeout_s)))],
        check=False,
    )
    return result.returncode == 0


def _postgres_ssl_request(host: str, port: int, timeout_s: float) -> bool:
    """Fallback when pg_isready is absent: the server answers an SSLRequest with S or N."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">ii", 8, 80877103))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def connect_rest(host: str, port: int, timeout_s: float) -> bool:
    """Kafka Connect's REST API: True when ``GET /connectors`` answers 200 (the worker has
    joined its group and read its config topic; before that it answers an error or nothing)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/connectors")
        response = conn.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return response.status == 200


def toxiproxy_version(host: str, port: int, timeout_s: float) -> str | None:
    """``GET /version`` of Toxiproxy's HTTP API; the version it reports on 200, else None."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/version")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if response.status != 200:
        return None
    try:
        return str(json.loads(body)["version"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or "unknown"  # 2.x before 2.6: plain text
