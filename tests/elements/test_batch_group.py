"""batch-group: several streams' pyinfer elements sharing one model and one batch (issue #13).

Every buffer of every stream out exactly once, in order, with the detections that stream gets alone; one
model build; batches that mix streams; streams of different sizes; one stream ending early or stalling;
a member asking for another model.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pyinfer._gi import Gst, structure
from pyinfer.elements import _group
from pyinfer.meta import read_detections, read_frame_info
from pyinfer.scene import Scene
from support import push_frames


def _frames(seed: int, n: int, w: int = 320, h: int = 256) -> list[np.ndarray]:
    s = Scene(seed, w, h)
    return [s.frame(i)[0] for i in range(n)]


class Streams:
    """``appsrc name=srcI ! pyinfer name=infI <props> ! appsink name=sinkI`` for each stream, in one pipeline."""

    def __init__(self, model, n: int, props: str) -> None:
        desc = " ".join(
            f"appsrc name=src{i} format=time ! pyinfer name=inf{i} model-engine={model.path} {props} ! "
            f"appsink name=sink{i} sync=false emit-signals=true"
            for i in range(n)
        )
        self.pipeline = Gst.parse_launch(desc)
        self.n = n
        self.out: list[list[tuple[int, object, object]]] = [[] for _ in range(n)]
        self.errors: list[str] = []
        for i in range(n):
            self.pipeline.get_by_name(f"sink{i}").connect("new-sample", self._on_sample, i)

    def _on_sample(self, sink, i):
        buf = sink.emit("pull-sample").get_buffer()
        self.out[i].append((buf.pts, read_detections(buf), read_frame_info(buf)))
        return Gst.FlowReturn.OK

    def run(self, feeds: dict[int, list[np.ndarray]], timeout_s: float = 120, eos: bool = True) -> Gst.Message | None:
        bus = self.pipeline.get_bus()
        self.pipeline.set_state(Gst.State.PLAYING)
        for i, frames in feeds.items():
            src = self.pipeline.get_by_name(f"src{i}")
            if eos:
                push_frames(src, frames)
            else:
                _push_no_eos(src, frames)
        if not eos:
            return None
        msg = bus.timed_pop_filtered(int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR)
        return msg

    def run_lockstep(self, feeds: dict[int, list[np.ndarray]], timeout_s: float = 120) -> Gst.Message | None:
        """Push the streams' frames round-robin through appsrcs that hold one buffer (and block): every
        stream keeps within a frame or two of the others, as live cameras do, whatever the scheduling."""
        srcs = {i: self.pipeline.get_by_name(f"src{i}") for i in feeds}
        for i, src in srcs.items():
            h, w, _ = feeds[i][0].shape
            src.set_property("caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},"
                                                          "framerate=30/1"))  # fmt: skip
            src.set_property("block", True)
            src.set_property("max-buffers", 1)
        self.pipeline.set_state(Gst.State.PLAYING)
        for k in range(max(len(f) for f in feeds.values())):
            for i, frames in feeds.items():
                if k < len(frames):
                    buf = Gst.Buffer.new_wrapped(frames[k].tobytes())
                    buf.pts, buf.duration = k * Gst.SECOND // 30, Gst.SECOND // 30
                    srcs[i].emit("push-buffer", buf)
        for src in srcs.values():
            src.emit("end-of-stream")
        return self.pipeline.get_bus().timed_pop_filtered(
            int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
        )

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


def _push_no_eos(appsrc, frames) -> None:
    h, w, _ = frames[0].shape
    appsrc.set_property("caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate=30/1"))
    for i, f in enumerate(frames):
        buf = Gst.Buffer.new_wrapped(f.tobytes())
        buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
        appsrc.emit("push-buffer", buf)


def _alone(model, frames) -> list:
    """The detections of one stream through a pyinfer of its own (batch-size 1)."""
    s = Streams(model, 1, "batch-size=1")
    try:
        msg = s.run({0: frames})
        assert msg is not None and msg.type == Gst.MessageType.EOS
    finally:
        s.stop()
    return [d for _, d, _ in s.out[0]]


@pytest.fixture
def count_builds(monkeypatch):
    from pyinfer.engine import Engine

    built: list[str] = []
    real = Engine.build.__func__

    def build(cls, cfg, *args, **kwargs):
        built.append(cfg.model)
        return real(cls, cfg, *args, **kwargs)

    monkeypatch.setattr(Engine, "build", classmethod(build))
    return built


def _batch_log(monkeypatch) -> list[list[int]]:
    """Which members' frames each group model call took (member index by element name)."""
    calls: list[list[int]] = []
    real = _group.BatchGroup._seal

    def seal(self):
        batch = self._batch
        if batch is not None and batch.n_infer:
            calls.append([int(item.member.element.get_name()[3:]) for item in batch.items if item.infer])
        return real(self)

    monkeypatch.setattr(_group.BatchGroup, "_seal", seal)
    return calls


