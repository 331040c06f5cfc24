"""pyinfer.ops.crops: object crops for secondary inference, against torch's own resize of the same crop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyinfer.ops.crops import crop_resize, pixel_boxes
from pyinfer.ops.letterbox import PAD_VALUE


def _frames(b: int = 2, h: int = 90, w: int = 160) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8, generator=g)


def _reference(frames: torch.Tensor, f: int, box: list[int], size: tuple[int, int]) -> torch.Tensor:
    left, top, right, bottom = box
    crop = frames[f, top:bottom, left:right].permute(2, 0, 1)[None].float()
    out = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0)


BOXES = [[10.3, 5.7, 50.2, 60.0], [0, 0, 160, 90], [150.5, 80.2, 170, 100], [3, 4, 5, 6], [7, 7, 80, 30]]


@pytest.mark.parametrize("size", [(32, 32), (48, 32), (5, 7), (224, 224)])
def test_stretch_equals_interpolate_of_the_pixel_crop(size):
    frames = _frames()
    boxes = torch.tensor(BOXES)
    index = torch.tensor([0, 1, 1, 0, 1])
    out = crop_resize(frames, index, boxes, size[1], size[0])
    assert out.shape == (len(BOXES), size[0], size[1], 3) and out.dtype == torch.uint8
    pix = pixel_boxes(boxes, 160, 90).tolist()
    for k in range(len(BOXES)):
        diff = (out[k].int() - _reference(frames, int(index[k]), pix[k], size).int()).abs()
        assert int(diff.max()) <= 1  # float rounding of the taps' weights; almost all equal
        assert int((diff > 0).sum()) <= max(24, diff.numel() // 200)


def test_pixel_boxes_cover_the_box_inside_the_frame():
    pix = pixel_boxes(torch.tensor(BOXES), 160, 90).tolist()
    assert pix[0] == [10, 5, 51, 60]
    assert pix[2] == [150, 80, 160, 90]  # clipped to the frame
    degenerate = pixel_boxes(torch.tensor([[200.0, 95.0, 210.0, 99.0], [5.0, 5.0, 5.0, 5.0]]), 160, 90).tolist()
    assert degenerate == [[159, 89, 160, 90], [5, 5, 6, 6]]  # outside or empty: one pixel, never out of bounds


def test_letterbox_keeps_the_aspect_ratio_and_pads_grey():
    frames = _frames()
    box = [20.0, 10.0, 100.0, 50.0]  # 80 x 40 -> 32 x 16 content centred in 32 x 32
    out = crop_resize(frames, torch.tensor([0]), torch.tensor([box]), 32, 32, letterbox=True)[0]
    assert (out[:8] == PAD_VALUE).all() and (out[24:] == PAD_VALUE).all()
    ref = _reference(frames, 0, [20, 10, 100, 50], (16, 32))
    assert int((out[8:24].int() - ref.int()).abs().max()) <= 1


def test_each_box_reads_its_own_frame():
    frames = torch.zeros((3, 20, 20, 3), dtype=torch.uint8)
    for f in range(3):
        frames[f] = 50 * (f + 1)
    index = torch.tensor([2, 0, 1, 2])
    out = crop_resize(frames, index, torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4), 4, 4)
    assert [int(o[0, 0, 0]) for o in out] == [150, 50, 100, 150]


def test_no_boxes_and_bad_frames():
    frames = _frames()
    empty = crop_resize(frames, torch.empty(0, dtype=torch.int64), torch.empty((0, 4)), 8, 8)
    assert empty.shape == (0, 8, 8, 3)
    with pytest.raises(ValueError, match="uint8"):
        crop_resize(frames.float(), torch.tensor([0]), torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 8, 8)
