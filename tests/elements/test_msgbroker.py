"""pymsgbroker in real pipelines with real brokers (file, mosquitto, redis-server on loopback).

Messages are read back on the broker side and compared field by field with the metadata that reached the
pipeline's appsink; brokers are stopped and restarted mid-stream while the pipeline keeps running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from brokers.servers import Mosquitto, MqttConsumer, Redis, SilentServer, free_port
from messages.expect import assert_matches
from pyinfer._gi import GLib, Gst
from pyinfer.detections import Detections
from pyinfer.meta.roi import write_detections, write_frame_info

W, H = 64, 48
CAPS = f"video/x-raw,format=RGB,width={W},height={H},framerate=30/1"
FAST_RETRY = "reconnect-interval=0.05 reconnect-max-interval=0.2 connect-timeout=1"


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


def _buffer(i: int) -> Gst.Buffer:
    """Frame i with (i % 4) detections and pyinfer's frame record, as pyinfer would leave it."""
    n = i % 4
    xyxy = np.array([[1.5 + k, 2.25 + i % 7, 20.0 + k, 30.5] for k in range(n)], np.float32).reshape(n, 4)
    dets = Detections(xyxy, np.full(n, 0.75, np.float32), np.arange(n, dtype=np.int32) % 3, labels=("a", "b", "c"))
    buf = Gst.Buffer.new_wrapped(bytes(W * H * 3))
    buf.pts = i * Gst.SECOND // 30
    buf.duration = Gst.SECOND // 30
    write_frame_info(buf, inferred=True, unique_id=3, model_id=0)
    write_detections(buf, dets, unique_id=3, model_id=0)
    return buf


def _pipeline(broker_props: str, conv_props: str = "frame-interval=1 source-id=2", *, lockstep: bool = False):
    # lockstep: appsrc holds at most one frame, so the feeding thread stays with the streaming thread and a
    # broker stopped "before frame i" is stopped before pymsgbroker sees frame i (give or take one).
    src = "appsrc name=src format=time block=true max-buffers=1" if lockstep else "appsrc name=src format=time"
    return Gst.parse_launch(
        f"{src} caps={CAPS} ! pymsgconv {conv_props} ! pymsgbroker name=broker {broker_props} ! appsink name=sink"
    )


def _feed(n: int, events=None, pace_s: float = 0.0):
    """Push n frames; ``events[i]()`` runs before frame i is pushed (e.g. stop the broker)."""

    def feed(pipeline: Gst.Pipeline) -> None:
        src = pipeline.get_by_name("src")
        for i in range(n):
            if events and i in events:
                events[i](pipeline)
            src.emit("push-buffer", _buffer(i))
            if pace_s:
                time.sleep(pace_s)
        src.emit("end-of-stream")

    return feed


def _wait_published(count: int, timeout_s: float = 10.0):
    def wait(pipeline: Gst.Pipeline) -> None:
        broker = pipeline.get_by_name("broker")
        deadline = time.monotonic() + timeout_s
        while broker.get_property("published") < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.get_property("published") >= count, "nothing was published before the outage"

    return wait


def _restart(server, timeout_s: float = 10.0):
    """Start ``server`` again and wait until pymsgbroker has reconnected (so later frames go out live)."""

    def start(pipeline: Gst.Pipeline) -> None:
        server.start()
        broker = pipeline.get_by_name("broker")
        deadline = time.monotonic() + timeout_s
        while broker.get_property("reconnects") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.get_property("reconnects") >= 1, "pymsgbroker did not reconnect"
        # Let the backlog drain first: with a small queue on a loaded machine, frames fed while it drains
        # could otherwise push the outage's survivors out (or be dropped themselves).
        while broker.get_property("queued") > 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    return start


def _by_frame(messages: list[dict]) -> dict[int, dict]:
    """One message per frame number (at-least-once delivery may repeat one; repeats are identical)."""
    out: dict[int, dict] = {}
    for m in messages:
        if m["frame_number"] in out:
            assert out[m["frame_number"]] == m, "a repeated delivery differs from the first"
        out[m["frame_number"]] = m
    return out


def _check_against_metadata(res, received: dict[int, dict]) -> None:
    for frame, msg in received.items():
        assert_matches(msg, res.detections[frame], frame_number=frame, pts_ns=res.pts[frame], source_id=2,
                       inferred=True, size=(W, H))  # fmt: skip


def _counters(broker: Gst.Element) -> dict[str, int]:
    return {k: broker.get_property(k) for k in ("published", "dropped", "failed", "reconnects", "queued")}