def test_three_streams_share_one_model_and_batches_and_keep_their_own_order_and_detections(
    embedded_model, count_builds, monkeypatch
):
    feeds = {i: _frames(10 + i, 12) for i in range(3)}
    calls = _batch_log(monkeypatch)
    s = Streams(embedded_model, 3, "batch-group=cams batch-size=4")
    try:
        msg = s.run_lockstep(feeds)
        assert msg is not None and msg.type == Gst.MessageType.EOS, msg and msg.parse_error()
    finally:
        s.stop()
    assert len(count_builds) == 1, count_builds  # one model for three streams
    assert any(len(set(c)) > 1 for c in calls), calls  # model calls took frames of several streams
    assert max(len(c) for c in calls) <= 4
    for i in range(3):
        pts = [p for p, _, _ in s.out[i]]
        assert pts == [k * Gst.SECOND // 30 for k in range(12)], (i, pts)  # every buffer once, in order
        assert all(info is not None and info.inferred for _, _, info in s.out[i])
    count_builds.clear()
    for i in range(3):
        alone = _alone(embedded_model, feeds[i])
        for k, (_, d, _) in enumerate(s.out[i]):
            np.testing.assert_allclose(d.xyxy, alone[k].xyxy, atol=1e-3, err_msg=f"stream {i} frame {k}")
            assert d.class_id.tolist() == alone[k].class_id.tolist()
    assert not _group._GROUPS, "the group outlived its members"


def test_streams_of_different_sizes_get_their_own_detections(embedded_model):
    feeds = {0: _frames(21, 8, 320, 256), 1: _frames(22, 8, 640, 384)}
    s = Streams(embedded_model, 2, "batch-group=sizes batch-size=4")
    try:
        msg = s.run(feeds)
        assert msg is not None and msg.type == Gst.MessageType.EOS
    finally:
        s.stop()
    for i in (0, 1):
        alone = _alone(embedded_model, feeds[i])
        assert len(s.out[i]) == 8
        for k, (_, d, _) in enumerate(s.out[i]):
            np.testing.assert_allclose(d.xyxy, alone[k].xyxy, atol=1e-3)
            assert float(d.xyxy[:, 2].max(initial=0)) <= feeds[i][0].shape[1] + 1  # boxes in that stream's pixels


def test_a_stream_that_ends_early_or_stalls_does_not_hold_the_others(embedded_model):
    s = Streams(embedded_model, 3, "batch-group=stall batch-size=8 batch-timeout=20000")
    try:
        s.pipeline.set_state(Gst.State.PLAYING)
        _push_no_eos(s.pipeline.get_by_name("src0"), _frames(31, 2))  # stalls: 2 frames, then nothing
        push_frames(s.pipeline.get_by_name("src1"), _frames(32, 3))  # ends early
        push_frames(s.pipeline.get_by_name("src2"), _frames(33, 13))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and [len(o) for o in s.out] != [2, 3, 13]:
            time.sleep(0.05)
        assert [len(o) for o in s.out] == [2, 3, 13]  # the stalled stream's frames went out after the timeout
    finally:
        s.stop()


class _Element:
    """What a Member uses of its pyinfer element: a name, the push, the source pad and the stats."""

    def __init__(self) -> None:
        self.pushed: list[tuple[int, str]] = []
        self._srcpad = None
        self._stats = type("Stats", (), {"note": lambda *_: None})()

    def get_name(self) -> str:
        return "fake"

    def _push(self, _pad, item) -> Gst.FlowReturn:
        self.pushed.append((item.buf, threading.current_thread().name))
        return Gst.FlowReturn.OK


def _deliver(member: _group.Member, values: list[int]) -> None:
    for _ in values:
        assert member.admit()
    member.deliver_many([_group.GroupItem(member, v, True, member.epoch) for v in values])


def test_finished_buffers_are_pushed_by_the_streaming_thread_that_brings_the_next_frame(monkeypatch):
    """Issue #13: a member's finished buffers go out on its own streaming thread when it comes back with a frame
    (Member.pump, as a single element pushes from its chain), so no output thread wakes per frame (a GIL hand-over
    each); they go to the output thread only when the streaming thread waits (for room, at a drain) or when the
    group's sweeper finds them left past PUSH_GRACE_S. Every buffer once, in order, whoever pushes."""
    monkeypatch.setattr(_group, "PUSH_MODE", "stream")
    el = _Element()
    member = _group.Member(el)
    member.limit = 100
    try:
        me = threading.current_thread().name
        _deliver(member, [0, 1, 2])
        time.sleep(0.05)
        assert el.pushed == []  # nobody was woken: they wait for the streaming thread
        assert member.stale(time.monotonic() + _group.PUSH_GRACE_S)  # the sweeper would hand them over
        member.pump()  # the streaming thread comes back
        assert el.pushed == [(0, me), (1, me), (2, me)]
        _deliver(member, [3, 4])
        member.wake()  # the sweeper: the stream stalled
        deadline = time.monotonic() + 5
        while len(el.pushed) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [b for b, _ in el.pushed[3:]] == [3, 4]
        assert all(name.startswith("pyinfer-out-") for _, name in el.pushed[3:])
        _deliver(member, [5, 6])
        assert member.drain(5.0)  # EOS: the drain pushes what is queued and waits for the rest
        assert [b for b, _ in el.pushed] == list(range(7)) and member.outstanding == 0
    finally:
        member.stop()


def test_with_push_mode_thread_every_buffer_goes_out_on_the_output_thread(monkeypatch):
    """PYINFER_GROUP_PUSH=thread (the A/B switch): the behaviour before, every buffer on the output thread."""
    monkeypatch.setattr(_group, "PUSH_MODE", "thread")
    el = _Element()
    member = _group.Member(el)
    member.limit = 100
    try:
        _deliver(member, [0, 1, 2])
        member.pump()  # does nothing in this mode
        assert member.drain(5.0)
        assert [b for b, _ in el.pushed] == [0, 1, 2]
        assert all(name.startswith("pyinfer-out-") for _, name in el.pushed)
    finally:
        member.stop()


def test_a_member_asking_for_another_model_is_refused_naming_both(embedded_model, fixed_model):
    desc = (
        f"videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=320,height=256 ! "
        f"pyinfer name=a model-engine={embedded_model.path} batch-group=mixed ! fakesink "
        f"videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=320,height=256 ! "
        f"pyinfer name=b model-engine={fixed_model} batch-group=mixed ! fakesink"
    )
    pipeline = Gst.parse_launch(desc)
    try:
        pipeline.set_state(Gst.State.PLAYING)
        msg = pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS)
        assert msg is not None and msg.type == Gst.MessageType.ERROR
        err, _ = msg.parse_error()
        assert err.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
        assert "batch-group 'mixed' already runs another model" in err.message
        assert str(fixed_model) in err.message or str(embedded_model.path) in err.message
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert not _group._GROUPS


