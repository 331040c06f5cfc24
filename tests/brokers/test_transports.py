"""Each transport against a real server (file, mosquitto, redis-server); Kafka's unreachable path."""

from __future__ import annotations

import json
import time

import pytest

from brokers.servers import Mosquitto, MqttConsumer, Redis, SilentServer, free_port, make_tls_files
from pyinfer.brokers import BrokerError, Endpoint, Message, make_transport, parse_target, read_config


def _messages(n: int, key: str | None = "3") -> list[Message]:
    return [Message(json.dumps({"message_id": f"{'0' * 32}-{i}", "n": i}).encode(), key) for i in range(n)]


def _send(transport, messages: list[Message]) -> list[str | None]:
    transport.connect()
    try:
        return transport.publish(messages)
    finally:
        transport.close()


def test_file_transport_appends_one_json_line_per_message(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"earlier": true}\n')
    outcomes = _send(make_transport("file", Endpoint(str(path), "t")), _messages(3))
    assert outcomes == [None, None, None]
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"earlier": True}  # appended, not truncated
    assert [json.loads(line)["n"] for line in lines[1:]] == [0, 1, 2]


def test_file_transport_in_a_missing_directory_cannot_connect(tmp_path):
    transport = make_transport("file", Endpoint(str(tmp_path / "nope" / "out.jsonl"), "t"))
    with pytest.raises(BrokerError, match=r"cannot open .*nope"):
        transport.connect()


def test_mqtt_transport_delivers_a_batch_in_order(mosquitto, mqtt_consumer):
    outcomes = _send(make_transport("mqtt", Endpoint(mosquitto.conn_str, "pyinfer/test")), _messages(20))
    assert outcomes == [None] * 20
    got = mqtt_consumer.wait_for(20)
    assert [m["n"] for m in got] == list(range(20))


def test_redis_transport_appends_stream_entries_with_payload_and_key(redis_server):
    outcomes = _send(make_transport("redis", Endpoint(redis_server.conn_str, "dets")), _messages(5, key="7"))
    assert outcomes == [None] * 5
    entries = redis_server.entries("dets")
    assert [payload["n"] for payload, _ in entries] == list(range(5))
    assert all(fields[b"key"] == b"7" for _, fields in entries)


def test_redis_refusing_an_entry_is_reported_per_message_not_as_a_lost_connection(redis_server):
    redis_server.client().set("not-a-stream", "x")  # XADD to a string key: WRONGTYPE
    outcomes = _send(make_transport("redis", Endpoint(redis_server.conn_str, "not-a-stream")), _messages(2))
    assert all(o is not None and "WRONGTYPE" in o for o in outcomes)


def test_redis_maxlen_option_trims_the_stream(redis_server):
    endpoint = Endpoint(redis_server.conn_str, "trimmed", {"maxlen": "10"})
    transport = make_transport("redis", endpoint)
    transport.connect()
    for _ in range(10):
        assert transport.publish(_messages(20)) == [None] * 20
    transport.close()
    # approximate trimming keeps at least maxlen and far fewer than the 200 sent
    assert 10 <= len(redis_server.entries("trimmed")) < 200


@pytest.mark.parametrize("proto", ["mqtt", "redis", "kafka"])
def test_connecting_to_a_closed_port_fails_within_the_timeout(proto):
    transport = make_transport(proto, Endpoint(f"127.0.0.1:{free_port()}", "t", connect_timeout_s=1.0))
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1"):
        transport.connect()
    assert time.monotonic() - t0 < 5.0
    transport.close()


def test_mqtt_credentials_come_from_the_config_file(tmp_path):
    server = Mosquitto(tmp_path / "auth", users={"cam": "s3cret"})
    server.start()
    try:
        good = tmp_path / "good.ini"
        good.write_text("[message-broker]\nusername = cam\npassword = s3cret\n")
        bad = tmp_path / "bad.ini"
        bad.write_text("[message-broker]\nusername = cam\npassword = wrong\n")
        ok = make_transport("mqtt", Endpoint(server.conn_str, "t", read_config(good)))
        ok.connect()
        assert ok.publish(_messages(1)) == [None]
        ok.close()
        refused = make_transport("mqtt", Endpoint(server.conn_str, "t", read_config(bad), connect_timeout_s=3))
        with pytest.raises(BrokerError, match="refused the connection"):
            refused.connect()
    finally:
        server.stop()