def test_file_proto_writes_one_json_line_per_frame_matching_the_model_output(run_pipeline, fixed_model, tmp_path):
    out = tmp_path / "messages.jsonl"
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=4 ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer model-engine={fixed_model} decoder=yolov8 unique-id=7 ! pymsgconv frame-interval=1 source-id=2 ! "
        f"pymsgbroker name=broker proto=file conn-str={out} ! appsink name=sink"
    )
    res = run_pipeline(pipeline)
    assert res.ok, res.error
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["frame_number"] for m in lines] == [0, 1, 2, 3]
    for i, msg in enumerate(lines):
        assert len(res.detections[i]) == 2
        assert_matches(msg, res.detections[i], frame_number=i, pts_ns=res.pts[i], source_id=2, inferred=True,
                       size=(640, 480))  # fmt: skip
    assert _counters(pipeline.get_by_name("broker"))["published"] == 4


def test_mqtt_messages_arrive_and_match_the_metadata(run_pipeline, mosquitto):
    consumer = MqttConsumer(mosquitto, "cams/2")
    try:
        pipeline = _pipeline(f"proto=mqtt conn-str={mosquitto.conn_str} topic=cams/2")
        res = run_pipeline(pipeline, feed=_feed(12))
        assert res.ok, res.error
        received = _by_frame(consumer.wait_for(12))
    finally:
        consumer.close()
    assert sorted(received) == list(range(12))
    _check_against_metadata(res, received)
    assert _counters(pipeline.get_by_name("broker"))["published"] == 12


def test_redis_stream_entries_match_the_metadata_and_carry_the_source_id_as_key(run_pipeline, redis_server):
    pipeline = _pipeline(f"proto=redis conn-str={redis_server.conn_str} topic=dets")
    res = run_pipeline(pipeline, feed=_feed(12))
    assert res.ok, res.error
    entries = redis_server.entries("dets")
    assert all(fields[b"key"] == b"2" for _, fields in entries)
    received = _by_frame([payload for payload, _ in entries])
    assert sorted(received) == list(range(12))
    _check_against_metadata(res, received)


def test_an_mqtt_broker_restart_mid_stream_loses_nothing_and_the_pipeline_keeps_running(run_pipeline, mosquitto):
    consumer = MqttConsumer(mosquitto, "cams/2")
    try:
        pipeline = _pipeline(f"proto=mqtt conn-str={mosquitto.conn_str} topic=cams/2 {FAST_RETRY}", lockstep=True)
        events = {15: lambda p: (_wait_published(10)(p), mosquitto.stop()), 35: _restart(mosquitto)}
        res = run_pipeline(pipeline, feed=_feed(50, events, pace_s=0.01))
        assert res.ok, res.error
        received = _by_frame(consumer.wait_for(50))
    finally:
        consumer.close()
    counters = _counters(pipeline.get_by_name("broker"))
    assert len(res.pts) == 50  # every frame went through while the broker was away
    assert sorted(received) == list(range(50)), counters
    _check_against_metadata(res, received)
    assert counters["reconnects"] >= 1
    assert (counters["dropped"], counters["failed"], counters["queued"]) == (0, 0, 0)
    assert any("no connection to mqtt" in w for w in res.warnings), res.warnings


def test_losses_during_a_redis_outage_with_a_small_queue_are_counted_and_reported(run_pipeline, redis_server):
    pipeline = _pipeline(f"proto=redis conn-str={redis_server.conn_str} topic=dets queue-size=5 {FAST_RETRY}",
                         lockstep=True)  # fmt: skip
    events = {10: lambda p: (_wait_published(8)(p), redis_server.stop()), 40: _restart(redis_server)}
    res = run_pipeline(pipeline, feed=_feed(50, events, pace_s=0.005))
    assert res.ok, res.error
    counters = _counters(pipeline.get_by_name("broker"))
    received = _by_frame([payload for payload, _ in redis_server.entries("dets")])
    _check_against_metadata(res, received)
    assert counters["dropped"] > 0
    assert len(received) + counters["dropped"] + counters["failed"] == 50, counters
    # drop-policy=oldest: of the frames queued during the outage, the newest (about queue-size) survived...
    survivors = sorted(f for f in received if 10 <= f < 40)
    assert survivors[-1] == 39 and 3 <= len(survivors) <= 7, survivors
    assert set(range(40, 50)) <= received.keys()  # ...and once reconnected, nothing more was lost
    assert any("queue full" in w for w in res.warnings), res.warnings
    assert any(f"{counters['dropped']} message(s) lost" in w for w in res.warnings), res.warnings