def test_a_stream_added_while_playing_joins_and_a_removed_one_leaves(embedded_model):
    s = Streams(embedded_model, 1, "batch-group=live batch-size=2 batch-timeout=20000")
    try:
        s.pipeline.set_state(Gst.State.PLAYING)
        _push_no_eos(s.pipeline.get_by_name("src0"), _frames(41, 4))
        bin2 = Gst.parse_bin_from_description(
            f"appsrc name=src9 format=time ! pyinfer name=inf9 model-engine={embedded_model.path} batch-group=live "
            "batch-size=2 ! appsink name=sink9 sync=false emit-signals=true",
            False,
        )
        got: list[int] = []
        bin2.get_by_name("sink9").connect(
            "new-sample", lambda sink: got.append(sink.emit("pull-sample").get_buffer().pts) or Gst.FlowReturn.OK
        )
        s.pipeline.add(bin2)
        bin2.sync_state_with_parent()
        assert len(_group._GROUPS["live"].members) == 2
        _push_no_eos(bin2.get_by_name("src9"), _frames(42, 5))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(got) < 5 or len(s.out[0]) < 4):
            time.sleep(0.05)
        assert len(got) == 5 and len(s.out[0]) == 4
        bin2.set_state(Gst.State.NULL)
        s.pipeline.remove(bin2)
        assert len(_group._GROUPS["live"].members) == 1
        _push_no_eos(s.pipeline.get_by_name("src0"), _frames(43, 3))  # the rest keeps going
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(s.out[0]) < 7:
            time.sleep(0.05)
        assert len(s.out[0]) == 7
    finally:
        s.stop()
    assert not _group._GROUPS


