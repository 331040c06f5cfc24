"""Real brokers for the broker tests: mosquitto and redis-server on free loopback ports, stopped after.

A missing binary fails the tests loudly (``make test`` installs both); nothing here skips.
"""

from __future__ import annotations

import pytest

from brokers.servers import Mosquitto, MqttConsumer, Redis


@pytest.fixture
def mosquitto(tmp_path):
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path):
    server = Redis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mqtt_consumer(mosquitto):
    consumer = MqttConsumer(mosquitto, "pyinfer/test")
    yield consumer
    consumer.close()
