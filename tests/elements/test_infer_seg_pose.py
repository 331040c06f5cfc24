"""Segmentation and pose models inside a pipeline (issue #15): pyinfer picks yolo-seg / yolo-pose and writes their
boxes, masks and keypoints as the engine decodes them, batched, every buffer out once and in order.

The models are ultralytics' YOLOv8n-seg and YOLOv8n-pose built from yaml with seeded random weights (calibrated
as tests/reference does), exported to ONNX. Masks and keypoints ride on ROI metas (``pyinfer-mask``,
``pyinfer-keypoints`` params; with meta=analytics beside the GstAnalytics objects), read back with
``pyinfer.meta.roi.with_shapes``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst
from pyinfer.engine import Engine, EngineConfig
from pyinfer.meta.roi import with_shapes
from reference.ultra import OFFLINE_ENV, bgr_frames, box_iou, build
from support import push_frames

FRAMES = 5


@pytest.fixture(scope="module")
def offline():
    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    os.environ.update(OFFLINE_ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def models(offline, tmp_path_factory):
    """cfg -> its ONNX export (made once per module), built on FRAMES frames of bgr_frames(640, 480)."""
    made: dict[str, str] = {}
    bgr = bgr_frames(640, 480, FRAMES, block=2)

    def get(cfg: str) -> str:
        if cfg not in made:
            made[cfg] = _export(cfg, bgr, tmp_path_factory.mktemp("models"))
        return made[cfg]

    return get


def _export(cfg: str, frames_bgr: np.ndarray, out: Path) -> str:
    yolo = build(cfg, frames_bgr, (256, 320))
    cwd = os.getcwd()
    os.chdir(out)
    try:
        return str(Path(yolo.export(format="onnx", imgsz=(256, 320), dynamic=True, simplify=False)).resolve())
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(("cfg", "decoder"), [("yolov8n-seg.yaml", "yolo-seg"), ("yolov8n-pose.yaml", "yolo-pose")])
def test_a_seg_or_pose_model_runs_in_the_element_with_the_engines_results(models, run_pipeline, cfg, decoder):
    bgr = bgr_frames(640, 480, FRAMES, block=2)
    model = models(cfg)
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]
    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer name=infer model-engine={model} device=cpu batch-size=2 ! "
        "pymsgconv name=conv frame-interval=1 ! appsink name=sink"
    )
    shaped: list = []

    def keep(pad, info):
        from pyinfer.meta import read_detections

        buf = info.get_buffer()
        shaped.append(with_shapes(buf, read_detections(buf)))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, keep)
    messages: list = []

    def payloads(pad, info):
        from pyinfer.elements.msgconv import read_payloads

        got = read_payloads(info.get_buffer())
        messages.extend(json.loads(t) for t in (got.texts if got is not None else ()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("conv").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, payloads)
    res = run_pipeline(pipeline, feed=lambda p: push_frames(p.get_by_name("src"), rgb))
    assert res.ok, (res.error, res.debug)
    assert res.pts == [i * Gst.SECOND // 30 for i in range(FRAMES)]
    engine = Engine.build(EngineConfig(model=model, device="cpu"))
    assert engine.decoder_choice.name == decoder
    want = engine.infer(torch.from_numpy(np.stack(rgb)), channels="RGB")
    total = 0
    assert len(shaped) == FRAMES
    for got, ref in zip(shaped, want):
        assert len(got) == len(ref)
        if len(ref):
            iou = box_iou(got.xyxy, ref.xyxy)
            assert (iou.max(axis=1) > 0.999).all()
            assert sorted(got.class_id.tolist()) == sorted(ref.class_id.tolist())
            # The metadata's order may differ from the engine's; boxes clipped to the frame can coincide, so the
            # class and the score pick the twin.
            same = (iou > 0.999) & (got.class_id[:, None] == ref.class_id[None, :])
            gap = np.where(same, np.abs(got.confidence[:, None] - ref.confidence[None, :]), np.inf)
            match = gap.argmin(axis=1)
            assert len(set(match.tolist())) == len(ref)
            if decoder == "yolo-seg":
                assert got.masks is not None, "the masks did not reach the metadata"
                np.testing.assert_array_equal(got.masks, ref.masks[match])
            else:
                assert got.keypoints is not None, "the keypoints did not reach the metadata"
                np.testing.assert_allclose(got.keypoints, ref.keypoints[match], atol=1e-4)
        assert (ref.masks is not None) == (decoder == "yolo-seg")
        assert (ref.keypoints is not None) == (decoder == "yolo-pose")
        total += len(ref)
    assert total >= FRAMES, "too few detections to compare"
    key = "mask" if decoder == "yolo-seg" else "keypoints"
    assert len(messages) == FRAMES and messages[0]["version"] == "1.3"
    objects = [o for m in messages for o in m["objects"]]
    assert len(objects) == total and all(key in o for o in objects)


def test_detect_writes_masks_and_keypoints_in_its_json_lines(models, tmp_path):
    import cv2

    from pyinfer.detect import DetectOptions, run_detect
    from pyinfer.jsonl import read_jsonl, rle_mask

    images = tmp_path / "images"
    images.mkdir()
    bgr = bgr_frames(640, 480, 2, block=2)
    for i, frame in enumerate(bgr):
        cv2.imwrite(str(images / f"f{i}.png"), frame)
    for cfg, key in (("yolov8n-seg.yaml", "mask"), ("yolov8n-pose.yaml", "keypoints")):
        out = tmp_path / f"{key}.jsonl"
        result = run_detect(DetectOptions(input=str(images), model_engine=models(cfg), json_out=str(out),
                                          device="cpu", progress=False))  # fmt: skip
        assert not result.problem and result.frames == 2, result
        recs = list(read_jsonl(out))
        assert len(recs) == 2 and sum(len(r["objects"]) for r in recs) > 0
        for rec in recs:
            for obj in rec["objects"]:
                if key == "mask":
                    assert obj["mask"]["size"] == [64, 64] and rle_mask(obj["mask"]).any()
                else:
                    assert len(obj["keypoints"]) == 17 and all(len(p) == 3 for p in obj["keypoints"])


@pytest.mark.skipif(
    not __import__("pyinfer.meta.analytics", fromlist=["x"]).segmentation_available(),
    reason="GstAnalytics segmentation Mtds need GStreamer >= 1.26 (this is older)",
)
def test_masks_are_gstanalytics_instance_segmentation_mtds_on_1_26(models, run_pipeline):
    from pyinfer.meta import analytics, read_detections

    bgr = bgr_frames(640, 480, FRAMES, block=2)
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]
    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer name=infer model-engine={models('yolov8n-seg.yaml')} device=cpu meta=analytics ! "
        "appsink name=sink"
    )
    seen: list = []

    def keep(pad, info):
        buf = info.get_buffer()
        dets = read_detections(buf)
        seen.append((dets, with_shapes(buf, dets).masks, analytics.read_instance_masks(buf)))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, keep)
    res = run_pipeline(pipeline, feed=lambda p: push_frames(p.get_by_name("src"), rgb))
    assert res.ok, (res.error, res.debug)
    total = 0
    for dets, masks, segs in seen:
        assert len(segs) == len(dets)
        for i in range(len(dets)):
            mask, (x, y, w, h) = segs[i]
            assert mask.shape == masks[i].shape  # the box-local mask, as the ROI param carries it
            np.testing.assert_array_equal(mask, (masks[i] >= 128).astype(np.uint8))  # region 1: the object
            x0, y0, x1, y1 = dets.xyxy[i]
            assert (x, y) == (int(np.floor(x0)), int(np.floor(y0)))  # over the OD Mtd's box
            assert x + w == int(np.ceil(x1)) and y + h == int(np.ceil(y1))
            total += 1
    assert total >= FRAMES


@pytest.mark.parametrize("meta", ["roi", "analytics"])
@pytest.mark.parametrize("cfg", ["yolov8n-seg.yaml", "yolov8n-pose.yaml"])
def test_pytracker_carries_masks_and_keypoints_to_the_boxes_it_predicts(models, run_pipeline, cfg, meta):
    from pyinfer.meta import analytics, read_detections, read_frame_info

    if meta == "analytics" and not analytics.available():
        pytest.skip("GstAnalytics needs GStreamer >= 1.24 (this is 1.22)")
    still = np.ascontiguousarray(bgr_frames(640, 480, 1, block=2)[0][..., ::-1])
    frames = [still] * 9  # one scene held still: every track confirmed, its predicted box where it was
    pipeline = Gst.parse_launch(
        f"appsrc name=src ! pyinfer model-engine={models(cfg)} device=cpu interval=1 meta={meta} ! pytracker ! "
        "appsink name=sink"
    )
    seen: list = []

    def keep(pad, info):
        buf = info.get_buffer()
        seen.append((read_frame_info(buf).inferred, with_shapes(buf, read_detections(buf))))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, keep)
    res = run_pipeline(pipeline, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert res.ok, (res.error, res.debug)
    assert [inferred for inferred, _ in seen] == [k % 2 == 0 for k in range(9)]
    checked = 0
    for k in range(3, 9, 2):  # predicted frames after the tracks are confirmed
        before, now = seen[k - 1][1], seen[k][1]
        assert len(now) > 0 and now.tracker_id is not None
        last = {int(t): i for i, t in enumerate(before.tracker_id.tolist())}
        for i, t in enumerate(now.tracker_id.tolist()):
            j = last[int(t)]
            if cfg.endswith("seg.yaml"):
                assert now.masks is not None, "the predicted boxes lost their masks"
                np.testing.assert_array_equal(now.masks[i], before.masks[j])
            else:
                assert now.keypoints is not None, "the predicted boxes lost their keypoints"
                # the box held still: the keypoints stay where they were (moved with the box)
                np.testing.assert_allclose(now.keypoints[i], before.keypoints[j], atol=0.5)
            checked += 1
    assert checked >= 3
