"""VerticesNet, and the committed vertices keypoint model: truth, layout, metadata, held-out crops through the
engine, and the secondary element mapping its keypoints back to the frame."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch  # core dependency: never skipped

import pyinfer.models
from pyinfer.elements._secondary import crop_to_frame
from pyinfer.engine import Engine, EngineConfig
from pyinfer.models.net_vertices import FLIP, IMGSZ, NAMES, K, PoseExport, VerticesNet, object_vertices
from pyinfer.ops.crops import crop_resize, pixel_boxes
from pyinfer.scene import CLASSES, Scene
from pyinfer.scene.generator import _Body, _draw
from pyinfer.zoo import get_model
from support import load_committed

MODEL = Path(pyinfer.models.__file__).parent / "vertices.torchscript"
LABELS = MODEL.with_name("vertices.labels.txt")
SEED, WIDTH, HEIGHT = 1000211, 960, 544  # held out: training draws seeds below 900000 only


@pytest.fixture(scope="module")
def committed() -> tuple[torch.jit.ScriptModule, dict]:
    return load_committed(MODEL, "train_vertices.py")


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The committed model through the normal loader, its decoder picked from its own metadata."""
    return Engine.build(EngineConfig(model=str(get_model("vertices").path), device="cpu", max_batch=64))


@pytest.mark.parametrize("class_id", [0, 1, 2])
def test_object_vertices_are_the_drawn_shapes_extreme_points(class_id: int) -> None:
    """Each visible keypoint is a corner or extreme point of what the generator draws (to a pixel)."""
    img = np.zeros((100, 100, 3), np.uint8)
    body = _Body(0, class_id, 50.3, 47.8, 41.3, 0.0, 0.0, 0.0, (200, 200, 200), (100, 100, 100))
    _draw(img, body)
    ys, xs = np.nonzero(img.any(-1))
    centres = np.stack([xs + 0.5, ys + 0.5], axis=1)
    left, top, right, bottom = body.box()
    points = object_vertices(class_id, (left, top, right - left, bottom - top))
    assert len(points) == K
    for x, y, visible in points:
        if not visible:
            continue
        assert np.hypot(*(centres - (x, y)).T).min() < 1.5, (x, y)
    drawn = [(p[0], p[1]) for p in points if p[2]]
    assert min(p[0] for p in drawn) == pytest.approx(left) and max(p[0] for p in drawn) == pytest.approx(right)
    assert min(p[1] for p in drawn) == pytest.approx(top) and max(p[1] for p in drawn) == pytest.approx(bottom)
    hidden = [p for p in points if not p[2]]
    assert len(hidden) == (1 if class_id == 2 else 0)


def test_flip_table_mirrors_the_keypoints() -> None:
    for class_id in range(len(CLASSES)):
        points = np.array(object_vertices(class_id, (10.0, 20.0, 30.0, 26.0)))
        mirrored = points[list(FLIP[class_id])]
        mirrored[:, 0] = 50.0 - mirrored[:, 0]  # x -> 10 + 40 - x: the box mirrored onto itself
        np.testing.assert_allclose(mirrored, points, atol=1e-9)


def test_verticesnet_fuses_and_exports_the_pose_layout() -> None:
    torch.manual_seed(0)
    net = VerticesNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so fusing is really tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.rand(5, 3, IMGSZ, IMGSZ)
        out = net(x)
        assert out.shape == (5, K, 3)
        torch.testing.assert_close(copy.deepcopy(net).fuse()(x), out, rtol=1e-4, atol=1e-4)

    class Fixed(torch.nn.Module):  # known keypoints: a triangle whose fourth keypoint is hidden
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            kp = torch.tensor([[0.5, 0.1, 5.0], [0.9, 0.8, 5.0], [0.2, 0.8, 5.0], [0.5, 0.5, -5.0]])
            return kp.expand(x.shape[0], -1, -1)

    with torch.no_grad():
        y = PoseExport(Fixed())(torch.zeros(2, 3, IMGSZ, IMGSZ))
    assert y.shape == (2, 4 + 1 + K * 3, 1)
    box = y[0, :5, 0]  # the box around the visible keypoints: x 12.8..57.6, y 6.4..51.2
    torch.testing.assert_close(box, torch.tensor([35.2, 28.8, 44.8, 44.8, 1.0]))
    kpts = y[0, 5:, 0].view(K, 3)
    torch.testing.assert_close(kpts[:, :2], torch.tensor([[32, 6.4], [57.6, 51.2], [12.8, 51.2], [32, 32]]))
    assert (kpts[:3, 2] > 0.99).all() and kpts[3, 2] < 0.01


