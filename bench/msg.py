#!/usr/bin/env python
"""Messaging benchmark: per-frame cost of pymsgconv / pymsgbroker at 100 objects per frame.

Variants (each repeated ``--reps`` times, interleaved, medians reported):

- ``build_frame``, ``build_object``: ``MessageBuilder.build`` alone on 100 Detections (one frame message;
  100 object messages), no GStreamer;
- ``read_detections``: ``pyinfer.meta.read_detections`` on a buffer with 100 ROI metas (what pymsgconv
  reads before building);
- ``pipe_identity``: ``appsrc ! identity ! fakesink``, the harness;
- ``pipe_msgconv``: ``appsrc ! pymsgconv frame-interval=1 ! fakesink``;
- ``pipe_msgconv_object``: the same with ``message-per=object`` (100 messages per frame);
- ``pipe_file``, ``pipe_mqtt``, ``pipe_redis``: ``... ! pymsgconv ! pymsgbroker proto=... ! fakesink``, with
  mosquitto / redis-server started on loopback for the run (skipped, and said so, when not installed);
- ``publisher_file``, ``publisher_mqtt``, ``publisher_redis``: the publisher alone (no GStreamer): frame
  messages of 100 objects queued, then the worker started and timed until all were acknowledged; the
  broker side's capacity in messages/s.

Pipeline timing: buffers (each with 100 detection ROI metas and pyinfer's frame record, 320x240 RGB) are
built before PLAYING and queued in appsrc with no other reference held, so the elements see them as they
would in a real pipeline (writable, refcount 1). A pad probe on fakesink's sink pad times first to last
buffer: ``us_per_frame`` is the streaming-thread cost per frame. For the brokers, ``publish_s`` is the time
from the first buffer until every message was acknowledged (``published`` reached the count), and
``messages_per_s`` follows from it.

Usage: python bench/msg.py [--quick] [--out PATH] [--reps N] [--frames N]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import common
import numpy as np

OBJECTS = 100
W, H = 320, 240


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few frames, 2 reps (numbers not meaningful)")
    p.add_argument("--out", type=Path, default=None, help="JSON result path (default bench/results/msg-DATE.json)")
    p.add_argument("--reps", type=int, default=None, help="repeats per variant (default 5, quick 2)")
    p.add_argument("--frames", type=int, default=None, help="frames per pipeline run (default 150, quick 20)")
    return p.parse_args(argv)


def detections(seed: int = 0):
    from pyinfer.detections import Detections

    rng = np.random.default_rng(seed)
    lt = rng.uniform(0, [W - 20, H - 20], (OBJECTS, 2)).astype(np.float32)
    wh = rng.uniform(4, 20, (OBJECTS, 2)).astype(np.float32)
    extra = {"unique_id": np.full(OBJECTS, 15), "model_id": np.zeros(OBJECTS, np.int64),
             "roi_id": np.arange(OBJECTS)}  # fmt: skip
    return Detections(np.concatenate([lt, lt + wh], 1), rng.random(OBJECTS).astype(np.float32),
                      rng.integers(0, 3, OBJECTS).astype(np.int32), labels=("a", "b", "c"), extra=extra,
                      tracker_id=np.arange(OBJECTS, dtype=np.uint64))  # fmt: skip


def time_calls(fn, n: int) -> float:
    """Microseconds per call over ``n`` calls (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def make_buffers(n: int) -> list:
    from pyinfer._gi import Gst
    from pyinfer.meta.roi import write_detections, write_frame_info

    dets = detections()
    out = []
    for i in range(n):
        buf = Gst.Buffer.new_allocate(None, W * H * 3, None)
        buf.pts = i * Gst.SECOND // 30
        buf.duration = Gst.SECOND // 30
        write_frame_info(buf, inferred=True, unique_id=15)
        write_detections(buf, dets, unique_id=15)
        out.append(buf)
    return out


def run_pipeline(middle: str, n: int, expect_published: int = 0, timeout_s: float = 120.0) -> dict:
    """appsrc (n prepared buffers) ! middle ! fakesink; times buffers at the sink and, with a broker named
    ``broker``, until it has published ``expect_published`` messages."""
    from pyinfer._gi import Gst

    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},framerate=30/1 ! {middle} ! "
        "fakesink name=sink sync=false"
    )
    stamps: list[float] = []

    def probe(_pad, _info):
        stamps.append(time.perf_counter())
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    src = pipeline.get_by_name("src")
    src.set_property("max-bytes", 0)
    bufs = make_buffers(n)
    for buf in bufs:
        src.emit("push-buffer", buf)
    del bufs, buf  # appsrc holds the only reference now, as in a live pipeline
    src.emit("end-of-stream")
    broker = pipeline.get_by_name("broker")
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    try:
        msg = bus.timed_pop_filtered(int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR)
        if msg is None or msg.type == Gst.MessageType.ERROR:
            raise RuntimeError(f"{middle}: {msg.parse_error()[0].message if msg else 'timeout'}")
        done = time.perf_counter()
        result = {"us_per_frame": (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e6, "frames": len(stamps)}
        if broker is not None:
            published = broker.get_property("published")
            if published < expect_published:
                raise RuntimeError(f"{middle}: published {published} of {expect_published}")
            # EOS is held until the queue drained, so EOS time is when the last message was acknowledged
            result["publish_s"] = done - stamps[0]
            result["messages_per_s"] = published / (done - stamps[0])
            result["dropped"] = broker.get_property("dropped")
        return result
    finally:
        pipeline.set_state(Gst.State.NULL)


def publish_rate(proto: str, conn_str: str, payload: bytes, n: int) -> float:
    """Messages/s the publisher sends and gets acknowledged, from a full queue, without GStreamer."""
    from pyinfer.brokers import Endpoint, Message, Publisher, make_transport

    pub = Publisher(make_transport(proto, Endpoint(conn_str, "bench")), queue_size=n)
    pub.connect_now()
    for _ in range(n):
        pub.put(Message(payload, "0"))
    t0 = time.perf_counter()
    pub.start()
    if not pub.drain(120):
        raise RuntimeError(f"{proto}: {pub.queued} messages still queued")
    elapsed = time.perf_counter() - t0
    pub.stop(1.0)
    return n / elapsed


def start_servers(tmp: Path) -> dict:
    """mosquitto and redis-server on loopback, if installed (else none; the bench says so)."""
    from brokers.servers import Mosquitto, Redis

    servers = {}
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        servers["mqtt"] = Mosquitto(tmp / "mosquitto")
    if shutil.which("redis-server"):
        servers["redis"] = Redis(tmp / "redis")
    for server in servers.values():
        server.start()
    return servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    frames = args.frames or (20 if args.quick else 150)
    import pyinfer
    from pyinfer._gi import Gst
    from pyinfer.messages import FrameHeader, MessageBuilder
    from pyinfer.meta import read_detections

    pyinfer.register()
    dets = detections()
    builder = MessageBuilder()
    header = FrameHeader(0, 0, 0, time.time_ns(), W, H, True)
    (probe_buf,) = make_buffers(1)
    n_calls = 50 if args.quick else 300
    micro = {
        "build_frame": lambda: time_calls(lambda: builder.build(header, dets), n_calls),
        "build_object": lambda: time_calls(lambda: builder.build(header, dets, per_object=True), n_calls // 3),
        "read_detections": lambda: time_calls(lambda: read_detections(probe_buf), n_calls),
    }
    with tempfile.TemporaryDirectory(prefix="pyinfer-msg-bench-") as tmp:
        servers = start_servers(Path(tmp))
        pipes = {
            "pipe_identity": ("identity", 0),
            "pipe_msgconv": ("pymsgconv frame-interval=1", 0),
            "pipe_msgconv_object": ("pymsgconv frame-interval=1 message-per=object", 0),
            "pipe_file": (
                f"pymsgconv frame-interval=1 ! pymsgbroker name=broker proto=file conn-str={tmp}/m.jsonl "
                f"queue-size=100000 flush-timeout=60",
                frames,
            ),
        }
        for proto, server in servers.items():
            pipes[f"pipe_{proto}"] = (f"pymsgconv frame-interval=1 ! pymsgbroker name=broker proto={proto} "
                                      f"conn-str={server.conn_str} topic=bench queue-size=100000 flush-timeout=60",
                                      frames)  # fmt: skip
        payload = builder.build(header, dets)[0].encode()
        n_msgs = 50 if args.quick else 500
        publishers = {"publisher_file": ("file", f"{tmp}/p.jsonl")}
        publishers.update({f"publisher_{proto}": (proto, server.conn_str) for proto, server in servers.items()})
        runs: dict[str, list] = {name: [] for name in [*micro, *pipes, *publishers]}
        try:
            for rep in range(reps):
                for name, fn in micro.items():
                    runs[name].append(fn())
                for name, (middle, expect) in pipes.items():
                    runs[name].append(run_pipeline(middle, frames, expect))
                for name, (proto, conn_str) in publishers.items():
                    runs[name].append(publish_rate(proto, conn_str, payload, n_msgs))
                print(f"rep {rep + 1}/{reps} done", file=sys.stderr)
        finally:
            for server in servers.values():
                server.stop()
    variants: dict[str, dict] = {}
    for name, values in runs.items():
        if name in micro:
            variants[name] = {"unit": "us per frame", **common.summarize(values)}
            continue
        if name in publishers:
            variants[name] = {"unit": "messages per s (frame messages, 100 objects)", **common.summarize(values)}
            continue
        v = {"unit": "us per frame", **common.summarize([r["us_per_frame"] for r in values])}
        if "publish_s" in values[0]:
            v["messages_per_s"] = common.summarize([r["messages_per_s"] for r in values])
            v["dropped"] = sum(r["dropped"] for r in values)
        variants[name] = v
    base = variants["pipe_identity"]["median"]
    added = {name: round(v["median"] - base, 1) for name, v in variants.items() if name.startswith("pipe_")}
    result = {
        "benchmark": "msg",
        "command": common.command_line(),
        "date_utc": common.utc_now(),
        "machine": common.machine_info(),
        "settings": {
            "objects_per_frame": OBJECTS,
            "frame_size": [W, H],
            "frames_per_run": frames,
            "reps": reps,
            "quick": args.quick,
            "brokers_started": sorted(servers),
            "gstreamer": Gst.version_string(),
        },
        "variants": variants,
        "added_us_per_frame_over_identity": added,
        "message_bytes": {
            "frame": len(builder.build(header, dets)[0].encode()),
            "object": len(builder.build(header, dets, per_object=True)[0].encode()),
        },
    }
    out = args.out or common.RESULTS_DIR / f"msg-{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}.json"
    common.write_json(out, result)
    for name, v in variants.items():
        extra = f"  {v['messages_per_s']['median']:.0f} msg/s" if "messages_per_s" in v else ""
        unit = "msg/s" if name.startswith("publisher_") else "us/frame"
        print(f"{name:22s} {statistics.median(v['runs']):9.1f} {unit}{extra}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
