"""ClassifierDecoder: probabilities or logits -> one whole-frame detection with the top-k classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.decoders.classifier import ClassifierDecoder
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry

GEO = LetterboxGeometry.compute(640, 480, 224, 224)


def _decode(out: torch.Tensor, conf: float = 0.25):
    return ClassifierDecoder().decode([out], GEO, conf_threshold=conf, iou_threshold=0.5, max_detections=1)


@pytest.mark.parametrize(("b", "nc", "seed"), [(1, 1000, 0), (3, 10, 1), (2, 3, 2), (4, 1, 3)])
@pytest.mark.parametrize("as_logits", [False, True])
def test_top_k_classes_come_best_first_with_probabilities(b, nc, seed, as_logits):
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(0, 3, (b, nc)).astype(np.float32))
    probs = logits.softmax(dim=1)
    got = _decode(logits if as_logits else probs, conf=0.0)
    k = min(5, nc)
    want_p, want_c = torch.sort(probs, dim=1, descending=True)
    assert got.frame.tolist() == list(range(b))
    np.testing.assert_array_equal(got.extra["topk_class_id"], want_c[:, :k].numpy())
    np.testing.assert_allclose(got.extra["topk_confidence"], want_p[:, :k].numpy(), rtol=1e-5)
    assert got.extra["topk_class_id"].dtype == np.int32 and got.extra["topk_confidence"].dtype == np.float32
    np.testing.assert_array_equal(got.class_id, want_c[:, 0].numpy())
    np.testing.assert_allclose(got.confidence, want_p[:, 0].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(got.xyxy, np.tile([0, 0, 640, 480], (b, 1)))  # the whole frame


def test_multi_label_sigmoid_scores_are_not_renormalised():
    scores = torch.tensor([[0.9, 0.8, 0.1]])  # within [0, 1], not summing to 1
    got = _decode(scores)
    np.testing.assert_allclose(got.extra["topk_confidence"], [[0.9, 0.8, 0.1]], rtol=1e-6)


def test_frames_whose_best_class_is_at_or_below_the_threshold_get_no_detection():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.3, 0.3, 0.4], [0.25, 0.5, 0.25]])
    got = _decode(probs, conf=0.45)
    assert got.frame.tolist() == [0, 2]
    assert got.class_id.tolist() == [0, 1]
    assert [s.stop - s.start for s in got.split()] == [1, 0, 1]
    dets = got.detections(("a", "b", "c"))
    assert [len(d) for d in dets] == [1, 0, 1]
    assert dets[2].label(0) == "b" and dets[1].extra["topk_class_id"].shape == (0, 3)


def test_a_batch_with_no_confident_frame_is_empty_with_top_k_columns():
    got = _decode(torch.full((3, 1000), 0.001), conf=0.25)
    assert got.frame.shape == (0,) and got.extra["topk_class_id"].shape == (0, 5)
    assert [len(d) for d in got.detections()] == [0, 0, 0]


def test_a_1x1_conv_head_output_is_flattened():
    got = _decode(torch.tensor([0.1, 0.7, 0.2]).view(1, 3, 1, 1))
    assert got.class_id.tolist() == [1]


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (torch.zeros(1, 84, 8400), r"\[B, nc\].*got \[1, 84, 8400\]"),
        (torch.zeros(10), r"\[B, nc\].*got \[10\]"),
        (torch.zeros(2, 0), r"\[B, nc\].*got \[2, 0\]"),
        (torch.zeros(2, 10, dtype=torch.int64), r"floating-point"),
    ],
)
def test_classifier_outputs_that_do_not_fit_raise_decode_error(tensor, match):
    with pytest.raises(DecodeError, match=match):
        ClassifierDecoder().num_classes([tensor])