def test_redis_password_comes_from_the_config_file(tmp_path):
    server = Redis(tmp_path / "auth", password="s3cret")
    server.start()
    try:
        cfg = tmp_path / "redis.ini"
        cfg.write_text("[message-broker]\npassword = s3cret\n")
        assert _send(make_transport("redis", Endpoint(server.conn_str, "s", read_config(cfg))), _messages(1)) == [None]
        with pytest.raises(BrokerError, match=r"(?i)auth"):
            make_transport("redis", Endpoint(server.conn_str, "s")).connect()
        assert len(server.entries("s")) == 1
    finally:
        server.stop()


def test_mqtt_and_redis_over_tls_with_the_ca_from_the_config_file(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    cfg = tmp_path / "tls.ini"
    cfg.write_text(f"[message-broker]\ntls = true\nca-file = {tls['ca']}\n")
    mqtt_server, redis_server = Mosquitto(tmp_path / "m", tls=tls), Redis(tmp_path / "r", tls=tls)
    mqtt_server.start()
    redis_server.start()
    try:
        options = read_config(cfg)
        mqtt_out = _send(make_transport("mqtt", Endpoint(mqtt_server.conn_str, "t", options)), _messages(2))
        redis_out = _send(make_transport("redis", Endpoint(redis_server.conn_str, "s", options)), _messages(2))
        assert mqtt_out == redis_out == [None, None]
        assert [p["n"] for p, _ in redis_server.entries("s")] == [0, 1]
        # Without the CA the server's certificate is not trusted.
        with pytest.raises(BrokerError):
            make_transport("redis", Endpoint(redis_server.conn_str, "s", {"tls": "true"}, 2)).connect()
    finally:
        mqtt_server.stop()
        redis_server.stop()


def test_mqtt_consumer_helper_survives_a_restart_with_its_session(mosquitto):
    # The restart tests rely on this: messages published while the consumer reconnects are kept for it.
    consumer = MqttConsumer(mosquitto, "pyinfer/restart", client_id="restart-check")
    try:
        transport = make_transport("mqtt", Endpoint(mosquitto.conn_str, "pyinfer/restart"))
        mosquitto.restart_after(0.1)
        assert _send(transport, _messages(3)) == [None] * 3
        assert len(consumer.wait_for(3)) >= 3
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("options", "match"),
    [({"qos": "5"}, "qos"), ({"tls": "maybe"}, "boolean"), ({"keepalive": "soon"}, "integer")],
)
def test_bad_options_are_settings_errors(options, match):
    with pytest.raises(BrokerError, match=match):
        make_transport("mqtt", Endpoint("127.0.0.1:1883", "t", options))


@pytest.mark.parametrize(
    ("conn_str", "expected"),
    [("127.0.0.1:1884", ("127.0.0.1", 1884)), ("broker;9000", ("broker", 9000)), ("broker", ("broker", 1883)),
     ("[::1]:1999", ("::1", 1999))],
)  # fmt: skip
def test_conn_str_takes_host_port_and_nvmsgbroker_host_semicolon_port(conn_str, expected):
    assert Endpoint(conn_str, "t").host_port(1883) == expected


@pytest.mark.parametrize("conn_str", ["", ":1883", "host:port", "host:70000"])
def test_bad_conn_str_is_a_broker_error(conn_str):
    with pytest.raises(BrokerError, match="conn-str"):
        Endpoint(conn_str, "t").host_port(1883)


