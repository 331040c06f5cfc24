"""YoloPoseDecoder: keypoint layouts, the keypoint shape from metadata, mapping back to the frame, misfits.

The end-to-end comparison with ultralytics' predict on exported models is tests/reference/test_ultralytics_seg_pose.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.decoders import choose_decoder, get_decoder, hint_from_metadata
from pyinfer.decoders.yolo_pose import YoloPoseDecoder, parse_kpt_shape
from pyinfer.errors import ConfigError, DecodeError
from pyinfer.ops.letterbox import LetterboxGeometry


def _pose_output(b: int, n: int, nc: int, k: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(b, 4 + nc + k * d, n)
    out[:, 0] = torch.linspace(20, 300, n)  # apart: a few overlap
    out[:, 1] = 128
    out[:, 2:4] = 16
    out[:, 4 : 4 + nc] = torch.rand(b, nc, n, generator=g) * 0.4
    out[:, 4, ::7] = 0.95
    kp = out[:, 4 + nc :].view(b, k, d, n)
    kp[:, :, 0] = torch.rand(b, k, n, generator=g) * 400 - 40  # some off the input: clipped in the frame
    kp[:, :, 1] = torch.rand(b, k, n, generator=g) * 300 - 20
    if d == 3:
        kp[:, :, 2] = torch.rand(b, k, n, generator=g)
    return out


def _reference(out: torch.Tensor, geo: LetterboxGeometry, nc: int, k: int, d: int, conf: float):
    """Keypoints of every anchor above ``conf`` (boxes 16 px wide, 40 px apart: no suppression), per frame."""
    frames = []
    for f in range(out.shape[0]):
        o = out[f].double().numpy()
        sel = np.flatnonzero(o[4 : 4 + nc].max(axis=0) > conf)
        sel = sel[np.argsort(-o[4 : 4 + nc, sel].max(axis=0), kind="stable")]
        kp = o[4 + nc :, sel].T.reshape(len(sel), k, d)
        x = np.clip((kp[..., 0] - geo.pad_x) / geo.gain_x, 0, geo.frame_w)
        y = np.clip((kp[..., 1] - geo.pad_y) / geo.gain_y, 0, geo.frame_h)
        c = kp[..., 2] if d == 3 else np.ones_like(x)
        frames.append(np.stack([x, y, c], axis=-1))
    return frames


@pytest.mark.parametrize(("nc", "k", "d", "meta"), [(1, 17, 3, {}), (2, 5, 3, {"kpt_shape": [5, 3]}),
                                                     (1, 4, 2, {"kpt_shape": "[4, 2]"})])  # fmt: skip
def test_keypoints_map_back_to_the_frame_clipped(nc, k, d, meta):
    out = _pose_output(2, 64, nc, k, d)
    geo = LetterboxGeometry.compute(640, 480, 320, 320)
    dec = YoloPoseDecoder()
    dec.configure(meta)
    assert dec.num_classes([out]) == nc
    got = dec.decode([out], geo, conf_threshold=0.5, iou_threshold=0.7, max_detections=300)
    want = _reference(out, geo, nc, k, d, 0.5)
    frames = got.detections()
    for f in range(2):
        assert frames[f].keypoints is not None and frames[f].keypoints.shape == (len(want[f]), k, 3)
        np.testing.assert_allclose(frames[f].keypoints, want[f], atol=1e-3)
    assert got.keypoints is not None and got.keypoints.dtype == np.float32


def test_end_to_end_rows_with_keypoints():
    b, rows_n, k = 2, 30, 17
    rows = torch.zeros(b, rows_n, 6 + k * 3)
    rows[..., 0:2] = 10
    rows[..., 2:4] = 50
    rows[..., 4] = torch.linspace(0.99, 0.01, rows_n)
    rows[..., 6::3] = 100.0
    rows[..., 7::3] = 60.0
    rows[..., 8::3] = 0.5
    dec = YoloPoseDecoder()
    dec.configure({"kpt_shape": "[17, 3]", "end2end": "True"})
    assert dec.num_classes([rows]) is None
    geo = LetterboxGeometry.compute(640, 480, 320, 320)  # gain 0.5, pad_y 40
    got = dec.decode([rows], geo, conf_threshold=0.5, iou_threshold=0.7, max_detections=300)
    assert got.keypoints is not None and got.keypoints.shape == (2 * 15, 17, 3)
    np.testing.assert_allclose(got.keypoints[..., 0], 200.0)
    np.testing.assert_allclose(got.keypoints[..., 1], 40.0)
    np.testing.assert_allclose(got.keypoints[..., 2], 0.5)


def test_the_keypoint_shape_from_metadata_is_checked():
    assert parse_kpt_shape("[17, 3]") == (17, 3) and parse_kpt_shape([4, 2]) == (4, 2)
    for bad in ("17x3", [17, 4], [0, 3], None):
        with pytest.raises(ConfigError, match="kpt_shape"):
            parse_kpt_shape(bad)
    dec = YoloPoseDecoder()
    dec.configure({"kpt_shape": [20, 3]})
    with pytest.raises(DecodeError, match=r"keypoints \[20, 3\] from the metadata"):
        dec.num_classes([_pose_output(1, 64, 1, 17, 3)])


def test_outputs_that_do_not_fit_are_refused():
    with pytest.raises(DecodeError, match="expects one output"):
        YoloPoseDecoder().num_classes([torch.rand(1, 56, 100), torch.rand(1, 32, 8, 8)])
    bad = _pose_output(1, 64, 1, 17, 3)
    bad[:, 4 + 1 + 2 :: 3] = 50.0  # keypoint confidences are pixels: another layout
    with pytest.raises(DecodeError, match="not probabilities"):
        YoloPoseDecoder().num_classes([bad])


def test_auto_picks_yolo_pose_from_the_metadata():
    assert hint_from_metadata({"task": "pose", "kpt_shape": [17, 3]}) == "yolo-pose"
    assert choose_decoder([torch.rand(1, 56, 2100)], hint="yolo-pose").name == "yolo-pose"
    assert isinstance(get_decoder("yolo-pose"), YoloPoseDecoder)
