"""Message brokers for ``pymsgbroker``: file (JSON lines), MQTT, Redis Streams, Kafka.

GStreamer-free. Each protocol module imports its client library only when a transport is made, so
importing this package never needs paho-mqtt, redis or confluent-kafka.
"""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyinfer.brokers.base import (
    DROP_POLICIES,
    BrokerError,
    ConnectionLost,
    Endpoint,
    Message,
    Publisher,
    Stats,
    Transport,
)

__all__ = [
    "DROP_POLICIES",
    "PROTOCOLS",
    "BrokerError",
    "ConnectionLost",
    "Endpoint",
    "Message",
    "Publisher",
    "Stats",
    "Transport",
    "make_transport",
    "parse_target",
    "read_config",
]

#: proto name -> (module, class). Module stems are the property values.
PROTOCOLS = {
    "file": ("pyinfer.brokers.file", "FileTransport"),
    "mqtt": ("pyinfer.brokers.mqtt", "MqttTransport"),
    "redis": ("pyinfer.brokers.redis", "RedisTransport"),
    "kafka": ("pyinfer.brokers.kafka", "KafkaTransport"),
}
CONFIG_SECTION = "message-broker"  # nvmsgbroker's adaptor config files use one section per adaptor too
DEFAULT_TOPIC = "pyinfer"


def make_transport(proto: str, endpoint: Endpoint) -> Transport:
    """The transport for ``proto`` (file, mqtt, redis, kafka).

    Raises:
        BrokerError: unknown protocol or bad settings.
        pyinfer.errors.DependencyError: the protocol's client library is not installed.
    """
    if proto not in PROTOCOLS:
        raise BrokerError(f"proto must be one of {', '.join(PROTOCOLS)}, not {proto!r}")
    module, name = PROTOCOLS[proto]
    return getattr(importlib.import_module(module), name)(endpoint)


def read_config(path: str | Path) -> dict[str, str]:
    """The options of a broker config file: an INI file whose ``[message-broker]`` section holds
    ``key = value`` lines (credentials, TLS files, protocol options; see docs/messages.md).

    Raises:
        BrokerError: the file is missing (``missing`` set), unreadable, or has no such section.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise BrokerError(f"config file {path} does not exist", missing=True) from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise BrokerError(f"cannot read config file {path}: {exc}") from exc
    if not parser.has_section(CONFIG_SECTION):
        raise BrokerError(f"config file {path} has no [{CONFIG_SECTION}] section")
    return nvmsgbroker_options(dict(parser.items(CONFIG_SECTION)))


#: nvmsgbroker's adaptor config keys (cfg_mqtt.txt, cfg_redis.txt) -> pyinfer's names for the same option.
NVMSGBROKER_KEYS = {
    "enable-tls": "tls",
    "tls-cafile": "ca-file",
    "tls-certfile": "cert-file",
    "tls-keyfile": "key-file",
    "keep-alive": "keepalive",
    "streamsize": "maxlen",
}
#: cfg_kafka.txt's librdkafka settings, ``"name=value;name=value"``: each becomes ``kafka.<name>``.
NVMSGBROKER_KAFKA_KEYS = ("proto-cfg", "producer-proto-cfg")


def nvmsgbroker_options(options: dict[str, str]) -> dict[str, str]:
    """Options with nvmsgbroker's key names translated to pyinfer's, so its cfg_*.txt files work as they are.

    pyinfer's own name wins where a file has both. Keys with no counterpart (``share-connection``,
    ``hostname``/``port``: the ``conn-str`` property, ``payloadkey``, ``consumergroup``, ``partition-key``...)
    are left as they are; the element names them in a WARNING at start (Transport.unused_options).
    """
    out = dict(options)
    for theirs, ours in NVMSGBROKER_KEYS.items():
        if theirs in out:
            value = out.pop(theirs)
            out.setdefault(ours, value)
    for key in NVMSGBROKER_KAFKA_KEYS:
        if key in out:
            for item in out.pop(key).strip().strip('"').split(";"):
                name, eq, value = item.partition("=")
                if eq and name.strip():
                    out.setdefault(f"kafka.{name.strip()}", value.strip())
    return out


def parse_target(target: str) -> tuple[str, str, str]:
    """Split a publish target into (proto, conn-str, topic).

    ``mqtt://host:port/topic``, ``redis://host:port/stream``, ``kafka://host:port/topic`` (topic default
    ``pyinfer``, port default the protocol's), ``file:///path`` or a plain path (JSON lines).

    Raises:
        BrokerError: an unknown scheme or a URL without a host.
    """
    if "://" not in target:
        if not target:
            raise BrokerError("the publish target is empty")
        return "file", target, DEFAULT_TOPIC
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return "file", unquote(parts.path), DEFAULT_TOPIC
    if scheme not in PROTOCOLS:
        raise BrokerError(f"unknown publish target scheme {scheme!r}: use file://, mqtt://, redis:// or kafka://")
    if not parts.hostname:
        raise BrokerError(f"publish target {target!r} has no host")
    if parts.username is not None:
        raise BrokerError("credentials do not go in the publish target: put them in the broker config file")
    topic = unquote(parts.path.lstrip("/")) or DEFAULT_TOPIC
    return scheme, parts.netloc, topic
