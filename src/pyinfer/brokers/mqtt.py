"""``proto=mqtt``: MQTT 3.1.1 through paho-mqtt (imported when a transport is made), QoS 1 by default.

paho's network loop runs on the publisher's worker thread (``client.loop``), not on a thread of its own,
so closing is immediate and every wait is bounded by our timeouts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from pyinfer.brokers.base import MAX_BATCH, BrokerError, ConnectionLost, Endpoint, Message, Transport
from pyinfer.errors import DependencyError

DEFAULT_PORT = 1883
LOOP_STEP_S = 0.05  # one paho network step while waiting for CONNACK/PUBACK


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise DependencyError(
            "proto 'mqtt' needs the 'paho-mqtt' package (pip install paho-mqtt; "
            "or the brokers extra: pip install 'pyinfer-gst[brokers]')"
        ) from exc
    return mqtt


class MqttTransport(Transport):
    """Publishes each payload to ``topic``.

    Config options (section ``[message-broker]``): ``username``, ``password``, ``client-id``, ``qos`` (0, 1
    or 2; default 1: at least once), ``keepalive`` (s, 60), ``ack-timeout`` (s to wait for the broker's
    acknowledgements of a batch, 10), ``tls`` (true/false), ``ca-file``, ``cert-file``, ``key-file``,
    ``tls-insecure`` (skip the host name check).
    """

    name = "mqtt"
    OPTIONS = frozenset({"username", "password", "client-id", "qos", "keepalive", "ack-timeout", "tls",
                         "tls-insecure", "ca-file", "cert-file", "key-file"})  # fmt: skip

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.mqtt = _paho()
        self.host, self.port = endpoint.host_port(DEFAULT_PORT)
        if not endpoint.topic:
            raise BrokerError("topic is empty: MQTT needs a topic to publish to")
        self.qos = endpoint.number("qos", 1)
        if self.qos not in (0, 1, 2):
            raise BrokerError(f"config option qos = {self.qos} must be 0, 1 or 2")
        self.keepalive = endpoint.number("keepalive", 60)
        self.ack_timeout_s = float(endpoint.number("ack-timeout", 10))
        self.tls = endpoint.flag("tls") or any(k in endpoint.options for k in ("ca-file", "cert-file"))
        endpoint.flag("tls-insecure")  # validate now: a typo is a settings error at start
        self._client: Any = None  # a paho.mqtt Client once connected
        self._connect_result: str | None = None

    @property
    def max_block_s(self) -> float:
        return max(self.endpoint.connect_timeout_s, self.ack_timeout_s)

    def describe(self) -> str:
        return f"mqtt {self.host}:{self.port}"

    def _make_client(self):
        mqtt, opts = self.mqtt, self.endpoint.options
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=opts.get("client-id", ""),
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.connect_timeout = self.endpoint.connect_timeout_s
        if "username" in opts:
            client.username_pw_set(opts["username"], opts.get("password"))
        if self.tls:
            try:
                client.tls_set(ca_certs=opts.get("ca-file"), certfile=opts.get("cert-file"),
                               keyfile=opts.get("key-file"))  # fmt: skip
            except (OSError, ValueError) as exc:
                raise BrokerError(f"TLS set-up failed: {exc}") from exc
            client.tls_insecure_set(self.endpoint.flag("tls-insecure"))
        # paho holds back messages beyond its in-flight limit (default 20); let a whole batch go out at once.
        client.max_inflight_messages_set(MAX_BATCH)

        def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
            self._connect_result = "" if not reason_code.is_failure else str(reason_code)

        client.on_connect = on_connect
        return client

    def connect(self) -> None:
        self.close()
        client = self._make_client()
        self._connect_result = None
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:  # refused, unreachable, name not found, TLS failure
            raise BrokerError(f"cannot connect to MQTT broker {self.host}:{self.port}: {exc}") from exc
        deadline = time.monotonic() + self.endpoint.connect_timeout_s
        while self._connect_result is None and time.monotonic() < deadline:
            if client.loop(LOOP_STEP_S) != self.mqtt.MQTT_ERR_SUCCESS:
                break
        if self._connect_result != "":
            reason = self._connect_result or "no CONNACK in time"
            client.disconnect()
            raise BrokerError(f"MQTT broker {self.host}:{self.port} refused the connection: {reason}")
        self._client = client

    def _step(self) -> None:
        rc = self._client.loop(LOOP_STEP_S)
        if rc != self.mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionLost(f"connection to {self.host}:{self.port} lost ({self.mqtt.error_string(rc)})")

    def publish(self, batch: Sequence[Message]) -> list[str | None]:
        if self._client is None:
            raise ConnectionLost("not connected")
        infos: list = []
        for m in batch:
            info = self._client.publish(self.endpoint.topic, m.payload, qos=self.qos)
            if info.rc != self.mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionLost(f"publish failed: {self.mqtt.error_string(info.rc)}", _published(infos))
            infos.append(info)
        deadline = time.monotonic() + self.ack_timeout_s
        while not all(i.is_published() for i in infos):
            if time.monotonic() > deadline:
                raise ConnectionLost(f"no acknowledgement within {self.ack_timeout_s:g} s", _published(infos))
            try:
                self._step()
            except ConnectionLost as exc:
                raise ConnectionLost(str(exc), _published(infos)) from exc
        return [None] * len(batch)

    def poll(self) -> None:
        if self._client is not None:
            self._step()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the socket may be gone already
                client.disconnect()


def _published(infos: list) -> int:
    """How many leading messages the broker acknowledged."""
    n = 0
    for info in infos:
        if not info.is_published():
            break
        n += 1
    return n
