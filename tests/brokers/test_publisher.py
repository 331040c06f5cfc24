"""The publisher (bounded queue, worker thread, reconnects, counters) against real brokers."""

from __future__ import annotations

import itertools
import json
import os
import time

import pytest

from brokers.servers import Redis, free_port
from pyinfer.brokers import BrokerError, Endpoint, Message, Publisher, make_transport


def _msg(i: int) -> Message:
    return Message(json.dumps({"message_id": f"{'0' * 32}-{i}", "n": i}).encode(), "0")


def _publisher(server, topic: str = "s", proto: str = "redis", **kwargs) -> Publisher:
    transport = make_transport(proto, Endpoint(server.conn_str, topic, connect_timeout_s=1.0))
    kwargs.setdefault("reconnect_s", 0.05)
    kwargs.setdefault("reconnect_max_s", 0.2)
    return Publisher(transport, **kwargs)


def _numbers(server, stream: str = "s") -> list[int]:
    return [payload["n"] for payload, _ in server.entries(stream)]


def test_a_redis_restart_mid_stream_loses_nothing_and_counts_one_reconnect(redis_server):
    pub = _publisher(redis_server, queue_size=1000)
    pub.start()
    for i in range(30):
        pub.put(_msg(i))
    assert pub.drain(10)
    redis_server.stop()
    for i in range(30, 60):  # queued while the server is down
        pub.put(_msg(i))
        time.sleep(0.005)
    redis_server.start()
    for i in range(60, 90):
        pub.put(_msg(i))
    assert pub.drain(15), f"still queued: {pub.queued}"
    pub.stop(1.0)
    assert sorted(set(_numbers(redis_server))) == list(range(90))
    assert pub.stats.dropped == 0
    assert pub.stats.failed == 0
    assert pub.stats.reconnects >= 1
    assert pub.stats.published >= 90  # at least once: a batch cut by the restart may be sent twice


def test_an_mqtt_restart_mid_stream_loses_nothing(mosquitto, mqtt_consumer):
    pub = _publisher(mosquitto, topic="pyinfer/test", proto="mqtt", queue_size=1000)
    pub.start()
    for i in range(20):
        pub.put(_msg(i))
    assert pub.drain(10)
    mosquitto.stop()
    for i in range(20, 40):
        pub.put(_msg(i))
    mosquitto.start()
    assert pub.drain(15), f"still queued: {pub.queued}"
    pub.stop(1.0)
    got = mqtt_consumer.wait_for(40)
    assert sorted({m["n"] for m in got}) == list(range(40))
    assert pub.stats.reconnects >= 1
    assert pub.stats.dropped == pub.stats.failed == 0


@pytest.mark.parametrize(("policy", "kept"), [("oldest", [7, 8, 9]), ("newest", [0, 1, 2])])
def test_a_full_queue_drops_by_policy_while_the_broker_is_down(tmp_path, policy, kept):
    server = Redis(tmp_path / "redis")  # not started yet: the publisher retries
    pub = _publisher(server, queue_size=3, drop_policy=policy)
    pub.start()
    try:
        dropped = [pub.put(_msg(i)) for i in range(10)]
        assert sum(dropped) == 7
        assert pub.stats.dropped == 7
        server.start()
        assert pub.drain(15)
        assert _numbers(server) == kept
        assert pub.stats.published == 3
    finally:
        pub.stop(1.0)
        server.stop()


def test_put_never_waits_while_the_broker_is_unreachable():
    transport = make_transport("redis", Endpoint(f"127.0.0.1:{free_port()}", "s", connect_timeout_s=1.0))
    pub = Publisher(transport, queue_size=100, reconnect_s=0.05)
    pub.start()
    try:
        t0 = time.monotonic()
        for i in range(2000):
            pub.put(_msg(i))
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"2000 puts took {elapsed:.2f} s"
        assert pub.stats.dropped == 1900
        assert pub.queued == 100
    finally:
        t0 = time.monotonic()
        pub.stop(0.2)
        assert time.monotonic() - t0 < 3.0  # bounded: flush timeout + one connect attempt at most
    assert pub.stats.dropped == 2000  # what was still queued at stop is counted as dropped
    assert pub.stats.published == 0


def test_messages_the_broker_refuses_are_failed_and_not_retried(redis_server):
    redis_server.client().set("s", "not a stream")
    pub = _publisher(redis_server)
    pub.start()
    for i in range(5):
        pub.put(_msg(i))
    assert pub.drain(10)
    pub.stop(1.0)
    assert (pub.stats.failed, pub.stats.published, pub.stats.reconnects) == (5, 0, 0)


def test_reconnect_attempts_back_off_exponentially_up_to_the_cap():
    attempts: list[float] = []
    transport = make_transport("mqtt", Endpoint(f"127.0.0.1:{free_port()}", "t", connect_timeout_s=1.0))
    pub = Publisher(transport, reconnect_s=0.05, reconnect_max_s=0.2,
                    on_state=lambda connected, reason: attempts.append(time.monotonic()))  # fmt: skip
    pub.start()
    time.sleep(1.5)
    pub.stop(0.0)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) >= 4, gaps
    for gap, floor in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2]):
        assert gap >= floor * 0.9, gaps  # waits at least the current delay...
    assert len(attempts) < 1.5 / 0.05, gaps  # ...which grew: far fewer attempts than at a fixed 50 ms


def test_stop_while_connected_and_idle_returns_promptly(redis_server):
    pub = _publisher(redis_server)
    pub.start()
    assert pub.drain(1.0)
    t0 = time.monotonic()
    pub.stop(5.0)
    assert time.monotonic() - t0 < 1.0
    assert not pub.connected


def test_bad_publisher_settings_are_broker_errors(redis_server):
    transport = make_transport("redis", Endpoint(redis_server.conn_str, "s"))
    with pytest.raises(BrokerError, match="drop-policy"):
        Publisher(transport, drop_policy="random")
    with pytest.raises(BrokerError, match="queue-size"):
        Publisher(transport, queue_size=0)


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("reader_then", ["reads", "closes"])
def test_a_message_still_being_sent_when_stop_gives_up_is_counted_once(tmp_path, reader_then):
    # Issue #19: stop() counted the in-flight message as dropped, then the worker delivered it (published):
    # published + dropped + failed came to one more than was put.
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that opening for appending does not wait
    try:
        pub = Publisher(make_transport("file", Endpoint(str(fifo), "t", connect_timeout_s=0.1)))
        pub.connect_now()
        pub.start()
        payload = b"x" * (1 << 20)  # more than the pipe holds: the write blocks until the reader reads
        pub.put(Message(payload))
        time.sleep(0.3)  # the worker is inside the write
        pub.stop(0.0)  # gives up on the worker after max_block_s + 1 s
        assert pub.stats.published == 0
        if reader_then == "reads":
            os.set_blocking(reader, True)
            got = 0
            while got < len(payload) + 1:
                got += len(os.read(reader, 1 << 16))
        else:
            os.close(reader)  # the write fails (broken pipe): the message is not sent again after stop
            reader = None
        settled = {"reads": lambda: pub.stats.published > 0, "closes": lambda: pub.queued == 0}[reader_then]
        assert _wait_for(settled)
        time.sleep(0.2)  # nothing more may be counted
        expected = (1, 0, 0) if reader_then == "reads" else (0, 1, 0)
        assert (pub.stats.published, pub.stats.dropped, pub.stats.failed) == expected
        assert pub.queued == 0
    finally:
        if reader is not None:
            os.close(reader)