def test_committed_model_has_pose_metadata_and_is_listed(committed, engine: Engine) -> None:
    model, meta = committed
    assert meta["task"] == "pose"
    assert meta["kpt_shape"] == [K, 3]
    assert meta["end2end"] is False
    assert meta["imgsz"] == [IMGSZ, IMGSZ]
    assert meta["names"] == {"0": "vertices"}
    assert meta["pyinfer"]["decoder"] == "yolo-pose"
    assert meta["pyinfer"]["resize"] == "stretch"
    held_out = meta["pyinfer"]["eval"]  # recorded by the trainer on seed 1000003
    assert held_out["truth_boxes"]["median_rel"] < 0.03
    assert held_out["detector_boxes"]["median_rel"] < 0.05
    assert LABELS.read_text().splitlines() == list(NAMES)
    assert MODEL.stat().st_size < 2**20
    zoo = get_model("vertices")
    assert (zoo.path, zoo.labels) == (MODEL, NAMES)
    with torch.no_grad():
        out = model(torch.rand(3, 3, IMGSZ, IMGSZ))
    assert out.shape == (3, 4 + 1 + K * 3, 1)
    assert engine.decoder_choice.name == "yolo-pose"  # from the metadata, decoder=auto
    assert engine.decoder.kpt_shape == (K, 3) and engine.decoder.end2end is False
    assert (engine.input_width, engine.input_height) == (IMGSZ, IMGSZ)
    assert engine.labels == NAMES


def _usable(objects: list, width: int, height: int) -> list[bool]:
    """Wholly inside the frame, at least 12 px, under no later object's box."""
    out = []
    for k, o in enumerate(objects):
        left, top, w, h = o.bbox
        right, bottom = left + w, top + h
        ok = left > 0 and top > 0 and right < width and bottom < height and min(w, h) >= 12
        later = [b.bbox for b in objects[k + 1 :]]
        ok = ok and not any(lt < right and lt + lw > left and tp < bottom and tp + th > top for lt, tp, lw, th in later)
        out.append(ok)
    return out


def test_committed_model_finds_the_vertices_of_held_out_crops_through_the_engine(engine: Engine) -> None:
    """Crops of truth boxes, cut as the element cuts them, through the engine (yolo-pose) and crop_to_frame."""
    scene = Scene(SEED, WIDTH, HEIGHT)
    errors, visible_conf, hidden_conf, classes = [], [], [], set()
    for index in range(0, 120, 2):
        img, objects = scene.frame(index)
        kept = [o for o, ok in zip(objects, _usable(objects, WIDTH, HEIGHT)) if ok]
        if not kept:
            continue
        boxes = torch.tensor([[o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]] for o in kept])
        index_t = torch.zeros(len(kept), dtype=torch.int64)
        crops = crop_resize(torch.from_numpy(img)[None], index_t, boxes, IMGSZ, IMGSZ)
        regions = pixel_boxes(boxes, WIDTH, HEIGHT).numpy()
        for dets, region, o in zip(engine.infer(crops), regions, kept):
            assert len(dets) == 1 and dets.keypoints is not None and dets.keypoints.shape == (1, K, 3)
            pred = crop_to_frame(dets, region, IMGSZ, IMGSZ, False).keypoints[0]
            truth = np.array(object_vertices(o.class_id, o.bbox))
            size = max(o.bbox[2], o.bbox[3])
            classes.add(o.class_id)
            for p, g in zip(pred, truth):
                if g[2]:
                    errors.append(np.hypot(p[0] - g[0], p[1] - g[1]) / size)
                    visible_conf.append(p[2])
                else:
                    hidden_conf.append(p[2])
    errors_a = np.array(errors)
    assert len(errors_a) >= 900 and classes == {0, 1, 2} and len(hidden_conf) >= 20
    assert np.median(errors_a) < 0.05, np.median(errors_a)  # about 0.002 (0.015 at most) with the committed file
    assert np.percentile(errors_a, 95) < 0.05, np.percentile(errors_a, 95)
    assert min(visible_conf) > 0.5 and max(hidden_conf) < 0.5, (min(visible_conf), max(hidden_conf))