@pytest.mark.parametrize("proto", ["mqtt", "redis", "kafka"])
def test_an_unreachable_broker_at_start_is_an_error_without_a_hang(run_pipeline, proto):
    t0 = time.monotonic()
    res = run_pipeline(_pipeline(f"proto={proto} conn-str=127.0.0.1:{free_port()} connect-timeout=1"),
                       timeout_s=30, feed=_feed(3))  # fmt: skip
    assert res.error is not None
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.OPEN_WRITE)
    assert "cannot connect to" in res.error.message
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("proto", ["mqtt", "redis", "kafka"])
def test_a_broker_that_never_answers_is_an_error_within_the_connect_timeout(run_pipeline, proto):
    # Issue #19: with proto=redis, set_state blocked 10 s (the command timeout) with connect-timeout=2.
    server = SilentServer()
    try:
        t0 = time.monotonic()
        res = run_pipeline(_pipeline(f"proto={proto} conn-str={server.conn_str} connect-timeout=2"), timeout_s=30,
                           feed=_feed(3))  # fmt: skip
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert res.error is not None
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.OPEN_WRITE), res.error.message
    assert f"cannot connect to {proto}" in res.error.message
    assert elapsed < 6.0, f"{proto} took {elapsed:.1f} s with connect-timeout=2"


def test_with_retry_an_unreachable_broker_warns_and_delivers_once_it_comes_up(run_pipeline, tmp_path):
    server = Redis(tmp_path / "late")  # comes up while the pipeline runs
    pipeline = _pipeline(f"proto=redis conn-str={server.conn_str} topic=dets on-connect-error=retry {FAST_RETRY}")
    try:
        res = run_pipeline(pipeline, feed=_feed(20, {10: lambda p: server.start()}, pace_s=0.01))
        assert res.ok, res.error
        received = _by_frame([payload for payload, _ in server.entries("dets")])
    finally:
        server.stop()
    assert sorted(received) == list(range(20))
    _check_against_metadata(res, received)
    assert any("no connection to redis" in w for w in res.warnings), res.warnings
    assert _counters(pipeline.get_by_name("broker"))["dropped"] == 0


def test_with_retry_and_no_broker_at_all_the_stream_ends_and_every_message_counts_as_dropped(run_pipeline):
    pipeline = _pipeline(f"proto=mqtt conn-str=127.0.0.1:{free_port()} on-connect-error=retry flush-timeout=0.2 "
                         f"{FAST_RETRY}")  # fmt: skip
    t0 = time.monotonic()
    res = run_pipeline(pipeline, feed=_feed(8))
    assert res.ok, res.error
    assert time.monotonic() - t0 < 10
    counters = _counters(pipeline.get_by_name("broker"))
    assert (counters["published"], counters["dropped"]) == (0, 8)
    assert any("8 still queued" in w or "8 message(s) lost" in w for w in res.warnings), res.warnings


@pytest.mark.parametrize(
    ("props", "code", "text"),
    [
        ("conn-str=h:1", Gst.ResourceError.SETTINGS, "proto must be one of file, mqtt, redis, kafka: it is not set"),
        ('proto=mqtt conn-str=""', Gst.ResourceError.SETTINGS, "conn-str is empty"),
        ("proto=redis conn-str=h:99999", Gst.ResourceError.SETTINGS, "port"),
        ("proto=mqtt conn-str=h:1 config=/nonexistent/broker.ini", Gst.ResourceError.NOT_FOUND, "does not exist"),
    ],
)
def test_bad_settings_are_errors_at_start(run_pipeline, props, code, text):
    res = run_pipeline(_pipeline(props), timeout_s=20, feed=_feed(1))
    assert res.error is not None
    assert res.error.matches(Gst.ResourceError.quark(), code), res.error
    assert text in res.error.message


@pytest.mark.parametrize("props", ["proto=amqp", "proto=", "drop-policy=random", "on-connect-error=ignore"])
def test_a_value_outside_a_choice_is_refused_when_set(props):
    name = props.split("=")[0]
    with pytest.raises(GLib.Error, match=f'could not set property "{name}"'):
        _pipeline(f"conn-str=x {props}")


