"""decoder=torchvision: torchvision detection models' list of dicts, read from tiny real torchvision models.

The models are torchvision's own FasterRCNN, FCOS, KeypointRCNN and SSD classes with a one-convolution
backbone, and its retinanet_resnet50_fpn at a small size, all with seeded random weights (pretrained weights
cannot be downloaded here): random, but deterministic, and they detect plenty above a low threshold. Each test
compares pyinfer's boxes in frame pixels with what the model itself returned for the same letterboxed input,
mapped through the letterbox geometry: exactly. ssd300_vgg16 and ssdlite320_mobilenet_v3_large, as torchvision
builds them, check the documented default input sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.backends.base import output_list, pack_detection_dicts
from pyinfer.decoders import choose_decoder, get_decoder
from pyinfer.engine import Engine, EngineConfig
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import letterbox

MODELS = '''
"""Tiny torchvision detectors with seeded weights (a user's model file: model-engine=/path/tvdet.py:build)."""
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, KeypointRCNN
from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_320_FPN_Weights
from torchvision.models.detection import retinanet_resnet50_fpn, ssd300_vgg16, ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.ops import MultiScaleRoIAlign


def _backbone(channels):
    backbone = nn.Sequential(nn.Conv2d(3, channels, 3, stride=8, padding=1), nn.ReLU())
    backbone.out_channels = channels
    return backbone


def _rcnn(cls, num_classes, **kwargs):
    return cls(
        _backbone(8), min_size=64, max_size=128,
        rpn_anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 49, 32),
        box_predictor=FastRCNNPredictor(32, num_classes), **kwargs,
    )


def build():
    torch.manual_seed(0)
    return _rcnn(FasterRCNN, 4)


def build_fcos():
    torch.manual_seed(0)
    return FCOS(_backbone(32), num_classes=3, min_size=64, max_size=128, score_thresh=0.05,
                anchor_generator=AnchorGenerator(((16,),), ((1.0,),)))


def build_keypoints():
    torch.manual_seed(0)
    return _rcnn(KeypointRCNN, 2, keypoint_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
                 keypoint_head=KeypointRCNNHeads(8, (16,)), keypoint_predictor=KeypointRCNNPredictor(16, 3))


def build_ssd():
    torch.manual_seed(0)
    anchors = DefaultBoxGenerator([[2]])
    # size is (width, height): SSD's transform resizes every image to it (fixed_size)
    return SSD(_backbone(8), anchors, (128, 64), 3, head=SSDHead([8], anchors.num_anchors_per_location(), 3))


def build_retinanet():
    torch.manual_seed(0)  # its classification head starts near 0.01 (prior_probability): keep every score
    return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=128,
                                  score_thresh=0.0)


def build_ssd300():
    return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=3)


def build_ssdlite():
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)


def build_scripted():
    return torch.jit.script(build())  # returns (losses, detections), takes only a list


def build_coco():
    torch.manual_seed(0)
    model = _rcnn(FasterRCNN, 91, box_score_thresh=0.0)
    model.weights = FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.DEFAULT  # names: its meta["categories"]
    return model