def test_one_stream_flushing_drops_only_its_own_frames(embedded_model):
    """A flush on one member (its flushing seek) drops its frames held in the group's batch, not the others'."""
    s = Streams(embedded_model, 2, "batch-group=flush batch-size=8 batch-timeout=1000000")
    try:
        s.pipeline.set_state(Gst.State.PLAYING)
        _push_no_eos(s.pipeline.get_by_name("src0"), _frames(51, 2))
        _push_no_eos(s.pipeline.get_by_name("src1"), _frames(52, 5))
        group = _group._GROUPS["flush"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (group._batch is None or len(group._batch.items) < 7):
            time.sleep(0.01)
        assert group._batch is not None and len(group._batch.items) == 7  # all held: 7 < batch-size
        pad = s.pipeline.get_by_name("inf0").get_static_pad("sink")
        assert pad.send_event(Gst.Event.new_flush_start())
        assert pad.send_event(Gst.Event.new_flush_stop(True))
        _push_no_eos(s.pipeline.get_by_name("src0"), _frames(53, 3))  # after the seek: 3 new frames
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(s.out[1]) < 5 or len(s.out[0]) < 3):
            time.sleep(0.05)
        assert [p for p, _, _ in s.out[1]] == [k * Gst.SECOND // 30 for k in range(5)]  # untouched
        assert [p for p, _, _ in s.out[0]] == [k * Gst.SECOND // 30 for k in range(3)]  # the 2 flushed ones gone
        # The flushed frames are no longer counted as out: an EOS after the seek is not held waiting for them.
        member = group.members[s.pipeline.get_by_name("inf0")]
        assert member.outstanding == 0
        for i in range(2):
            s.pipeline.get_by_name(f"src{i}").emit("end-of-stream")
        msg = s.pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        assert msg is not None and msg.type == Gst.MessageType.EOS
    finally:
        s.stop()


def test_a_stream_seeking_again_and_again_keeps_flowing(embedded_model):
    """Frames flushed while held in the group's batch do not use up the member's room: after more seeks than
    the member has room for (batch-size * (in-flight + 2) = 8 here), each with a frame held, frames still flow
    and the stream ends."""
    s = Streams(embedded_model, 1, "batch-group=seeks batch-size=2 in-flight=2 batch-timeout=50000")
    try:
        s.pipeline.set_state(Gst.State.PLAYING)
        src = s.pipeline.get_by_name("src0")
        inf = s.pipeline.get_by_name("inf0")
        pad = inf.get_static_pad("sink")
        frames = _frames(54, 1)
        for _ in range(10):
            group = _group._GROUPS["seeks"]
            member = group.members[inf]

            def held(group=group, member=member) -> bool:
                batch = group._batch
                return batch is not None and any(item.epoch == member.epoch for item in batch.items)

            _push_no_eos(src, frames)  # one frame: held in the open batch (batch-size 2) until the timeout
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not held():
                time.sleep(0.002)
            assert held()
            assert pad.send_event(Gst.Event.new_flush_start())
            assert pad.send_event(Gst.Event.new_flush_stop(True))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and group._batch is not None:  # the flushed frame's batch goes
                time.sleep(0.01)
        assert not s.out[0]  # every frame pushed so far was flushed
        _push_no_eos(src, _frames(55, 4))
        src.emit("end-of-stream")
        msg = s.pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        assert msg is not None and msg.type == Gst.MessageType.EOS
        assert [p for p, _, _ in s.out[0]] == [k * Gst.SECOND // 30 for k in range(4)]
    finally:
        s.stop()


def test_member_threads_end_with_the_pipeline(embedded_model):
    before = {t.name for t in threading.enumerate()}
    s = Streams(embedded_model, 2, "batch-group=threads batch-size=2")
    try:
        msg = s.run({0: _frames(61, 3), 1: _frames(62, 3)})
        assert msg is not None and msg.type == Gst.MessageType.EOS
    finally:
        s.stop()
    time.sleep(0.2)
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if n.startswith(("pyinfer-out-", "pyinfer-group-"))], left


@pytest.mark.parametrize("group", ["", "batch-group=rates batch-size=2"])
def test_stats_interval_posts_each_streams_rate_and_latency(embedded_model, group):
    s = Streams(embedded_model, 2, f"stats-interval=100 {group}")
    stats: dict[str, list] = {"inf0": [], "inf1": []}
    bus = s.pipeline.get_bus()
    try:
        s.pipeline.set_state(Gst.State.PLAYING)
        for i in (0, 1):
            push_frames(s.pipeline.get_by_name(f"src{i}"), _frames(70 + i, 20))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msg = bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS)
            if msg is None:
                continue
            if msg.type == Gst.MessageType.EOS:
                break
            with structure(msg) as st:
                if st is not None and st.get_name() == "pyinfer-stats":
                    stats[msg.src.get_name()].append({k: st.get_value(k) for k in (
                        "frames", "fps", "fps-average", "latency-ms", "latency-max-ms", "batch-group")})  # fmt: skip
    finally:
        s.stop()
    for name, posts in stats.items():
        assert posts, f"{name} posted no pyinfer-stats"
        frames = [p["frames"] for p in posts]
        assert frames == sorted(frames) and frames[-1] <= 20
        assert all(p["fps"] > 0 and p["fps-average"] > 0 for p in posts)
        assert all(0 < p["latency-ms"] <= p["latency-max-ms"] for p in posts)
        assert posts[0]["batch-group"] == ("rates" if group else "")


def _instant_engine(monkeypatch) -> None:
    """Engine.submit/collect return empty detections at once: batches finish while their last frame's
    submit_input_buffer may still be returning."""
    from pyinfer.detections import Detections
    from pyinfer.engine import Engine
    from pyinfer.ops.colour import YuvFrames

    def submit(self, frames, *, channels="RGB", params=None):
        return len(frames) if isinstance(frames, YuvFrames) else int(frames.shape[0])

    monkeypatch.setattr(Engine, "submit", submit)
    monkeypatch.setattr(Engine, "collect", lambda self, ticket: [Detections.empty() for _ in range(ticket)])


def test_a_member_never_pushes_the_buffer_of_the_call_it_is_in(monkeypatch, embedded_model):
    """PyGObject takes and drops a reference on submit_input_buffer's buffer after the Python code returned: a
    buffer pushed inside its own call had been freed downstream by then and was freed twice (8 streams with an
    instant model crashed or hung in 4 runs of 6). Member.pump leaves that call's buffer for later; every buffer
    still goes out once, in order."""
    from pyinfer.elements import infer

    _instant_engine(monkeypatch)
    calls = threading.local()
    inside: list[int] = []
    pushed = [0]
    real_submit, real_push = _group.BatchGroup.submit, infer._Pusher.__call__

    def submit(self, element, buf, held=None):
        calls.buf = hash(buf)
        try:
            return real_submit(self, element, buf, held)
        finally:
            calls.buf = None

    def push(self, pad, item):
        pushed[0] += 1
        if getattr(calls, "buf", None) == hash(item.buf):
            inside.append(pushed[0])
        return real_push(self, pad, item)

    monkeypatch.setattr(_group.BatchGroup, "submit", submit)
    monkeypatch.setattr(infer._Pusher, "__call__", push)
    n, frames = 4, _frames(5, 60, 160, 128)
    s = Streams(embedded_model, n, "batch-group=g batch-size=4")
    try:
        msg = s.run({i: frames for i in range(n)})
        assert msg is not None and msg.type == Gst.MessageType.EOS, msg and msg.parse_error()
    finally:
        s.stop()
    assert pushed[0] == n * len(frames)
    expected = [i * Gst.SECOND // 30 for i in range(len(frames))]
    assert [[pts for pts, _, _ in o] for o in s.out] == [expected] * n
    assert inside == []
