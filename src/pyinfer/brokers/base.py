"""Publishing without blocking the caller: a bounded queue, a worker thread, reconnects with backoff, counters.

A :class:`Transport` talks to one broker and knows nothing of queues or threads. A :class:`Publisher` owns
one transport and one worker thread: :meth:`Publisher.put` never waits (a full queue drops by policy and
counts it), the worker sends batches, removes a message only once the transport confirmed it (at least
once), and on a lost connection closes the transport and reconnects with exponential backoff.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyinfer.errors import PyInferError

log = logging.getLogger(__name__)

DROP_POLICIES = ("oldest", "newest")
MAX_BATCH = 64  # messages per transport call: amortises round trips, bounds the work redone after a failure
IDLE_POLL_S = 0.1  # how often an idle worker lets the transport read its socket (keepalive, lost connections)


class BrokerError(PyInferError):
    """A broker cannot be used: bad settings, a missing client library, or no connection."""


class ConnectionLost(BrokerError):
    """The connection failed while sending a batch.

    ``outcomes`` settles the first messages of the batch (None: delivered; text: refused for good); the
    others are sent again. ``delivered=k`` is short for ``outcomes=[None] * k``.
    """

    def __init__(self, message: str, delivered: int = 0, outcomes: Sequence[str | None] | None = None) -> None:
        super().__init__(message)
        self.outcomes: list[str | None] = list(outcomes) if outcomes is not None else [None] * delivered


@dataclass(eq=False)
class Message:
    """One payload to publish. ``key`` groups messages (Kafka partition key; the source id)."""

    payload: bytes
    key: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: ``conn_str`` as the user gave it, ``options`` from the config file."""

    conn_str: str
    topic: str
    options: dict[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0

    def host_port(self, default_port: int) -> tuple[str, int]:
        """``host:port`` or nvmsgbroker's ``host;port`` (``[v6]:port`` too); the port may be left out."""
        text = self.conn_str.strip()
        if not text:
            raise BrokerError("conn-str is empty: expected host:port")
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest.lstrip(":;")
        else:
            sep = ";" if ";" in text else ":"
            host, _, port_text = text.partition(sep)
        if not host:
            raise BrokerError(f"conn-str {self.conn_str!r} has no host: expected host:port")
        if not port_text:
            return host, default_port
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BrokerError(f"conn-str {self.conn_str!r}: port {port_text!r} is not a number in 1..65535")
        return host, int(port_text)

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean option (true/false, yes/no, 1/0, on/off)."""
        value = self.options.get(key)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BrokerError(f"config option {key} = {value!r} is not a boolean (true/false)")

    def number(self, key: str, default: int) -> int:
        """An integer option."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise BrokerError(f"config option {key} = {value!r} is not an integer") from None


class Transport(ABC):
    """One connection to one broker. Called from a single thread (the publisher's worker)."""

    #: what the user names in ``proto``.
    name = ""
    #: the config-file options this transport reads (pyinfer's names; nvmsgbroker's are translated before).
    OPTIONS: frozenset[str] = frozenset()

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def unused_options(self) -> list[str]:
        """Config-file options this transport does not read (a typo, or an nvmsgbroker key with no counterpart)."""
        return sorted(key for key in self.endpoint.options if key not in self.OPTIONS)

    def describe(self) -> str:
        """``proto conn-str`` for messages to people."""
        return f"{self.name} {self.endpoint.conn_str}"

    @property
    def max_block_s(self) -> float:
        """The longest one call of this transport may block (connect, or a batch's acknowledgements)."""
        return self.endpoint.connect_timeout_s

    @abstractmethod
    def connect(self) -> None:
        """Open the connection, within ``endpoint.connect_timeout_s``. Raises BrokerError."""

    @abstractmethod
    def publish(self, batch: Sequence[Message]) -> list[str | None]:
        """Send ``batch`` and wait for the broker's acknowledgement where the protocol has one.

        Returns:
            per message None (delivered) or the reason the broker refused it for good (not retried).

        Raises:
            ConnectionLost: the connection failed; messages from ``delivered`` on are sent again later.
        """

    def poll(self) -> None:  # noqa: B027 - optional hook: most transports have nothing to do while idle
        """Called about every :data:`IDLE_POLL_S` while idle; raises ConnectionLost if the link is gone."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (never raises)."""


@dataclass
class Stats:
    """The publisher's counters. ``published`` counts deliveries (a message resent after a lost
    acknowledgement counts again); ``dropped`` messages were discarded unsent (queue full, or still queued
    at shutdown); ``failed`` ones were refused by the broker or gave up after ``max_attempts``."""

    published: int = 0
    dropped: int = 0
    failed: int = 0
    reconnects: int = 0

    @property
    def lost(self) -> int:
        """Messages that will never arrive: dropped + failed."""
        return self.dropped + self.failed


class Publisher:
    """A bounded queue in front of a transport, drained by a worker thread.

    Args:
        transport: the broker connection.
        queue_size: most messages held; beyond it ``drop_policy`` decides.
        drop_policy: ``oldest`` drops the longest-waiting message to admit a new one; ``newest`` refuses
            the new one.
        reconnect_s: first delay before reconnecting; doubles after each failed attempt...
        reconnect_max_s: ...up to this.
        max_attempts: a message whose sending failed this many times is given up (``failed``).
        on_state: called from the worker as ``on_state(connected, reason)`` when the connection comes
            up or goes down (``reason``: why it went down or could not come up).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        queue_size: int = 1000,
        drop_policy: str = "oldest",
        reconnect_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        max_attempts: int = 10,
        on_state: Callable[[bool, str], None] | None = None,
    ) -> None:
        if drop_policy not in DROP_POLICIES:
            raise BrokerError(f"drop-policy must be one of {', '.join(DROP_POLICIES)}, not {drop_policy!r}")
        if queue_size < 1:
            raise BrokerError(f"queue-size must be at least 1, not {queue_size}")
        self.transport = transport
        self.queue_size = queue_size
        self.drop_policy = drop_policy
        self.reconnect_s = max(0.01, reconnect_s)
        self.reconnect_max_s = max(self.reconnect_s, reconnect_max_s)
        self.max_attempts = max(1, max_attempts)
        self.stats = Stats()
        self._on_state = on_state or (lambda connected, reason: None)
        self._queue: collections.deque[Message] = collections.deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._connected = False
        self._ever_connected = False
        self._thread: threading.Thread | None = None

    # -- caller side -------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the transport is connected now."""
        return self._connected

    @property
    def queued(self) -> int:
        """Messages waiting or being sent."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def connect_now(self) -> None:
        """Connect on the caller's thread (bounded by the transport's timeout). Raises BrokerError."""
        self.transport.connect()
        self._connected = self._ever_connected = True

    def start(self) -> None:
        """Start the worker (it connects first unless :meth:`connect_now` did)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"pyinfer-{self.transport.name}", daemon=True)
        self._thread.start()

    def put(self, message: Message) -> int:
        """Queue ``message`` without waiting; returns how many messages the drop policy discarded (0 or 1)."""
        with self._cond:
            dropped = 0
            if len(self._queue) + self._in_flight >= self.queue_size:
                dropped = 1
                self.stats.dropped += 1
                if self.drop_policy == "newest" or not self._queue:
                    return dropped  # nothing older to drop (all in flight): refuse the new one
                self._queue.popleft()
            self._queue.append(message)
            self._cond.notify()
            return dropped

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the queue to empty; True if it did."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def stop(self, timeout_s: float) -> None:
        """Drain up to ``timeout_s``, stop the worker, close the transport; what is left counts as dropped."""
        self.drain(timeout_s)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        worker, self._thread = self._thread, None
        if worker is not None:
            # The worker only blocks inside transport calls, each bounded by the transport's timeouts.
            worker.join(timeout=self.transport.max_block_s + 1.0)
        alive = worker is not None and worker.is_alive()
        with self._cond:
            self.stats.dropped += len(self._queue)
            self._queue.clear()
            if not alive:
                self.stats.dropped += self._in_flight  # (none: a finished worker settled its batch)
                self._in_flight = 0
            # else the batch in flight is the worker's: once its call returns it counts each message once,
            # published, failed or (not confirmed: never sent again now) dropped
        if not alive:  # else the (daemon) worker still uses the transport; it closes it
            self._close_transport()

    # -- worker side -------------------------------------------------------------------------------
    def _close_transport(self) -> None:
        try:
            self.transport.close()
        except Exception:  # close() must not raise; a client library bug must not kill the worker
            log.debug("closing %s failed", self.transport.describe(), exc_info=True)
        self._connected = False

    def _take(self) -> list[Message]:
        with self._cond:
            if not self._queue and not self._stop.is_set():
                self._cond.wait(IDLE_POLL_S)
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            self._in_flight = len(batch)
            return batch

    def _settle(self, batch: list[Message], outcomes: Sequence[str | None], *, retry: bool) -> None:
        """Count the outcomes of the first ``len(outcomes)`` messages of ``batch``; with ``retry`` the rest
        go back to the front of the queue (they were not confirmed), or count as dropped once stopping."""
        with self._cond:
            for outcome in outcomes:
                if outcome is None:
                    self.stats.published += 1
                else:
                    self.stats.failed += 1
                    log.warning("%s refused a message: %s", self.transport.describe(), outcome)
            back = batch[len(outcomes) :] if retry else []
            for message in back:
                message.attempts += 1
            keep = [m for m in back if m.attempts < self.max_attempts]
            self.stats.failed += len(back) - len(keep)
            if self._stop.is_set():  # stopping: nothing is sent again (stop() counts only what is queued)
                self.stats.dropped += len(keep)
                keep = []
            self._queue.extendleft(reversed(keep))
            # While the batch was out, new messages may have filled the queue: apply the policy again.
            excess = len(self._queue) - self.queue_size
            if excess > 0:
                self.stats.dropped += excess
                for _ in range(excess):
                    (self._queue.popleft if self.drop_policy == "oldest" else self._queue.pop)()
            self._in_flight = 0
            self._cond.notify_all()

    def _run(self) -> None:
        delay = self.reconnect_s
        while not self._stop.is_set():
            if not self._connected:
                try:
                    self.transport.connect()
                except Exception as exc:  # any client failure means "not connected yet": retry
                    self._close_transport()
                    self._on_state(False, str(exc))
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
                if self._ever_connected:
                    self.stats.reconnects += 1
                self._connected = self._ever_connected = True
                delay = self.reconnect_s
                self._on_state(True, "")
            batch = self._take()
            try:
                if not batch:
                    self.transport.poll()
                    continue
                outcomes = self.transport.publish(batch)
                self._settle(batch, outcomes, retry=False)
            except Exception as exc:
                settled = exc.outcomes if isinstance(exc, ConnectionLost) else []
                if batch:
                    self._settle(batch, settled, retry=True)
                self._close_transport()
                self._on_state(False, str(exc) or type(exc).__name__)
                self._stop.wait(delay)
        if self._thread is None:  # stop() gave up waiting for this thread: close here
            self._close_transport()
        with self._cond:
            self._cond.notify_all()