def test_a_missing_client_library_is_a_library_error_naming_the_package(run_pipeline, monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # makes `import paho.mqtt.client` fail
    res = run_pipeline(_pipeline("proto=mqtt conn-str=127.0.0.1:1"), timeout_s=20, feed=_feed(1))
    assert res.error is not None
    assert res.error.matches(Gst.LibraryError.quark(), Gst.LibraryError.INIT)
    assert "paho-mqtt" in res.error.message


def test_buffers_pass_through_and_buffers_without_payloads_publish_nothing(run_pipeline, tmp_path):
    out = tmp_path / "m.jsonl"
    res = run_pipeline(
        f"videotestsrc num-buffers=5 ! {CAPS} ! pymsgbroker name=broker proto=file conn-str={out} ! appsink name=sink"
    )
    assert res.ok, res.error
    assert res.pts == [i * Gst.SECOND // 30 for i in range(5)]
    assert out.read_text() == ""


def test_credentials_come_from_the_config_file_property(run_pipeline, tmp_path):
    server = Mosquitto(tmp_path / "auth", users={"cam": "s3cret"})
    server.start()
    good, bad = tmp_path / "good.ini", tmp_path / "bad.ini"
    good.write_text("[message-broker]\nusername = cam\npassword = s3cret\n")
    bad.write_text("[message-broker]\nusername = cam\npassword = nope\n")
    try:
        consumer_ok = _pipeline(f"proto=mqtt conn-str={server.conn_str} config={good}")
        res = run_pipeline(consumer_ok, feed=_feed(3))
        assert res.ok, res.error
        assert _counters(consumer_ok.get_by_name("broker"))["published"] == 3
        res = run_pipeline(_pipeline(f"proto=mqtt conn-str={server.conn_str} config={bad}"), feed=_feed(1))
        assert res.error is not None
        assert "not authorized" in res.error.message.lower()
    finally:
        server.stop()


def test_config_options_the_protocol_does_not_read_are_named_in_a_warning(run_pipeline, tmp_path):
    # Issue #18: nvmsgbroker keys with no counterpart (share-connection) were ignored silently.
    out, cfg = tmp_path / "m.jsonl", tmp_path / "cfg_file.txt"
    cfg.write_text("[message-broker]\nfsync = true\nshare-connection = 1\npartition-key = sensor.id\n")
    res = run_pipeline(
        f"videotestsrc num-buffers=2 ! {CAPS} ! pymsgbroker name=broker proto=file conn-str={out} config={cfg} ! "
        "appsink name=sink"
    )
    assert res.ok, res.error
    assert len(res.pts) == 2
    assert any(f"config file {cfg}: partition-key, share-connection not used by proto file" in w
               for w in res.warnings), res.warnings  # fmt: skip


def test_gst_launch_runs_the_documented_pipeline_through_the_loader_shims(fixed_model, tmp_path):
    out = tmp_path / "m.jsonl"
    env_script = f'eval "$({sys.executable} -m pyinfer.cli env)" && env -0'
    raw = subprocess.run(["bash", "-c", env_script], capture_output=True, check=True, timeout=60).stdout
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    env["GST_REGISTRY"] = str(tmp_path / "registry.bin")
    proc = subprocess.run(
        ["gst-launch-1.0", "videotestsrc", "num-buffers=3", "!", "video/x-raw,format=RGB,width=320,height=240", "!",
         "pyinfer", f"model-engine={fixed_model}", "decoder=yolov8", "!", "pymsgconv", "frame-interval=1", "!",
         "pymsgbroker", "proto=file", f"conn-str={out}", "!", "fakesink"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["frame_number"] for m in messages] == [0, 1, 2]
    assert all(len(m["objects"]) == 2 for m in messages)


def test_a_connection_lost_after_stop_is_reported_with_the_file_path_and_counted_once(tmp_path):
    # Issue #19: a warning from the worker after stop named the protocol ("no connection to file: ...")
    # instead of the file.
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads: the pipe fills up
    pipeline = _pipeline(f"proto=file conn-str={fifo} connect-timeout=0.1 flush-timeout=0")
    sink = pipeline.get_by_name("sink")
    sink.set_property("sync", False)
    sink.set_property("emit-signals", True)  # appsink posts EOS once its samples were pulled
    sink.connect("new-sample", lambda appsink: (appsink.emit("pull-sample"), Gst.FlowReturn.OK)[1])
    broker, bus = pipeline.get_by_name("broker"), pipeline.get_bus()
    n = 400  # messages of a few hundred bytes: far more than the pipe holds, so the worker's write blocks
    try:
        pipeline.set_state(Gst.State.PLAYING)
        _feed(n)(pipeline)
        msg = bus.timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        assert msg is not None and msg.type == Gst.MessageType.EOS
        t0 = time.monotonic()
        pipeline.set_state(Gst.State.READY)  # stop gives up on the blocked worker
        assert time.monotonic() - t0 < 5.0
        os.close(reader)  # the blocked write fails: the worker, outliving stop, reports the lost connection
        reader = None
        texts = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = bus.timed_pop_filtered(int(0.1 * Gst.SECOND), Gst.MessageType.WARNING)
            if msg is not None:
                texts.append(msg.parse_warning()[0].message)
            if (
                any("no connection" in t for t in texts)
                and broker.get_property("published") + broker.get_property("dropped") + broker.get_property("failed")
                >= n
            ):
                break
        lost = [t for t in texts if "no connection" in t]
        assert lost, texts
        assert f"no connection to file {fifo}:" in lost[0], lost[0]
        counters = _counters(broker)
        assert counters["published"] + counters["dropped"] + counters["failed"] == n, counters
    finally:
        pipeline.set_state(Gst.State.NULL)
        if reader is not None:
            os.close(reader)
