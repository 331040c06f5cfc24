"""``proto=redis``: Redis Streams through redis-py (imported when a transport is made).

Each message is one stream entry (``XADD <topic> * payload <json> [key <key>]``); a batch is one pipelined
round trip, and an entry counts as delivered once Redis returned its id.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from pyinfer.brokers.base import BrokerError, ConnectionLost, Endpoint, Message, Transport
from pyinfer.errors import DependencyError

DEFAULT_PORT = 6379
PING_INTERVAL_S = 1.0


def _redis():
    try:
        import redis
    except ImportError as exc:
        raise DependencyError(
            "proto 'redis' needs the 'redis' package (pip install redis; "
            "or the brokers extra: pip install 'pyinfer-gst[brokers]')"
        ) from exc
    return redis


class RedisTransport(Transport):
    """Appends each payload to the stream named by ``topic``.

    Config options (section ``[message-broker]``): ``username``, ``password``, ``db`` (0), ``maxlen``
    (trim the stream to about this many entries; 0: never), ``tls`` (true/false), ``ca-file``,
    ``cert-file``, ``key-file``, ``tls-insecure`` (no certificate check), ``timeout`` (s per command once
    connected, 10; connecting, with its handshake, is bounded by connect-timeout as MQTT and Kafka are).
    """

    name = "redis"
    OPTIONS = frozenset({"username", "password", "db", "maxlen", "timeout", "tls", "tls-insecure", "ca-file",
                         "cert-file", "key-file"})  # fmt: skip

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.redis = _redis()
        self.host, self.port = endpoint.host_port(DEFAULT_PORT)
        if not endpoint.topic:
            raise BrokerError("topic is empty: Redis needs the name of a stream to append to")
        self.maxlen = endpoint.number("maxlen", 0)
        self.db = endpoint.number("db", 0)
        self.timeout_s = float(endpoint.number("timeout", 10))
        self.tls = endpoint.flag("tls") or any(k in endpoint.options for k in ("ca-file", "cert-file"))
        self.insecure = endpoint.flag("tls-insecure")
        self._client = None
        self._last_ping = 0.0

    @property
    def max_block_s(self) -> float:
        return max(self.endpoint.connect_timeout_s, self.timeout_s)

    def describe(self) -> str:
        return f"redis {self.host}:{self.port}"

    def connect(self) -> None:
        self.close()
        redis, opts = self.redis, self.endpoint.options
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs = {}
        if self.tls:
            kwargs = {
                "ssl": True,
                "ssl_ca_certs": opts.get("ca-file"),
                "ssl_certfile": opts.get("cert-file"),
                "ssl_keyfile": opts.get("key-file"),
                "ssl_cert_reqs": "none" if self.insecure else "required",
                "ssl_check_hostname": not self.insecure,
            }
        client = None
        connect_timeout = self.endpoint.connect_timeout_s
        try:
            # single_connection_client: one socket, opened here (so a refused connection fails here). The
            # handshake (TLS, AUTH, SELECT, the PING) runs under the connect timeout too: a server that accepts
            # and never answers must not hold start for the command timeout.
            client = redis.Redis(
                host=self.host, port=self.port, db=self.db,
                username=opts.get("username"), password=opts.get("password"),
                socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0),  # the publisher reconnects with its own backoff; no hidden waits
                single_connection_client=True, **kwargs,
            )  # fmt: skip
            client.ping()
        except redis.exceptions.RedisError as exc:
            if client is not None:
                client.close()
            raise BrokerError(f"cannot connect to Redis {self.host}:{self.port}: {exc}") from exc
        _set_command_timeout(client, self.timeout_s)
        self._client = client

    def publish(self, batch: Sequence[Message]) -> list[str | None]:
        if self._client is None:
            raise ConnectionLost("not connected")
        redis = self.redis
        pipe = self._client.pipeline(transaction=False)
        for m in batch:
            fields = {"payload": m.payload} if m.key is None else {"payload": m.payload, "key": m.key}
            pipe.xadd(self.endpoint.topic, fields, maxlen=self.maxlen or None, approximate=True)
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Some entries may have been added before the link failed: they are sent again (at least once).
            raise ConnectionLost(f"connection to {self.host}:{self.port} lost: {exc}") from exc
        # A per-entry error is Redis refusing it (e.g. the key holds another type): retrying cannot help.
        return [str(r) if isinstance(r, Exception) else None for r in results]

    def poll(self) -> None:
        # While idle, a PING a second notices a dead server before the next message has to.
        now = time.monotonic()
        if self._client is None or now - self._last_ping < PING_INTERVAL_S:
            return
        self._last_ping = now
        try:
            self._client.ping()
        except self.redis.exceptions.RedisError as exc:
            raise ConnectionLost(f"connection to {self.host}:{self.port} lost: {exc}") from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the socket may be gone already
                client.close()


def _set_command_timeout(client, timeout_s: float) -> None:
    """From now on, wait up to ``timeout_s`` for each reply on ``client``'s one, connected socket.

    redis-py has no public call for this: the connection keeps the timeout it reconnects with in
    ``socket_timeout``, the open socket has its own, and its reply parser restores a third after reads with a
    timeout of their own (``can_read``).
    """
    connection = client.connection
    connection.socket_timeout = timeout_s
    sock = getattr(connection, "_sock", None)
    if sock is not None:
        sock.settimeout(timeout_s)
    parser: Any = getattr(connection, "_parser", None)
    buffer = getattr(parser, "_buffer", None)
    if buffer is not None and hasattr(buffer, "socket_timeout"):  # the pure-Python RESP2/RESP3 parsers
        buffer.socket_timeout = timeout_s
    if hasattr(parser, "_socket_timeout"):  # the hiredis parser
        parser._socket_timeout = timeout_s