'''


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "tvdet.py"
    path.write_text(MODELS)
    return path


def frames_at(seed: int, n: int = 2, h: int = 90, w: int = 160):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=gen)


def reference(engine: Engine, frames, conf: float, max_det: int):
    """What the model returned for the letterboxed frames, best first, above ``conf``, mapped to the frame."""
    x, geometry = letterbox(frames, engine.input_width, engine.input_height, dtype=torch.float32)
    with torch.inference_mode():
        raw = engine.model.module(list(x))
    out = []
    for r in raw:
        order = torch.argsort(r["scores"], descending=True, stable=True)
        order = order[r["scores"][order] > conf][:max_det]
        out.append((
            geometry.to_frame(r["boxes"][order].clone()).numpy(),
            r["scores"][order].numpy(),
            r["labels"][order].numpy().astype(np.int32),
            {k: r[k][order] for k in ("keypoints", "keypoints_scores") if k in r},
            geometry,
        ))  # fmt: skip
    return out


@pytest.mark.parametrize("factory", ["build", "build_fcos", "build_keypoints", "build_ssd", "build_retinanet"])
def test_boxes_are_the_models_own_mapped_through_the_letterbox_exactly(models_file, factory):
    engine = Engine.build(EngineConfig(model=f"{models_file}:{factory}", device="cpu"))
    assert engine.decoder_choice.name == "torchvision"
    assert "list of dicts" in engine.decoder_choice.reason
    # max_size x min_size, or SSD's fixed_size (width, height): no second resize
    assert (engine.input_width, engine.input_height) == (128, 64)
    frames = frames_at(1)
    got = engine.infer(frames, conf_threshold=0.0, max_detections=1000)
    want = reference(engine, frames, 0.0, 1000)
    assert len(got) == 2
    for dets, (xyxy, conf, cls, extra, geometry) in zip(got, want):
        assert len(dets) > 0
        np.testing.assert_array_equal(dets.xyxy, xyxy)
        np.testing.assert_array_equal(dets.confidence, conf)
        np.testing.assert_array_equal(dets.class_id, cls)
        assert (dets.xyxy[:, 2] <= 160).all() and (dets.xyxy[:, 3] <= 90).all()
        if factory == "build_keypoints":
            kpts = extra["keypoints"].clone()
            kpts[..., 0] = (kpts[..., 0] - geometry.pad_x) / geometry.gain_x
            kpts[..., 1] = (kpts[..., 1] - geometry.pad_y) / geometry.gain_y
            np.testing.assert_array_equal(dets.extra["keypoints"], kpts.numpy())
            np.testing.assert_array_equal(dets.extra["keypoints_scores"], extra["keypoints_scores"].numpy())
            assert dets.keypoints is not None and dets.keypoints.shape == (len(dets), kpts.shape[1], 3)
            np.testing.assert_array_equal(dets.keypoints[..., :2], kpts[..., :2].numpy())
            np.testing.assert_allclose(dets.keypoints[..., 2], torch.sigmoid(extra["keypoints_scores"]).numpy(),
                                       rtol=1e-6)  # fmt: skip
        else:
            assert dets.keypoints is None


@pytest.mark.parametrize(("factory", "size"), [("build_ssd300", 300), ("build_ssdlite", 320)])
def test_torchvisions_own_ssd_factories_get_their_fixed_size_and_their_own_detections(models_file, factory, size):
    """ssd300_vgg16 and ssdlite320_mobilenet_v3_large as torchvision builds them (random weights: their scores
    tie, so only the sets are compared): the documented 300x300 and 320x320 inputs, the model's boxes."""
    engine = Engine.build(EngineConfig(model=f"{models_file}:{factory}", device="cpu"))
    assert engine.decoder_choice.name == "torchvision"
    assert (engine.input_width, engine.input_height) == (size, size)
    frames = frames_at(5, n=1)
    got = engine.infer(frames, conf_threshold=0.0, max_detections=1000)[0]
    xyxy, conf, cls, _, _ = reference(engine, frames, 0.0, 1000)[0]
    assert len(got) == len(xyxy) > 0
    want = sorted(zip(map(tuple, xyxy.tolist()), conf.tolist(), cls.tolist()))
    assert sorted(zip(map(tuple, got.xyxy.tolist()), got.confidence.tolist(), got.class_id.tolist())) == want


def test_confidence_threshold_and_max_detections_cut_the_models_list_without_more_nms(models_file):
    engine = Engine.build(EngineConfig(model=f"{models_file}:build", device="cpu"))
    frames = frames_at(2, n=1)
    everything = engine.infer(frames, conf_threshold=0.0, max_detections=1000)[0]
    conf = float(np.median(everything.confidence))
    got = engine.infer(frames, conf_threshold=conf, max_detections=3, iou_threshold=0.01)[0]
    xyxy, scores, _, _, _ = reference(engine, frames, conf, 3)[0]
    assert len(got) == 3  # a 0.01 IoU threshold would have left fewer: the model's own NMS is the only one
    np.testing.assert_array_equal(got.xyxy, xyxy)
    np.testing.assert_array_equal(got.confidence, scores)
    assert (got.confidence > conf).all()


def test_a_scripted_detector_from_a_factory_gives_the_eager_ones_detections(models_file):
    frames = frames_at(4)
    eager, scripted = (
        Engine.build(EngineConfig(model=f"{models_file}:{factory}", device="cpu")).infer(frames, conf_threshold=0.0)
        for factory in ("build", "build_scripted")
    )
    for a, b in zip(eager, scripted):
        assert len(a) > 0
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-6)


def test_names_come_from_the_weights_enums_categories(models_file):
    engine = Engine.build(EngineConfig(model=f"{models_file}:build_coco", device="cpu"))
    assert engine.labels[:3] == ("__background__", "person", "bicycle") and len(engine.labels) == 91
    dets = engine.infer(frames_at(3, n=1), conf_threshold=0.0, max_detections=5)[0]
    assert len(dets) == 5
    assert [dets.label(i) for i in range(5)] == [engine.labels[c] for c in dets.class_id]


def test_a_pipeline_with_a_model_file_and_decoder_auto_gets_detections(models_file, run_pipeline):
    res = run_pipeline(
        "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=160,height=90 ! "
        f"pyinfer model-engine={models_file}:build decoder=auto confidence-threshold=0.05 ! appsink name=sink"
    )
    assert res.ok, res.error
    assert len(res.detections) == 3
    assert all(len(d) > 0 for d in res.detections)
    for d in res.detections:
        assert (d.xyxy >= 0).all() and (d.xyxy[:, 2] <= 160).all() and (d.xyxy[:, 3] <= 90).all()
        assert set(d.class_id.tolist()) <= {1, 2, 3}  # torchvision labels as they are: background 0 never


def test_list_of_dicts_is_packed_padded_with_rows_below_any_threshold():
    dicts = [
        {"boxes": torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), "scores": torch.tensor([0.5, 0.25]),
         "labels": torch.tensor([3, 1]), "masks": torch.zeros(2, 1, 4, 4)},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, 1, 4, 4)},
    ]  # fmt: skip
    boxes, scores, labels = output_list(dicts)  # masks are left out
    assert boxes.shape == (2, 2, 4) and scores.tolist() == [[0.5, 0.25], [-1, -1]]
    assert labels.dtype == torch.int64 and labels.tolist() == [[3, 1], [0, 0]]
    assert [o.shape for o in output_list(({}, dicts))] == [o.shape for o in pack_detection_dicts(dicts)]  # scripted
    assert choose_decoder([boxes, scores, labels]).name == "torchvision"


def test_a_model_returning_no_tensors_is_told_in_a_sentence():
    with pytest.raises(DecodeError, match=r"it returned no tensors \(a torch model must return") as err:
        choose_decoder(output_list([{"something": 1}]))
    assert "no outputs" not in str(err.value)


def test_decoder_torchvision_refuses_other_layouts_and_names_the_one_they_fit():
    with pytest.raises(DecodeError, match=r"decoder torchvision expects .*; got \[1, 84, 2100\].*yolov8"):
        get_decoder("torchvision").num_classes([torch.rand(1, 84, 2100)])
