"""Secondary inference (issue #15): ``pyinfer process-mode=secondary`` runs a classifier on the objects an upstream
pyinfer found, one crop batch per buffer, and attaches each object's top-k as a ``classification-<unique-id>``
ROI param.

The primary is the embedded shapes detector on a synthetic scene; the secondary is ``secondary_models.dominant``
(the mean colour of the crop's centre), whose answer a test can compute itself from the same crop: every
reported confidence is checked against torch's own resize of that object's pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import secondary_models
from pyinfer._gi import Gst
from pyinfer.meta import analytics, read_detections, read_object_classifications, roi
from pyinfer.ops.crops import pixel_boxes
from pyinfer.scene.generator import Scene
from support import push_frames

FRAMES = 10
SECONDARY = "pyinfer process-mode=secondary model-engine=secondary_models:dominant unique-id=7 confidence-threshold=0"


@pytest.fixture(scope="module")
def scene_frames():
    scene = Scene(5, 640, 360)
    return [scene.frame(i)[0] for i in range(FRAMES)]


def _run(desc: str, frames: list[np.ndarray], uid: int = 7, reader=None) -> tuple[list, list, list, Gst.Message]:
    """Play ``desc`` on ``frames``: per buffer (pts, detections, the secondary's top-k per detection), the pts,
    the WARNING texts, and the final message. ``reader(buf, uid)`` reads the top-k (default: GstAnalytics first)."""
    reader = reader or read_object_classifications
    pipeline = Gst.parse_launch(desc)
    got: list = []
    sink = pipeline.get_by_name("sink")
    sink.set_property("emit-signals", True)

    def on_sample(appsink):
        buf = appsink.emit("pull-sample").get_buffer()
        got.append((buf.pts, read_detections(buf), reader(buf, uid)))
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    try:
        push_frames(pipeline.get_by_name("src"), frames)
        warnings = []
        kinds = Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.WARNING
        while (msg := bus.timed_pop_filtered(60 * Gst.SECOND, kinds)) is not None:
            if msg.type != Gst.MessageType.WARNING:
                break
            warnings.append(msg.parse_warning()[0].message)
        assert msg is not None, "no EOS or ERROR within 60 s"
    finally:
        pipeline.set_state(Gst.State.NULL)
    return got, [g[0] for g in got], warnings, msg


def _primary(embedded_model, extra: str = "") -> str:
    return f"appsrc name=src ! pyinfer model-engine={embedded_model.path} meta=roi unique-id=1 {extra} ! "


def _expected(frame: np.ndarray, box: np.ndarray) -> torch.Tensor:
    h, w = frame.shape[:2]
    left, top, right, bottom = pixel_boxes(torch.from_numpy(box[None]), w, h)[0].tolist()
    crop = torch.from_numpy(frame[top:bottom, left:right]).permute(2, 0, 1)[None].float()
    crop = F.interpolate(crop, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255) / 255.0
    return secondary_models.reference(crop[0])


@pytest.mark.parametrize("batch", [1, 4])
def test_every_object_gets_the_classification_of_its_own_crop(embedded_model, scene_frames, batch):
    got, pts, _, msg = _run(_primary(embedded_model) + f"{SECONDARY} batch-size={batch} ! appsink name=sink",
                            scene_frames)  # fmt: skip
    assert msg.type == Gst.MessageType.EOS, msg.parse_error() if msg.type == Gst.MessageType.ERROR else msg.type
    assert pts == [i * Gst.SECOND // 30 for i in range(FRAMES)]  # every buffer once, in order
    checked = 0
    for frame, (_, dets, classes) in zip(scene_frames, got):
        assert len(dets) > 0 and len(classes) == len(dets)
        for i in range(len(dets)):
            assert classes[i], f"object {i} has no classification"
            ids = [c for c, _, _ in classes[i]]
            conf = [p for _, _, p in classes[i]]
            assert sorted(ids) == [0, 1, 2] and conf == sorted(conf, reverse=True)
            want = _expected(frame, dets.xyxy[i])
            assert classes[i][0][0] == int(want.argmax()) or abs(float(want.max()) - conf[0]) < 0.02
            assert abs(conf[0] - float(want.max())) < 0.02
            assert classes[i][0][1] == secondary_models.NAMES[classes[i][0][0]]
            checked += 1
    assert checked > 3 * FRAMES
    # the scene's colours follow the classes: most objects' colour names their class
    agree = sum(
        classes[i][0][0] == int(dets.class_id[i]) for _, dets, classes in got for i in range(len(dets))
    )  # fmt: skip
    assert agree >= 0.8 * checked


ON_CUDA = pytest.param(
    "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
)


@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
def test_crops_are_cut_where_the_model_runs(embedded_model, scene_frames, device, monkeypatch):
    # Host frames for a GPU secondary go to the GPU whole; cutting 100 objects on the CPU cost 25x the crops on
    # the GPU in the H200 run (bench/secondary.py).
    from pyinfer.ops import crops

    seen = []
    real = crops.crop_resize

    def spy(frames, *args, **kwargs):
        seen.append(frames.device.type)
        return real(frames, *args, **kwargs)

    monkeypatch.setattr(crops, "crop_resize", spy)
    got, pts, _, msg = _run(_primary(embedded_model) + f"{SECONDARY} device={device} batch-size=4 ! appsink "
                            "name=sink", scene_frames[:4])  # fmt: skip
    assert msg.type == Gst.MessageType.EOS
    assert pts == [i * Gst.SECOND // 30 for i in range(4)]
    assert seen and set(seen) == {device}
    for frame, (_, dets, classes) in zip(scene_frames, got):
        for i in range(len(dets)):
            want = _expected(frame, dets.xyxy[i])
            assert abs(classes[i][0][2] - float(want.max())) < 0.02


def test_filters_choose_the_objects(embedded_model, scene_frames):
    frames = scene_frames[:4]
    got, _, _, msg = _run(_primary(embedded_model) + f"{SECONDARY} operate-on-class-ids=0 ! appsink name=sink", frames)
    assert msg.type == Gst.MessageType.EOS
    circles = others = 0
    for _, dets, classes in got:
        for i in range(len(dets)):
            if dets.class_id[i] == 0:
                circles += bool(classes[i])
            else:
                others += bool(classes[i])
    assert circles > 0 and others == 0
    for extra in ("operate-on-gie-id=99", "input-object-min-width=10000", "input-object-max-height=1"):
        got, _, _, msg = _run(_primary(embedded_model) + f"{SECONDARY} {extra} ! appsink name=sink", frames)
        assert msg.type == Gst.MessageType.EOS
        assert sum(len(d) for _, d, _ in got) > 0
        assert not any(any(c) for _, _, c in got), extra
    got, _, _, msg = _run(_primary(embedded_model) + f"{SECONDARY} operate-on-gie-id=1 ! appsink name=sink", frames)
    assert all(all(c) for _, _, c in got)


def test_reinfer_interval_keeps_tracked_results_and_runs_the_model_less(embedded_model, scene_frames):
    desc = _primary(embedded_model) + "pytracker ! " + f"{SECONDARY} secondary-reinfer-interval=%d ! appsink name=sink"
    seen = {}
    for interval in (0, 5):
        secondary_models.SEEN[0] = 0
        got, _, _, msg = _run(desc % interval, scene_frames)
        assert msg.type == Gst.MessageType.EOS
        seen[interval] = secondary_models.SEEN[0]
        tracked = [(d, c) for _, d, c in got]
        n_objects = sum(len(d) for d, _ in tracked)
        with_class = sum(bool(x) for _, c in tracked for x in c)
        assert with_class == n_objects  # kept results are attached on every frame
    assert 0 < seen[5] < seen[0] / 2, seen


def test_secondary_in_a_batch_group_is_refused(embedded_model, scene_frames):
    _, _, _, msg = _run(_primary(embedded_model) + f"{SECONDARY} batch-group=g ! appsink name=sink", scene_frames[:2])
    assert msg.type == Gst.MessageType.ERROR
    assert "cannot join a batch-group" in msg.parse_error()[0].message


def test_bad_class_ids_warn_and_operate_on_every_class(embedded_model, scene_frames):
    got, _, warnings, msg = _run(
        _primary(embedded_model) + f"{SECONDARY} operate-on-class-ids=0;x ! appsink name=sink", scene_frames[:2]
    )
    assert msg.type == Gst.MessageType.EOS
    assert any("operate-on-class-ids" in w and "'x'" in w for w in warnings), warnings
    assert all(all(c) for _, _, c in got)


@pytest.mark.skipif(not analytics.available(), reason="GstAnalytics needs GStreamer >= 1.24 (this is 1.22)")
@pytest.mark.parametrize("meta", ["analytics", "both"])
def test_objects_in_gstanalytics_get_a_classification_mtd(embedded_model, scene_frames, meta):
    desc = f"appsrc name=src ! pyinfer model-engine={embedded_model.path} unique-id=1 meta={meta} ! {SECONDARY} ! "
    got, _, _, msg = _run(desc + "appsink name=sink", scene_frames[:3])
    assert msg.type == Gst.MessageType.EOS, msg.parse_error() if msg.type == Gst.MessageType.ERROR else msg.type
    for frame, (_, dets, classes) in zip(scene_frames, got):
        assert "mtd_id" in dets.extra and len(dets) > 0 and len(classes) == len(dets)
        for i in range(len(dets)):
            assert classes[i] and classes[i][0][1] == secondary_models.NAMES[classes[i][0][0]]
            assert abs(classes[i][0][2] - float(_expected(frame, dets.xyxy[i]).max())) < 0.02
    if meta == "both":  # the ROI metas carry the same results
        from_roi, _, _, msg = _run(desc + "appsink name=sink", scene_frames[:3], reader=roi.read_object_classifications)
        assert msg.type == Gst.MessageType.EOS
        assert [c for _, _, c in from_roi] == [c for _, _, c in got]


def test_an_nvinfer_secondary_config_file_sets_secondary_mode(embedded_model, scene_frames, tmp_path):
    cfg = tmp_path / "config_infer_secondary.txt"
    cfg.write_text(
        "[property]\nprocess-mode=2\nnetwork-type=1\ngie-unique-id=7\noperate-on-gie-id=1\noperate-on-class-ids=0\n"
        "classifier-threshold=0\nbatch-size=8\n"
    )
    desc = _primary(embedded_model) + (
        f"pyinfer config-file-path={cfg} model-engine=secondary_models:dominant name=sec ! appsink name=sink"
    )
    got, _, _, msg = _run(desc, scene_frames[:4])
    assert msg.type == Gst.MessageType.EOS, msg.parse_error() if msg.type == Gst.MessageType.ERROR else msg.type
    classified = [(int(d.class_id[i]), bool(c[i])) for _, d, c in got for i in range(len(d))]
    assert any(cls == 0 and has for cls, has in classified)
    assert all(has == (cls == 0) for cls, has in classified)


def test_two_secondaries_keep_their_own_results(embedded_model, scene_frames):
    from pyinfer.meta import read_secondary_results

    second = SECONDARY.replace("unique-id=7", "unique-id=8") + " maintain-aspect-ratio=true"
    desc = _primary(embedded_model) + f"{SECONDARY} ! {second} ! appsink name=sink"
    got, _, _, msg = _run(desc, scene_frames[:3], reader=lambda buf, uid: read_secondary_results(buf))
    assert msg.type == Gst.MessageType.EOS
    for _, dets, found in got:
        assert len(found) == len(dets) > 0
        for entry in found:
            assert set(entry) == {7, 8}
            assert entry[7][0][1] in secondary_models.NAMES and entry[8][0][1] in secondary_models.NAMES


def test_a_hot_swap_drops_the_results_kept_for_tracked_objects(embedded_model):
    import time

    from pyinfer._gi import structure

    scene = Scene(5, 640, 360)
    frames = [scene.frame(i)[0] for i in range(40)]
    desc = _primary(embedded_model) + f"pytracker ! {SECONDARY} name=sec secondary-reinfer-interval=1000 ! "
    pipeline = Gst.parse_launch(desc + "appsink name=sink sync=false emit-signals=true")
    got: list = []
    first: list[int] = []

    def on_sample(appsink):
        buf = appsink.emit("pull-sample").get_buffer()
        got.append([c[0][1] for c in read_object_classifications(buf, 7) if c])
        return Gst.FlowReturn.OK

    def on_sync(_bus, msg):
        with structure(msg) as s:
            if s is not None and s.get_name() == "pyinfer-model-updated" and s.get_value("ok"):
                first.append(int(s.get_value("first-frame")))

    pipeline.get_by_name("sink").connect("new-sample", on_sample)
    bus = pipeline.get_bus()
    bus.enable_sync_message_emission()
    bus.connect("sync-message::element", on_sync)
    src = pipeline.get_by_name("src")
    caps = Gst.Caps.from_string("video/x-raw,format=RGB,width=640,height=360,framerate=30/1")
    src.set_property("caps", caps)
    src.set_property("format", Gst.Format.TIME)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        for i, frame in enumerate(frames):
            if i == 8:  # once the first frames are out (results kept for every tracked object), the new model
                deadline = time.monotonic() + 30
                while len(got) < 8 and time.monotonic() < deadline:
                    time.sleep(0.01)
                pipeline.get_by_name("sec").set_property("model-engine", "secondary_models:shouting")
            if i >= 8 and not first:  # one frame at a time until the new model serves
                deadline = time.monotonic() + 0.5
                while not first and time.monotonic() < deadline:
                    time.sleep(0.01)
            buf = Gst.Buffer.new_wrapped(frame.tobytes())
            buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")
        msg = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        pipeline.set_state(Gst.State.NULL)
    assert msg.type == Gst.MessageType.EOS
    assert len(got) == 40 and first and 8 <= first[0] < 40
    before, after = got[: first[0]], got[first[0] :]
    assert all(label.islower() for labels in before for label in labels) and any(before)
    assert all(label.isupper() for labels in after for label in labels) and any(after)


DETECTOR = "pyinfer process-mode=secondary model-engine=secondary_models:centre_box unique-id=7 batch-size=8"


def _children_checked(got: list) -> int:
    """Every primary object has exactly one child: the middle half (x) and quarter (y) of its pixel box."""
    from pyinfer.ops.crops import pixel_boxes

    n = 0
    for _, dets, (parents, labels) in got:
        primary = np.flatnonzero(np.asarray(dets.extra["unique_id"]) == 1)
        children = np.flatnonzero(np.asarray(dets.extra["unique_id"]) == 7)
        assert len(primary) > 0 and len(children) == len(primary)
        assert all(parents[i] == -1 for i in primary)
        assert sorted(parents[i] for i in children) == sorted(primary.tolist())
        for c in children:
            p = parents[c]
            left, top, right, bottom = pixel_boxes(torch.from_numpy(dets.xyxy[p : p + 1]), 640, 360)[0].tolist()
            sx, sy = (right - left) / 32, (bottom - top) / 32
            want = [left + 8 * sx, top + 12 * sy, left + 24 * sx, top + 20 * sy]
            np.testing.assert_allclose(dets.xyxy[c], want, atol=0.01)
            assert labels[c] == "inner" and labels[p] != "inner"  # the secondary's own label on its objects
            n += 1
    return n


def _parents_and_labels(buf: Gst.Buffer, uid: int) -> tuple[list[int], list[str]]:
    """Per object: its parent's index (-1: none) and its own label (the ROI type, or the OD Mtd's type)."""
    from pyinfer._gi import GLib, GstVideo
    from pyinfer.meta import read_parents

    if analytics.has_analytics(buf):
        return read_parents(buf), analytics.object_labels(buf, read_detections(buf).extra["mtd_id"].tolist())
    labels = []
    while (meta := GstVideo.buffer_get_video_region_of_interest_meta_id(buf, len(labels))) is not None:
        labels.append(GLib.quark_to_string(meta.roi_type))
    return read_parents(buf), labels


def test_a_detector_secondary_adds_the_objects_it_finds_inside_each_object(embedded_model, scene_frames):
    desc = _primary(embedded_model) + f"{DETECTOR} ! appsink name=sink"
    got, pts, _, msg = _run(desc, scene_frames[:4], reader=_parents_and_labels)
    assert msg.type == Gst.MessageType.EOS, msg.parse_error() if msg.type == Gst.MessageType.ERROR else msg.type
    assert len(pts) == 4
    assert _children_checked(got) > 8


@pytest.mark.skipif(not analytics.available(), reason="GstAnalytics needs GStreamer >= 1.24 (this is 1.22)")
def test_a_detector_secondary_relates_children_to_parents_in_gstanalytics(embedded_model, scene_frames):
    desc = f"appsrc name=src ! pyinfer model-engine={embedded_model.path} unique-id=1 meta=analytics ! {DETECTOR} ! "
    got, _, _, msg = _run(desc + "appsink name=sink", scene_frames[:3], reader=_parents_and_labels)
    assert msg.type == Gst.MessageType.EOS, msg.parse_error() if msg.type == Gst.MessageType.ERROR else msg.type
    assert _children_checked(got) > 6


def test_crop_to_frame_maps_boxes_and_keypoints_back_for_stretch_and_letterbox():
    from pyinfer.detections import Detections
    from pyinfer.elements._secondary import crop_to_frame

    dets = Detections(
        np.array([[0, 0, 32, 32], [8, 8, 16, 24]], np.float32), np.array([0.9, 0.8], np.float32),
        np.array([0, 0], np.int32), keypoints=np.array([[[16, 16, 1]], [[0, 32, 0.5]]], np.float32),
    )  # fmt: skip
    region = np.array([100, 50, 164, 66])  # 64 x 16 px
    out = crop_to_frame(dets, region, 32, 32, letterbox=False)
    np.testing.assert_allclose(out.xyxy, [[100, 50, 164, 66], [116, 54, 132, 62]])
    np.testing.assert_allclose(out.keypoints[:, 0], [[132, 58, 1], [100, 66, 0.5]])
    lb = crop_to_frame(dets, region, 32, 32, letterbox=True)  # 2 px per input px, content rows 12..20
    np.testing.assert_allclose(lb.xyxy[1], [116, 50, 132, 66])  # y 8..24 -> -8..24 px: clipped to the crop
    np.testing.assert_allclose(lb.keypoints[0, 0], [132, 58, 1])


def test_rotated_or_mask_models_are_refused_as_secondaries():
    from types import SimpleNamespace

    from pyinfer.elements.infer import _check_secondary_decoder
    from pyinfer.errors import ConfigError

    for name in ("yolo-obb", "yolo-seg"):
        with pytest.raises(ConfigError, match=name):
            _check_secondary_decoder(SimpleNamespace(decoder=SimpleNamespace(name=name)), "m.onnx")
    for name in ("classifier", "yolov8", "yolo-pose", "detr"):
        _check_secondary_decoder(SimpleNamespace(decoder=SimpleNamespace(name=name)), "m.onnx")
