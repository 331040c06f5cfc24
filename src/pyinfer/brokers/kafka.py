"""``proto=kafka``: Apache Kafka through confluent-kafka (librdkafka; imported when a transport is made).

Not tested against a Kafka server (none in the test environment): the tests cover the unreachable-broker
path with the real client; the message path is the one file, MQTT and Redis share.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from pyinfer.brokers.base import BrokerError, ConnectionLost, Endpoint, Message, Transport
from pyinfer.errors import DependencyError

DEFAULT_PORT = 9092
log = logging.getLogger(__name__)


def _kafka():
    try:
        import confluent_kafka
    except ImportError as exc:
        raise DependencyError(
            "proto 'kafka' needs the 'confluent-kafka' package (pip install confluent-kafka; "
            "or the kafka extra: pip install 'pyinfer-gst[kafka]')"
        ) from exc
    return confluent_kafka


class KafkaTransport(Transport):
    """Produces each payload to ``topic``, keyed by the message key (the source id: one partition per stream).

    ``conn-str`` is the bootstrap list (``host:port`` or ``host;port``; several servers comma-separated).
    Delivery waits for ``acks=all`` with idempotence on, so a retry inside librdkafka adds no duplicate.
    Config options (section ``[message-broker]``): ``username``/``password`` (SASL PLAIN, or
    ``sasl-mechanism``), ``tls`` (true/false), ``ca-file``, ``cert-file``, ``key-file``, ``ack-timeout``
    (s, 10), and any librdkafka property prefixed with ``kafka.`` (``kafka.compression.type = lz4``).
    """

    name = "kafka"
    OPTIONS = frozenset({"username", "password", "sasl-mechanism", "tls", "ca-file", "cert-file", "key-file",
                         "ack-timeout"})  # fmt: skip

    def unused_options(self) -> list[str]:
        return [key for key in super().unused_options() if not key.startswith("kafka.")]

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.kafka = _kafka()
        if not endpoint.topic:
            raise BrokerError("topic is empty: Kafka needs a topic to produce to")
        servers = [s.strip() for s in endpoint.conn_str.replace(";", ":").split(",") if s.strip()]
        if not servers:
            raise BrokerError("conn-str is empty: expected host:port[,host:port...]")
        for server in servers:  # validate each the same way the other protocols do
            Endpoint(server, endpoint.topic).host_port(DEFAULT_PORT)
        self.ack_timeout_s = float(endpoint.number("ack-timeout", 10))
        self.config = self._config(",".join(servers))
        self._producer = None

    def _config(self, servers: str) -> dict[str, object]:
        opts = self.endpoint.options
        timeout_ms = int(self.endpoint.connect_timeout_s * 1000)
        conf: dict[str, object] = {
            "bootstrap.servers": servers,
            "acks": "all",
            "enable.idempotence": True,
            "socket.connection.setup.timeout.ms": max(1000, timeout_ms),
            # Give up inside librdkafka no later than we do, so an undelivered message comes back to our queue.
            "message.timeout.ms": max(1000, int(self.ack_timeout_s * 1000)),
        }
        tls = self.endpoint.flag("tls") or any(k in opts for k in ("ca-file", "cert-file"))
        sasl = "username" in opts
        conf["security.protocol"] = ("SASL_" if sasl else "") + ("SSL" if tls else "PLAINTEXT")
        if sasl:
            conf["sasl.mechanisms"] = opts.get("sasl-mechanism", "PLAIN")
            conf["sasl.username"] = opts["username"]
            conf["sasl.password"] = opts.get("password", "")
        for key, name in (("ca-file", "ssl.ca.location"), ("cert-file", "ssl.certificate.location"),
                          ("key-file", "ssl.key.location")):  # fmt: skip
            if key in opts:
                conf[name] = opts[key]
        conf.update({k.removeprefix("kafka."): v for k, v in opts.items() if k.startswith("kafka.")})
        return conf

    @property
    def max_block_s(self) -> float:
        return max(self.endpoint.connect_timeout_s, self.ack_timeout_s)

    def describe(self) -> str:
        return f"kafka {self.config['bootstrap.servers']}"

    def connect(self) -> None:
        self.close()
        k = self.kafka
        try:
            producer = k.Producer(self.config, logger=log)
        except k.KafkaException as exc:
            raise BrokerError(f"bad Kafka settings: {exc}") from exc
        try:
            # Producer() never connects by itself; asking for the topic's metadata does, within the timeout.
            producer.list_topics(self.endpoint.topic, timeout=self.endpoint.connect_timeout_s)
        except k.KafkaException as exc:
            producer.purge()
            raise BrokerError(f"cannot reach Kafka {self.config['bootstrap.servers']}: {exc}") from exc
        self._producer = producer

    def publish(self, batch: Sequence[Message]) -> list[str | None]:
        if self._producer is None:
            raise ConnectionLost("not connected")
        k = self.kafka
        results: list[object] = [_PENDING] * len(batch)

        def report(i: int):
            def on_delivery(err, _msg) -> None:
                results[i] = err

            return on_delivery

        for i, m in enumerate(batch):
            try:
                self._producer.produce(self.endpoint.topic, m.payload, m.key, on_delivery=report(i))
            except BufferError as exc:  # librdkafka's local queue is full: the broker is not keeping up
                raise ConnectionLost(f"local queue full: {exc}") from exc  # delivery reports come at flush
            except k.KafkaException as exc:
                results[i] = exc.args[0] if exc.args else exc
        self._producer.flush(self.ack_timeout_s)
        outcomes: list[str | None] = []
        for r in results:
            if r is _PENDING or (isinstance(r, k.KafkaError) and r.retriable()):
                why = f"no delivery report within {self.ack_timeout_s:g} s" if r is _PENDING else str(r)
                raise ConnectionLost(f"message not delivered: {why}", outcomes=outcomes)
            outcomes.append(None if r is None else str(r))
        return outcomes

    def poll(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.purge()  # undelivered messages are back in our queue or counted; do not wait
                producer.flush(0)


_PENDING = object()
