"""pymsgconv in real pipelines: messages match the metadata, frame-interval, modes, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from messages.expect import assert_matches, assert_valid
from pyinfer._gi import GLib, Gst, GstVideo
from pyinfer.detections import Detections
from pyinfer.elements.msgconv import read_payloads
from pyinfer.meta.roi import set_track_id, write_detections, write_frame_info

W, H = 64, 48
CAPS = f"video/x-raw,format=RGB,width={W},height={H},framerate=30/1"


def _collect(pipeline: Gst.Pipeline) -> list:
    """Payloads of every buffer reaching the appsink named ``sink``, in order (None: no payload meta)."""
    payloads: list = []

    def probe(_pad, info):
        payloads.append(read_payloads(info.get_buffer()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    return payloads


def _buffer(i: int, dets: Detections | None = None, *, frame: bool | None = True, tracks=None, data=None):
    buf = Gst.Buffer.new_wrapped(data if data is not None else bytes(W * H * 3))
    buf.pts = i * Gst.SECOND // 30
    buf.duration = Gst.SECOND // 30
    if frame is not None:
        write_frame_info(buf, inferred=frame, unique_id=9, model_id=1)
    if dets is not None:
        write_detections(buf, dets, unique_id=9, model_id=1)
    for idx, track in enumerate(tracks or []):
        set_track_id(GstVideo.buffer_get_video_region_of_interest_meta_id(buf, idx), track)
    return buf


def _dets(n: int = 2, rotated: bool = False) -> Detections:
    xyxy = np.array([[4.5 + 3 * k, 6.25, 20.0 + 3 * k, 30.5] for k in range(n)], np.float32)
    cxcywhr = None
    if rotated:
        cxcywhr = np.array([[12.0 + 3 * k, 18.0, 14.0, 8.0, math.radians(30)] for k in range(n)], np.float32)
    return Detections(xyxy, np.linspace(0.9, 0.5, n).astype(np.float32), np.arange(n, dtype=np.int32) % 2,
                      cxcywhr=cxcywhr, labels=("cat", "dog"))  # fmt: skip


def _run_appsrc(run_pipeline, buffers, props: str = "frame-interval=1"):
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps={CAPS} ! pymsgconv name=conv {props} ! appsink name=sink"
    )
    payloads = _collect(pipeline)

    def feed(p: Gst.Pipeline) -> None:
        src = p.get_by_name("src")
        for buf in buffers:
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    res = run_pipeline(pipeline, feed=feed)
    return res, payloads, pipeline.get_by_name("conv")


def _messages(payloads) -> list[list[dict]]:
    return [[json.loads(t) for t in p.texts] if p is not None else [] for p in payloads]


def test_messages_match_the_pipeline_metadata_field_by_field(run_pipeline, fixed_model):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=4 ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer model-engine={fixed_model} decoder=yolov8 unique-id=7 ! pymsgconv frame-interval=1 source-id=5 ! "
        "appsink name=sink"
    )
    payloads = _collect(pipeline)
    res = run_pipeline(pipeline)
    assert res.ok, res.error
    assert len(payloads) == len(res.detections) == 4
    for i, (payload, dets) in enumerate(zip(payloads, res.detections)):
        assert payload.key == "5"
        (msg,) = [json.loads(t) for t in payload.texts]
        assert len(dets) == 2  # the fixed model's two boxes: the comparison covers real detections
        assert_matches(msg, dets, frame_number=i, pts_ns=res.pts[i], source_id=5, inferred=True, size=(640, 480))
    ids = [json.loads(p.texts[0])["message_id"] for p in payloads]
    assert len(set(ids)) == 4


def test_frame_interval_makes_messages_for_frames_0_n_2n_only(run_pipeline):
    res, payloads, conv = _run_appsrc(run_pipeline, [_buffer(i, _dets()) for i in range(7)], "frame-interval=3")
    assert res.ok, res.error
    numbers = [m[0]["frame_number"] for m in _messages(payloads) if m]
    assert numbers == [0, 3, 6]
    assert [p is not None for p in payloads] == [i % 3 == 0 for i in range(7)]
    assert conv.get_property("messages") == 3


def test_defaults_follow_nvmsgconv_where_it_has_the_knob():
    conv = Gst.ElementFactory.make("pymsgconv")
    assert conv.get_property("frame-interval") == 30
    assert conv.get_property("message-per") == "frame"
    assert conv.get_property("source-id") == 0


def test_per_object_mode_makes_one_message_per_object(run_pipeline):
    buffers = [_buffer(0, _dets(3)), _buffer(1, None), _buffer(2, _dets(1))]
    res, payloads, conv = _run_appsrc(run_pipeline, buffers, "frame-interval=1 message-per=object")
    assert res.ok, res.error
    msgs = _messages(payloads)
    assert [len(m) for m in msgs] == [3, 0, 1]  # a frame without objects makes no object message
    assert payloads[1] is None
    for m in msgs[0]:
        assert_valid(m)
        assert m["message_type"] == "object" and m["object_count"] == 3 and m["frame_number"] == 0
    assert [m["objects"][0]["index"] for m in msgs[0]] == [0, 1, 2]
    assert conv.get_property("messages") == 4


def test_rotated_and_tracked_detections_reach_the_message(run_pipeline):
    dets = _dets(2, rotated=True)
    res, payloads, _ = _run_appsrc(run_pipeline, [_buffer(0, dets, tracks=[7, 2**40])])
    assert res.ok, res.error
    (msg,) = _messages(payloads)[0]
    objs = msg["objects"]
    assert [o["track_id"] for o in objs] == [7, 2**40]
    assert objs[0]["rotated_bbox"]["angle_rad"] == pytest.approx(math.radians(30), abs=1e-6)
    assert objs[0]["rotated_bbox"]["cx"] == pytest.approx(12.0)
    assert (objs[0]["producer_id"], objs[0]["model_id"]) == (9, 1)


def test_frames_not_inferred_say_so_and_carry_no_objects(run_pipeline):
    res, payloads, _ = _run_appsrc(run_pipeline, [_buffer(0, _dets()), _buffer(1, None, frame=False)])
    assert res.ok, res.error
    first, second = (m[0] for m in _messages(payloads))
    assert (first["inferred"], len(first["objects"])) == (True, 2)
    assert (second["inferred"], second["objects"], second["object_count"]) == (False, [], 0)


def test_buffers_without_metadata_pass_untouched(run_pipeline):
    data = bytes(range(256)) * (W * H * 3 // 256)
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps={CAPS} ! pymsgconv name=conv frame-interval=1 ! appsink name=sink"
    )
    seen: list[tuple[bytes, int]] = []

    def probe(_pad, info):
        buf = info.get_buffer()
        seen.append(
            (buf.extract_dup(0, buf.get_size()), buf.get_n_meta(GstVideo.VideoRegionOfInterestMeta.get_info().api))
        )
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)

    def feed(p):
        for i in range(3):
            p.get_by_name("src").emit("push-buffer", _buffer(i, frame=None, data=data))
        p.get_by_name("src").emit("end-of-stream")

    res = run_pipeline(pipeline, feed=feed)
    assert res.ok, res.error
    assert seen == [(data, 0)] * 3
    conv = pipeline.get_by_name("conv")
    assert (conv.get_property("messages"), conv.get_property("skipped-buffers")) == (0, 0)
    assert res.warnings == []


def test_roi_metas_of_other_producers_without_a_detection_param_become_objects(run_pipeline):
    buf = _buffer(0, frame=None)
    meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, "face", 3, 4, 10, 12)
    meta.id = 0
    res, payloads, _ = _run_appsrc(run_pipeline, [buf])
    assert res.ok, res.error
    (msg,) = _messages(payloads)[0]
    assert_valid(msg)
    (obj,) = msg["objects"]
    assert (obj["label"], obj["class_id"], obj["confidence"], obj["producer_id"]) == ("face", -1, 1.0, None)
    assert obj["bbox"] == {"left": 3.0, "top": 4.0, "width": 10.0, "height": 12.0}
    assert msg["inferred"] is None  # no pyinfer frame record: unknown


def _malformed(kind: str) -> Gst.Buffer:
    buf = _buffer(0, frame=None)
    if kind == "frame-record":
        meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, "pyinfer-frame", 0, 0, 0, 0)
        meta.id = 2**31 - 1
        s = Gst.Structure.new_empty("frame")
        s.set_value("inferred", True)
        s.set_value("unique-id", "seven")
        meta.add_param(s)
        return buf
    meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, "thing", 1, 1, 5, 5)
    meta.id = 0
    s = Gst.Structure.new_empty("detection")
    values = {"confidence": 0.5, "class-id": 0, "label": "thing", "unique-id": 3, "left": 1.0, "top": 1.0,
              "width": 4.0, "height": 4.0}  # fmt: skip
    if kind == "missing-field":
        del values["top"]
    elif kind == "text-confidence":
        values["confidence"] = "high"
    elif kind == "nan-box":
        values["width"] = float("nan")
    elif kind == "label-not-text":
        values["label"] = 12
    for key, value in values.items():
        s.set_value(key, value)
    meta.add_param(s)
    if kind == "text-track-id":
        t = Gst.Structure.new_empty("tracking")
        t.set_value("track-id", "abc")
        meta.add_param(t)
    return buf


@pytest.mark.parametrize(
    "kind", ["missing-field", "text-confidence", "nan-box", "label-not-text", "text-track-id", "frame-record"]
)
def test_malformed_metadata_is_skipped_with_a_warning_and_counted(run_pipeline, kind):
    res, payloads, conv = _run_appsrc(run_pipeline, [_buffer(0, _dets()), _malformed(kind), _buffer(2, _dets())])
    assert res.ok, res.error
    assert [p is not None for p in payloads] == [True, False, True]  # the frames around it still convert
    assert conv.get_property("skipped-buffers") == 1
    assert conv.get_property("messages") == 2
    assert len(res.warnings) == 1 and "malformed" in res.warnings[0], res.warnings


def test_an_invalid_message_per_is_refused_when_set():
    with pytest.raises(GLib.Error, match='could not set property "message-per"'):
        Gst.parse_launch(f"videotestsrc num-buffers=1 ! {CAPS} ! pymsgconv message-per=scene ! fakesink")
    conv = Gst.ElementFactory.make("pymsgconv")
    with pytest.raises(TypeError, match="PyInferMsgconvMessagePer"):
        conv.set_property("message-per", "scene")
    assert conv.get_property("message-per") == "frame"
