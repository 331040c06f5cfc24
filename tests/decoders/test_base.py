"""The shared pieces: one-transfer packing with rotated boxes and extras, per-frame caps, DecodedBatch -> Detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.decoders.base import DecodedBatch, FrameList, cap_per_frame, pack
from pyinfer.detections import Detections


def test_pack_round_trips_every_column_with_its_dtype():
    rng = np.random.default_rng(0)
    m = 7
    xyxy, conf = torch.from_numpy(rng.uniform(0, 500, (m, 4))), torch.from_numpy(rng.random(m))
    cls, frame = torch.tensor([0, 5, 79, 3, 3, 1, 2]), torch.tensor([0, 0, 0, 1, 1, 3, 3])
    rot = torch.from_numpy(rng.uniform(-1, 1, (m, 5)))
    topk = torch.from_numpy(rng.integers(0, 1000, (m, 3)))
    got = pack(
        xyxy,
        conf,
        cls,
        frame,
        4,
        cxcywhr=rot,
        extra={"topk": (topk, np.dtype(np.int32)), "one": (conf, np.dtype(np.float32))},
    )
    np.testing.assert_allclose(got.xyxy, xyxy.numpy(), rtol=1e-6)
    assert got.xyxy.dtype == got.confidence.dtype == got.cxcywhr.dtype == np.float32
    assert got.class_id.dtype == np.int32 and got.frame.dtype == np.int64
    assert got.class_id.tolist() == cls.tolist() and got.frame.tolist() == frame.tolist()
    np.testing.assert_allclose(got.cxcywhr, rot.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got.extra["topk"], topk.numpy())
    assert got.extra["topk"].dtype == np.int32 and got.extra["one"].shape == (m,)
    assert [(s.start, s.stop) for s in got.split()] == [(0, 3), (3, 5), (5, 5), (5, 7)]
    dets = got.detections(("x",))
    assert [len(d) for d in dets] == [3, 2, 0, 2]
    assert dets[3].cxcywhr.shape == (2, 5) and dets[3].extra["topk"].shape == (2, 3) and dets[0].labels == ("x",)


@pytest.mark.parametrize("max_det", [1, 2, 5])
def test_cap_per_frame_keeps_the_best_of_each_frame_grouped_by_frame(max_det):
    frame = torch.tensor([2, 0, 1, 0, 2, 2, 0, 1])
    order = torch.tensor([4, 1, 0, 7, 3, 5, 2, 6])  # best first
    got = cap_per_frame(order, frame, max_det).tolist()
    want = []
    for f in (0, 1, 2):
        want += [i for i in order.tolist() if frame[i] == f][:max_det]
    assert got == want


def test_frame_list_adds_the_engines_labels_only_where_a_frame_has_none():
    own = Detections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int32), labels=("mine",))
    bare = Detections.empty()
    got = FrameList([own, bare]).detections(("engine",))
    assert got[0].labels == ("mine",) and got[1].labels == ("engine",)


def test_an_empty_batch_gives_empty_detections_per_frame():
    batch = DecodedBatch(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64), 3
    )
    assert [len(d) for d in batch.detections()] == [0, 0, 0]
