"""`pyinfer detect` with several inputs at once: files, a directory of images, RTSP streams (issue #13 item 2)."""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyinfer.jsonl import read_jsonl

PYINFER = [sys.executable, "-m", "pyinfer.cli"]


def _scene(out, frames: int, seed: int, width: int, height: int):
    args = ["--frames", str(frames), "--seed", str(seed), "--width", str(width), "--height", str(height)]
    subprocess.run([*PYINFER, "scene", *args, "--out", str(out)], check=True, capture_output=True, timeout=120)
    return out / "video.mp4"


def _detect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*PYINFER, "detect", *args, "--quiet"], capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two small scenes of different sizes and lengths, and each one's detections when run alone."""
    root = tmp_path_factory.mktemp("multi")
    a, b = _scene(root / "a", 10, 11, 320, 240), _scene(root / "b", 6, 12, 256, 192)
    alone = {}
    for video in (a, b):
        det = video.parent / "alone.jsonl"
        out = _detect(str(video), "--json", str(det), "--track")
        assert out.returncode == 0, out.stderr
        alone[video] = list(read_jsonl(det))
    return a, b, alone


def _objects(records):
    return [[(o["bbox"], o["class_id"], o["confidence"]) for o in r["objects"]] for r in records]


def test_two_files_at_once_give_each_the_detections_it_gets_alone(videos, tmp_path):
    a, b, alone = videos
    messages = tmp_path / "messages-{stream}.jsonl"
    out = _detect(str(a), str(b), "--json", str(tmp_path / "{stream}.jsonl"), "--track", "--batch-size", "4",
                  "--publish", str(messages))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"frames: 16  time: .* frames/s: [\d.]+ .* streams: 2", out.stdout), out.stdout
    assert re.search(rf"stream 0 {re.escape(str(a))}: frames: 10  frames/s: [\d.]+", out.stdout), out.stdout
    assert re.search(rf"stream 1 {re.escape(str(b))}: frames: 6  frames/s: [\d.]+", out.stdout), out.stdout
    for index, video in enumerate((a, b)):
        records = list(read_jsonl(tmp_path / f"{index}.jsonl"))
        assert [r["frame"] for r in records] == list(range(len(alone[video])))
        assert {r["stream"] for r in records} == {index}
        assert _objects(records) == _objects(alone[video])  # batched with the other stream: the same detections
        assert [[o["track_id"] for o in r["objects"]] for r in records] == [
            [o["track_id"] for o in r["objects"]] for r in alone[video]
        ]  # a tracker per stream: the ids it gets alone
        lines = Path(str(messages).replace("{stream}", str(index))).read_text().splitlines()
        sent = [json.loads(line) for line in lines]
        assert len(sent) == len(records)
        assert {m["source_id"] for m in sent} == {index}


def test_one_json_file_for_several_inputs_marks_each_record_with_its_stream(videos, tmp_path):
    a, b, alone = videos
    det = tmp_path / "all.jsonl"
    out = _detect(str(a), str(b), "--json", str(det), "--track")
    assert out.returncode == 0, out.stderr
    records = list(read_jsonl(det))
    for index, video in enumerate((a, b)):
        mine = [r for r in records if r["stream"] == index]
        assert [r["frame"] for r in mine] == list(range(len(alone[video])))
        assert _objects(mine) == _objects(alone[video])


def test_a_directory_of_images_names_each_file_in_its_records(videos, tmp_path):
    a, b, alone = videos
    images = tmp_path / "images"
    images.mkdir()
    # PNG keeps the decoded pixels: the images are the video's frames, so the detections must match.
    launch = f"filesrc location={b} ! decodebin ! videoconvert ! pngenc ! multifilesink location={images}/img_%04d.png"
    subprocess.run(["gst-launch-1.0", "-q", *launch.split()], check=True, timeout=60)
    (images / "notes.txt").write_text("not an image")
    out = _detect(str(images), str(a), "--json", str(tmp_path / "out") + "/", "--track")
    assert out.returncode == 1, out.stdout  # the output directory does not exist: checked before running
    assert "cannot write --json" in out.stderr
    (tmp_path / "out").mkdir()
    out = _detect(str(images), str(a), "--json", str(tmp_path / "out"), "--track")
    assert out.returncode == 0, out.stderr
    records = list(read_jsonl(tmp_path / "out" / "0-images.jsonl"))
    assert [r["file"] for r in records] == [f"img_{i:04d}.png" for i in range(6)]
    assert _objects(records) == _objects(alone[b])
    assert len(list(read_jsonl(tmp_path / "out" / "1-video.jsonl"))) == 10


def test_an_input_that_cannot_be_read_is_named_before_anything_runs(videos, tmp_path):
    a, _b, _alone = videos
    out = _detect(str(a), str(tmp_path / "nope.mp4"), str(tmp_path / "*.png"), timeout=60)
    assert out.returncode == 1
    assert f"input {tmp_path / 'nope.mp4'} does not exist" in out.stderr
    out = _detect(str(a), str(tmp_path / "*.png"), timeout=60)
    assert out.returncode == 1
    assert f"input {tmp_path / '*.png'} matches no file" in out.stderr
    out = _detect(str(a), str(a), "--video", str(tmp_path / "one.mp4"), timeout=60)
    assert out.returncode == 1
    assert "with several inputs, give a directory or a pattern" in out.stderr