def test_unknown_proto_is_a_broker_error():
    with pytest.raises(BrokerError, match="proto must be one of file, mqtt, redis, kafka"):
        make_transport("amqp", Endpoint("x", "t"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("out/messages.jsonl", ("file", "out/messages.jsonl", "pyinfer")),
        ("file:///tmp/m.jsonl", ("file", "/tmp/m.jsonl", "pyinfer")),
        ("mqtt://127.0.0.1:1884/cams/front", ("mqtt", "127.0.0.1:1884", "cams/front")),
        ("redis://localhost/dets", ("redis", "localhost", "dets")),
        ("kafka://k1:9092", ("kafka", "k1:9092", "pyinfer")),
    ],
)
def test_publish_targets_split_into_proto_conn_str_and_topic(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize(
    ("target", "match"),
    [("amqp://h/q", "unknown publish target scheme"), ("mqtt:///t", "no host"), ("mqtt://u:p@h/t", "credentials")],
)
def test_bad_publish_targets_are_refused(target, match):
    with pytest.raises(BrokerError, match=match):
        parse_target(target)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(BrokerError, match="does not exist") as missing:
        read_config(tmp_path / "none.ini")
    assert missing.value.missing
    other = tmp_path / "other.ini"
    other.write_text("[something]\nx = 1\n")
    with pytest.raises(BrokerError, match=r"no \[message-broker\] section"):
        read_config(other)


def test_nvmsgbroker_config_files_are_read_with_their_key_names(tmp_path):
    # DeepStream's cfg_mqtt.txt / cfg_redis.txt / cfg_kafka.txt keys, translated to pyinfer's option names.
    cfg = tmp_path / "cfg_mqtt.txt"
    cfg.write_text(
        "[message-broker]\nusername = user\npassword = secret\nclient-id = cam7\nenable-tls = 1\n"
        "tls-cafile = /etc/ca.pem\ntls-certfile = /etc/c.pem\ntls-keyfile = /etc/k.pem\nkeep-alive = 30\n"
        "share-connection = 1\nstreamsize = 10000\n"
        'proto-cfg = "message.timeout.ms=2000;retries=3"\nkeepalive = 45\n'
    )
    assert read_config(cfg) == {
        "username": "user", "password": "secret", "client-id": "cam7", "tls": "1", "ca-file": "/etc/ca.pem",
        "cert-file": "/etc/c.pem", "key-file": "/etc/k.pem", "keepalive": "45", "share-connection": "1",
        "maxlen": "10000", "kafka.message.timeout.ms": "2000", "kafka.retries": "3",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("proto", "unused"),
    [("mqtt", ["maxlen", "share-connection"]), ("redis", ["client-id", "share-connection"]),
     ("kafka", ["client-id", "maxlen", "share-connection"]), ("file", ["client-id", "maxlen", "password",
     "share-connection", "username"])],
)  # fmt: skip
def test_each_protocol_names_the_config_options_it_does_not_read(tmp_path, proto, unused):
    cfg = tmp_path / "cfg.txt"
    cfg.write_text(
        "[message-broker]\nusername = u\npassword = p\nclient-id = cam\nshare-connection = 1\nstreamsize = 5\n"
        "kafka.linger.ms = 5\n"
    )
    conn = str(tmp_path / "out.jsonl") if proto == "file" else "127.0.0.1:1"
    transport = make_transport(proto, Endpoint(conn, "t", read_config(cfg)))
    assert transport.unused_options() == sorted(unused + ([] if proto == "kafka" else ["kafka.linger.ms"]))


@pytest.mark.parametrize("proto", ["mqtt", "redis", "kafka"])
def test_a_broker_that_accepts_and_never_answers_fails_within_the_connect_timeout(proto):
    # Issue #19: Redis waited for its command timeout (10 s) instead of connect-timeout (2 s) here.
    server = SilentServer()
    try:
        transport = make_transport(proto, Endpoint(server.conn_str, "t", connect_timeout_s=2.0))
        t0 = time.monotonic()
        with pytest.raises(BrokerError, match=r"127\.0\.0\.1"):
            transport.connect()
        elapsed = time.monotonic() - t0
        transport.close()
        assert server.accepted >= 1  # the TCP connection was made: the wait was for the broker's answer
        assert elapsed < 6.0, f"{proto} took {elapsed:.1f} s with connect-timeout 2 s"
    finally:
        server.close()


def test_redis_commands_keep_their_own_timeout_after_a_quick_connect(redis_server):
    transport = make_transport("redis", Endpoint(redis_server.conn_str, "s", {"timeout": "7"}, connect_timeout_s=2))
    transport.connect()
    try:
        connection = transport._client.connection
        assert connection.socket_timeout == 7
        assert connection._sock.gettimeout() == 7
        assert transport.publish(_messages(1)) == [None]
    finally:
        transport.close()
