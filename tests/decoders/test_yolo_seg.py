"""YoloSegDecoder and box_masks: the mask arithmetic against ultralytics' process_mask, layouts, packing, misfits.

The end-to-end comparison with ultralytics' predict on exported models is tests/reference/test_ultralytics_seg_pose.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.decoders import choose_decoder, get_decoder
from pyinfer.decoders.base import pack
from pyinfer.decoders.yolo_seg import MASK_SIZE, YoloSegDecoder, box_masks
from pyinfer.detections import Detections
from pyinfer.errors import DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry


def _aligned_case(seed: int, frame: tuple[int, int], inp: tuple[int, int], size: int):
    """Prototypes, coefficients and boxes whose cell centres fall exactly on model-input pixel centres."""
    torch.manual_seed(seed)
    (fw, fh), (iw, ih) = frame, inp
    geo = LetterboxGeometry.compute(fw, fh, iw, ih)
    protos = torch.randn(2, 32, ih // 4, iw // 4)
    coeffs = torch.randn(5, 32)
    frame_idx = torch.tensor([0, 0, 1, 1, 1])
    # A box of size / gain frame pixels starting at a frame pixel whose input position is a whole pixel: cell j's
    # centre maps to input pixel x0 + j + 0.5.
    span_x, span_y = size / geo.gain_x, size / geo.gain_y
    x0 = torch.tensor([0.0, 10, 3, 20, 7])
    y0 = torch.tensor([0.0, 5, 12, 1, 9])
    boxes = torch.stack([x0 / geo.gain_x, y0 / geo.gain_y, x0 / geo.gain_x + span_x, y0 / geo.gain_y + span_y], 1)
    return geo, protos, coeffs, frame_idx, boxes


@pytest.mark.parametrize(
    ("frame", "inp"),
    [((320, 256), (320, 256)), ((160, 120), (320, 320)), ((80, 96), (160, 128))],
    ids=["same-size", "letterboxed-rows", "letterboxed-columns"],
)
def test_box_masks_are_ultralytics_process_mask_where_cells_meet_input_pixels(frame, inp):
    from ultralytics.utils.ops import process_mask

    size = 32
    geo, protos, coeffs, frame_idx, boxes = _aligned_case(3, frame, inp, size)
    ours = box_masks(protos, coeffs, frame_idx, boxes, geo, size)
    assert ours.dtype == torch.uint8 and ours.shape == (5, size, size)
    for i in range(5):
        # ultralytics' mask at input resolution; the box in input pixels
        b_in = boxes[i : i + 1].clone()
        b_in[:, 0::2] = b_in[:, 0::2] * geo.gain_x + geo.pad_x
        b_in[:, 1::2] = b_in[:, 1::2] * geo.gain_y + geo.pad_y
        ref = process_mask(protos[frame_idx[i]], coeffs[i : i + 1], b_in, (inp[1], inp[0]), upsample=True)[0]
        x0, y0 = round(float(b_in[0, 0])), round(float(b_in[0, 1]))
        want = ref[y0 : y0 + size, x0 : x0 + size].numpy() > 0
        got = ours[i].numpy() >= 128
        assert want.any() and not want.all(), "a test box should hold both mask and background"
        np.testing.assert_array_equal(got, want, err_msg=f"box {i}")


def test_box_masks_hold_the_probability_times_255():
    geo, protos, coeffs, frame_idx, boxes = _aligned_case(5, (320, 256), (320, 256), 16)
    ours = box_masks(protos, coeffs, frame_idx, boxes, geo, 16)
    logits = (coeffs[1] @ protos[0].reshape(32, -1)).reshape(64, 80)
    x0, y0 = int(boxes[1, 0]), int(boxes[1, 1])  # same size: cell centres on input pixels, 4 per prototype
    up = torch.nn.functional.interpolate(logits[None, None], (256, 320), mode="bilinear")[0, 0]
    want = (up[y0 : y0 + 16, x0 : x0 + 16].sigmoid() * 255).round()
    torch.testing.assert_close(ours[1].float(), want, atol=1, rtol=0)


def test_no_detections_give_no_masks():
    geo = LetterboxGeometry.compute(320, 256, 320, 256)
    out = box_masks(torch.randn(1, 32, 64, 80), torch.zeros(0, 32), torch.zeros(0, dtype=torch.long),
                    torch.zeros(0, 4), geo)  # fmt: skip
    assert out.shape == (0, MASK_SIZE, MASK_SIZE)


def _seg_outputs(b: int, n: int, nc: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    det = torch.zeros(b, 4 + nc + 32, n)
    det[:, 0] = torch.rand(b, n, generator=g) * 300 + 10
    det[:, 1] = torch.rand(b, n, generator=g) * 200 + 10
    det[:, 2:4] = torch.rand(b, 2, n, generator=g) * 60 + 20
    det[:, 4 : 4 + nc] = torch.rand(b, nc, n, generator=g) * 0.3
    det[:, 4, :5] = 0.9  # five confident anchors of class 0 per frame
    det[:, 4 + nc :] = torch.randn(b, 32, n, generator=g)
    return [det, torch.randn(b, 32, 64, 80, generator=g)]


def test_the_decoder_reads_either_output_order_and_attaches_a_mask_to_every_detection():
    outs = _seg_outputs(2, 200, 3)
    geo = LetterboxGeometry.compute(640, 512, 320, 256)
    dec = YoloSegDecoder()
    assert dec.num_classes(outs) == 3
    a = dec.decode(outs, geo, conf_threshold=0.5, iou_threshold=0.99, max_detections=100)
    b = YoloSegDecoder().decode(outs[::-1], geo, conf_threshold=0.5, iou_threshold=0.99, max_detections=100)
    assert a.masks is not None and a.masks.shape == (len(a.xyxy), MASK_SIZE, MASK_SIZE)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    assert 0 < len(a.xyxy) <= 10 and set(a.class_id) == {0}
    assert (a.masks >= 128).reshape(len(a.masks), -1).any(axis=1).all()
    frames = a.detections(("a", "b", "c"))
    assert [len(f) for f in frames] == [int((a.frame == i).sum()) for i in range(2)]
    assert all(f.masks is not None and f.masks.shape[0] == len(f) for f in frames)


def test_detections_whose_mask_is_empty_are_dropped_as_ultralytics_does():
    outs = _seg_outputs(1, 50, 1)
    det, protos = outs
    det[:, 4] = 0.0
    det[:, 4, :5] = 0.9  # five confident anchors, far apart: no suppression
    det[:, 0, :5] = torch.tensor([50.0, 150, 250, 50, 150])
    det[:, 1, :5] = torch.tensor([50.0, 50, 50, 150, 150])
    det[:, 5:] = 0.0
    det[:, 5, 1:5] = 1.0  # anchors 1-4: logit +5 everywhere
    det[:, 5, 0] = -1.0  # anchor 0: logit -5 everywhere, an empty mask
    protos[:] = 0.0
    protos[:, 0] = 5.0
    geo = LetterboxGeometry.compute(320, 256, 320, 256)
    got = YoloSegDecoder().decode(outs, geo, conf_threshold=0.5, iou_threshold=0.5, max_detections=100)
    assert len(got.xyxy) == 4
    centres = (got.xyxy[:, :2] + got.xyxy[:, 2:]) / 2
    assert not np.any(np.all(np.abs(centres - [50, 50]) < 1e-3, axis=1)), "anchor 0 (empty mask) was kept"
    assert (got.masks == round(255 / (1 + np.exp(-5.0)))).all()


def test_end_to_end_rows_with_coefficients():
    b, k = 2, 20
    g = torch.Generator().manual_seed(4)
    rows = torch.zeros(b, k, 6 + 32)
    xy = torch.rand(b, k, 2, generator=g) * 200
    rows[..., 0:2], rows[..., 2:4] = xy, xy + 40
    rows[..., 4] = torch.linspace(0.99, 0.01, k)
    rows[..., 5] = torch.randint(0, 4, (b, k), generator=g).float()
    rows[..., 6] = 1.0
    protos = torch.zeros(b, 32, 64, 80)
    protos[:, 0] = 3.0
    dec = YoloSegDecoder()
    dec.configure({"end2end": True, "task": "segment"})
    assert dec.num_classes([rows, protos]) is None
    geo = LetterboxGeometry.compute(320, 256, 320, 256)
    got = dec.decode([rows, protos], geo, conf_threshold=0.5, iou_threshold=0.5, max_detections=5)
    assert [int((got.frame == i).sum()) for i in range(b)] == [5, 5]
    assert (got.masks == round(255 / (1 + np.exp(-3.0)))).all()
    np.testing.assert_allclose(got.confidence[:5], rows[0, :5, 4].numpy(), rtol=1e-6)


def test_outputs_that_do_not_fit_are_refused_naming_the_layout():
    dec = YoloSegDecoder()
    with pytest.raises(DecodeError, match="expects two outputs"):
        dec.num_classes([torch.rand(1, 84, 2100)])
    with pytest.raises(DecodeError, match="nc >= 1"):
        dec.num_classes([torch.rand(1, 36, 2100), torch.rand(1, 32, 80, 80)])
    bad = _seg_outputs(1, 100, 2)
    bad[0][:, 4:6] *= 300  # class scores are pixels: another layout
    with pytest.raises(DecodeError, match="class scores"):
        YoloSegDecoder().num_classes(bad)
    e2e = YoloSegDecoder()
    e2e.configure({"end2end": "True"})
    with pytest.raises(DecodeError, match="6\\+32 columns"):
        e2e.num_classes([torch.rand(1, 300, 30), torch.rand(1, 32, 80, 80)])


def test_auto_picks_yolo_seg_from_the_metadata_and_from_a_prototype_output():
    from pyinfer.decoders import hint_from_metadata

    assert hint_from_metadata({"task": "segment"}) == "yolo-seg"
    assert hint_from_metadata({"task": "segment", "end2end": True}) == "yolo-seg"
    assert choose_decoder(_seg_outputs(1, 100, 2)).name == "yolo-seg"
    assert isinstance(get_decoder("yolo-seg"), YoloSegDecoder)


def test_pack_carries_masks_in_the_same_transfer_with_a_nonfinite_count():
    m = 3
    masks = torch.arange(m * 4 * 4, dtype=torch.uint8).reshape(m, 4, 4)
    got = pack(
        torch.rand(m, 4), torch.rand(m), torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1]), 2,
        nonfinite=torch.tensor(7), masks=masks, extra={"e": (torch.ones(m, 2), np.dtype(np.float32))},
    )  # fmt: skip
    np.testing.assert_array_equal(got.masks, masks.numpy())
    assert got.nonfinite == 7 and got.class_id.tolist() == [1, 2, 3] and got.extra["e"].shape == (m, 2)
    empty = pack(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), torch.zeros(0), 1,
                 masks=torch.zeros(0, 4, 4, dtype=torch.uint8))  # fmt: skip
    assert empty.masks is not None and empty.masks.shape == (0, 4, 4)


def test_detections_check_slice_and_rasterise_their_masks():
    xyxy = np.array([[10, 20, 30, 40], [0, 0, 8, 8]], np.float32)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2, :] = 200  # top half of box 0
    masks[1] = 255
    d = Detections(xyxy, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32), masks=masks)
    full = d.frame_mask(0, 64, 48)
    assert full.sum() == 20 * 10 and full[20:30, 10:30].all() and not full[30:40].any()
    assert d[[1]].masks is not None and d[[1]].masks.shape == (1, 4, 4) and d[1:].frame_mask(0, 64, 48).sum() == 64
    with pytest.raises(TypeError, match="uint8"):
        Detections(xyxy, d.confidence, d.class_id, masks=masks.astype(np.float32))
    with pytest.raises(ValueError, match="masks"):
        Detections(xyxy, d.confidence, d.class_id, masks=masks[:1])
    with pytest.raises(ValueError, match="no masks"):
        Detections(xyxy, d.confidence, d.class_id).frame_mask(0, 10, 10)