class _RtspServer:
    """GstRtspServer on 127.0.0.1, in a thread of this process: ``/NAME`` sends an MP4's H.264 as it is (RTP).

    A mount added with ``ends=False`` is a camera that never ends: its end is unknown (its range is ``npt=0-``,
    so the client's jitterbuffer expects no end) and the end of its clip is dropped before the payloader (so
    the server sends no BYE): it just goes quiet once the clip is sent. :meth:`sent_all` tells when the
    server has sent every packet of a mount's clip (to its latest client).
    """

    def __init__(self) -> None:
        import gi

        gi.require_version("GstRtspServer", "1.0")  # Debian: gir1.2-gst-rtsp-server-1.0
        from gi.repository import GLib, GstRtspServer

        from pyinfer._gi import ensure_init

        ensure_init()
        self.context = GLib.MainContext.new()
        self.server = GstRtspServer.RTSPServer(address="127.0.0.1", service="0")  # any free port
        self.media: dict[str, dict] = {}  # mount -> the latest media's {"paid": bytes, "eos": bool, "sinks": [...]}
        self.server.attach(self.context)
        self.port = self.server.get_bound_port()
        self.loop = GLib.MainLoop.new(self.context, False)
        self.thread = threading.Thread(target=self.loop.run, name="rtsp-server", daemon=True)
        self.thread.start()

    def add(self, name: str, video: Path, *, ends: bool) -> str:
        """Serve ``video`` at ``/name``; its URL."""
        from gi.repository import GstRtspServer

        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f'( filesrc location="{video}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )')
        factory.connect("media-configure", self._configure, name, ends)
        if not ends:
            factory.set_media_gtype(_endless_media())
        self.server.get_mount_points().add_factory(f"/{name}", factory)
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def _configure(self, factory, media, name: str, ends: bool) -> None:
        from pyinfer._gi import Gst

        state: dict = {"paid": 0, "eos": False, "sinks": []}
        self.media[name] = state
        pay = media.get_element().get_by_name("pay0")

        def paid(pad, info):
            if info.type & Gst.PadProbeType.BUFFER_LIST:
                lst = info.get_buffer_list()
                state["paid"] += sum(lst.get(i).get_size() for i in range(lst.length()))
            else:
                state["paid"] += info.get_buffer().get_size()
            return Gst.PadProbeReturn.OK

        def end(pad, info):
            if info.get_event().type != Gst.EventType.EOS:
                return Gst.PadProbeReturn.OK
            state["eos"] = True
            return Gst.PadProbeReturn.OK if ends else Gst.PadProbeReturn.DROP

        def sink_added(bin, sub_bin, element):
            if element.get_factory().get_name() == "multiudpsink" and element.get_property("sync"):
                state["sinks"].append(element)  # the RTP sink (RTCP's does not sync)

        pay.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, paid)
        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, end)
        media.get_element().get_parent().connect("deep-element-added", sink_added)

    def sent_all(self, name: str) -> bool:
        """Every RTP packet of the clip has left the server (towards the latest client of ``/name``)."""
        state = self.media.get(name)
        if state is None or not state["eos"]:
            return False
        return any(sink.get_property("bytes-served") >= state["paid"] for sink in state["sinks"])

    def close(self) -> None:
        self.loop.quit()
        self.thread.join(timeout=10)


@functools.cache
def _endless_media():
    """A GstRTSPMedia whose end is unknown, as a camera's: its range is ``npt=0-``, not the clip's length."""
    from gi.repository import GstRtspServer

    class EndlessMedia(GstRtspServer.RTSPMedia):
        def do_query_stop(self, *stop):  # no stop known (the gint64* comes in as an argument on some versions)
            return False if stop else (False, -1)

    return EndlessMedia


@pytest.fixture(scope="module")
def rtsp():
    server = _RtspServer()
    yield server
    server.close()


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _wait(condition, timeout: float) -> bool:
    """Poll ``condition`` every 0.05 s until it holds (True) or ``timeout`` s passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_an_rtsp_camera_and_a_file_run_until_ctrl_c_and_every_frame_received_is_finished(videos, rtsp, tmp_path):
    a, b, alone = videos
    url = rtsp.add("cam", a, ends=False)
    proc = subprocess.Popen([*PYINFER, "detect", url, str(b), "--json", str(tmp_path / "{stream}.jsonl"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    live, other = tmp_path / "0.jsonl", tmp_path / "1.jsonl"
    try:
        # The camera has sent its 10 frames and goes quiet (no end); detect has written some of them (its
        # decoder holds the last ones back for reordering) and all of the file's.
        def ready() -> bool:
            return rtsp.sent_all("cam") and _lines(live) > 0 and _lines(other) == 6

        assert _wait(lambda: proc.poll() is not None or ready(), 180)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "passed on no end of stream" not in stderr  # the EOS went in at rtspsrc and through, not forced at pyinfer
    records = list(read_jsonl(live))
    assert _objects(records) == _objects(alone[a])  # every frame received, the ones the decoder held too, over RTP
    assert re.search(r"stream 0 rtsp://127\.0\.0\.1:\d+/cam: frames: 10  frames/s: [\d.]+", stdout), stdout + stderr
    assert _objects(read_jsonl(other)) == _objects(alone[b])


def test_an_rtsp_stream_whose_server_ends_it_ends_like_a_file_with_every_frame(videos, rtsp, tmp_path):
    a, b, alone = videos
    url = rtsp.add("clip", a, ends=True)  # the server sends RTCP BYE at the clip's end, maybe before its last frames
    out = _detect(url, str(b), "--json", str(tmp_path / "{stream}.jsonl"), timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _objects(read_jsonl(tmp_path / "0.jsonl")) == _objects(alone[a])
    assert re.search(r"stream 0 rtsp://127\.0\.0\.1:\d+/clip: frames: 10  frames/s: [\d.]+", out.stdout), out.stdout
    assert _objects(read_jsonl(tmp_path / "1.jsonl")) == _objects(alone[b])