# -- through the element ----------------------------------------------------------------------------------


def _run_pipeline(frames: list[np.ndarray]) -> list[tuple]:
    """shapes (primary, ROI metas) ! vertices (secondary): per buffer (detections, parents, keypoints of each
    detection or None, label of each detection: its ROI type)."""
    from pyinfer._gi import GLib, Gst, GstVideo
    from pyinfer.meta import read_detections, read_parents, roi
    from support import push_frames

    desc = (
        f"appsrc name=src ! pyinfer model-engine={get_model('shapes').path} meta=roi unique-id=1 ! "
        f"pyinfer process-mode=secondary model-engine={MODEL} unique-id=2 batch-size=16 ! appsink name=sink"
    )
    pipeline = Gst.parse_launch(desc)
    got: list = []
    sink = pipeline.get_by_name("sink")
    sink.set_property("emit-signals", True)

    def on_sample(appsink):
        buf = appsink.emit("pull-sample").get_buffer()
        dets = read_detections(buf)
        children = np.flatnonzero(np.asarray(dets.extra["unique_id"]) == 2)
        shaped = roi.with_shapes(buf, dets[children]) if len(children) else None
        keypoints: list = [None] * len(dets)
        for j, c in enumerate(children):
            keypoints[c] = None if shaped is None or shaped.keypoints is None else shaped.keypoints[j]
        labels = []
        while (meta := GstVideo.buffer_get_video_region_of_interest_meta_id(buf, len(labels))) is not None:
            labels.append(GLib.quark_to_string(meta.roi_type))
        got.append((dets, read_parents(buf), keypoints, labels))
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    try:
        push_frames(pipeline.get_by_name("src"), frames)
        msg = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        assert msg is not None, "no EOS or ERROR within 60 s"
        assert msg.type == Gst.MessageType.EOS, msg.parse_error()
    finally:
        pipeline.set_state(Gst.State.NULL)
    return got


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0.0, None)))
    return inter / (float(np.prod(a[2:] - a[:2])) + float(np.prod(b[2:] - b[:2])) - inter)


def test_the_secondary_element_puts_each_objects_vertices_on_a_child_object() -> None:
    """appsrc ! pyinfer (shapes) ! pyinfer process-mode=secondary (vertices) ! appsink on a held-out scene."""
    width, height = 640, 360
    scene = Scene(1000231, width, height)
    shots = [scene.frame(i) for i in range(0, 50, 10)]
    got = _run_pipeline([img for img, _ in shots])
    assert len(got) == len(shots)
    checked, errors = 0, []
    for (dets, parents, keypoints, labels), (_, objects) in zip(got, shots):
        uid = np.asarray(dets.extra["unique_id"])
        primary, children = np.flatnonzero(uid == 1), np.flatnonzero(uid == 2)
        assert len(primary) > 0 and len(children) == len(primary)  # one child per object
        assert sorted(parents[c] for c in children) == sorted(primary.tolist())
        assert all(parents[p] == -1 for p in primary)
        usable = _usable(objects, width, height)
        truth_xyxy = [np.array([o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]]) for o in objects]
        for c in children:
            roi_ids = dets.extra["roi_id"]
            assert labels[roi_ids[c]] == "vertices" and labels[roi_ids[parents[c]]] in CLASSES
            kp = keypoints[c]
            assert kp is not None and kp.shape == (K, 3)
            parent_box = dets.xyxy[parents[c]]
            ious = [_iou(parent_box.astype(np.float64), t) for t in truth_xyxy]
            j = int(np.argmax(ious)) if ious else -1
            if j < 0 or ious[j] < 0.5 or not usable[j]:
                continue
            o = objects[j]
            truth = np.array(object_vertices(o.class_id, o.bbox))
            size = max(o.bbox[2], o.bbox[3])
            for p, g in zip(kp, truth):
                if g[2]:
                    errors.append(np.hypot(p[0] - g[0], p[1] - g[1]) / size)
                    assert p[2] > 0.5
                else:
                    assert p[2] < 0.5
            # the child's box encloses its visible keypoints: close to the object's own box
            assert _iou(dets.xyxy[c].astype(np.float64), truth_xyxy[j]) > 0.8
            checked += 1
    assert checked >= 10, checked
    errors_a = np.array(errors)
    assert np.median(errors_a) < 0.05 and errors_a.max() < 0.1, (np.median(errors_a), errors_a.max())
