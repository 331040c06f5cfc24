from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pyinfer.errors import ConfigError
from pyinfer.scene import CLASSES, Scene, SceneObject

W, H = 320, 240
N_FRAMES = 300


@pytest.fixture(scope="module")
def clip() -> list[tuple[np.ndarray, list[SceneObject]]]:
    scene = Scene(11, W, H)
    return [scene.frame(i) for i in range(N_FRAMES)]


def _intersects(a: tuple[float, ...], b: tuple[float, ...], pad: float = 0.0) -> bool:
    x_overlap = a[0] - pad < b[0] + b[2] and b[0] < a[0] + a[2] + pad
    return x_overlap and a[1] - pad < b[1] + b[3] and b[1] < a[1] + a[3] + pad


def _within(bbox: tuple[float, float, float, float], width: int, height: int) -> bool:
    left, top, w, h = bbox
    return left >= 0.0 and top >= 0.0 and left + w <= width + 1e-9 and top + h <= height + 1e-9


def _class_colour(img: np.ndarray) -> np.ndarray:
    """(H, W) int: the class whose fill colour a pixel has, or -1 (its channel beats the others by >= 100)."""
    rgb = img.astype(np.int16)
    out = np.full(img.shape[:2], -1)
    for c in range(3):
        others = np.delete(rgb, c, axis=2).max(axis=2)
        out[rgb[..., c] - others >= 100] = c
    return out


def test_same_seed_gives_identical_frames_and_truth() -> None:
    a, b = Scene(3, 160, 120), Scene(3, 160, 120)
    for i in range(40):
        (img_a, objs_a), (img_b, objs_b) = a.frame(i), b.frame(i)
        np.testing.assert_array_equal(img_a, img_b)
        assert objs_a == objs_b


def test_other_seed_gives_other_frames_and_truth() -> None:
    img_a, objs_a = Scene(3, 160, 120).frame(10)
    img_b, objs_b = Scene(4, 160, 120).frame(10)
    assert not np.array_equal(img_a, img_b)
    assert objs_a != objs_b


def test_random_access_equals_sequential(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    scene = Scene(11, W, H)
    for i in (150, 3, 299, 64, 63, 128, 0, 200, 201):
        img, objs = scene.frame(i)
        np.testing.assert_array_equal(img, clip[i][0])
        assert objs == clip[i][1]


def test_iteration_equals_frame_calls(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    for (img, objs), (want_img, want_objs) in zip(itertools.islice(Scene(11, W, H), 5), clip[:5], strict=True):
        np.testing.assert_array_equal(img, want_img)
        assert objs == want_objs


def test_frames_are_contiguous_rgb_uint8(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    img, _ = clip[0]
    assert img.shape == (H, W, 3)
    assert img.dtype == np.uint8
    assert img.flags.c_contiguous


def test_boxes_lie_inside_the_frame_and_are_large_enough(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    for _, objs in clip:
        for o in objs:
            _, _, w, h = o.bbox
            assert _within(o.bbox, W, H)
            assert w * h >= 16.0
            assert o.label == CLASSES[o.class_id]


def test_object_sizes_stay_within_6_to_22_percent(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    m = min(W, H)
    for _, objs in clip:
        for o in objs:
            left, top, w, h = o.bbox
            if left > 0 and top > 0 and left + w < W and top + h < H:  # unclipped
                assert 0.06 * m - 1e-6 <= w <= 0.22 * m + 1e-6


def test_three_to_ten_objects_are_visible(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    counts = np.array([len(objs) for _, objs in clip])
    assert counts.max() <= 10
    assert (counts >= 3).mean() > 0.95
    assert 4.0 <= counts.mean() <= 9.0


def test_all_three_classes_appear_and_ids_keep_their_class(
    clip: list[tuple[np.ndarray, list[SceneObject]]],
) -> None:
    class_of: dict[int, int] = {}
    for _, objs in clip:
        for o in objs:
            assert class_of.setdefault(o.object_id, o.class_id) == o.class_id
    assert set(class_of.values()) == {0, 1, 2}


def test_objects_enter_at_an_edge_and_leave(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    first = {o.object_id for o in clip[0][1]}
    last = {o.object_id for o in clip[-1][1]}
    assert first - last, "no object left the frame in 300 frames"
    seen = set(first)
    newcomers = 0
    for _, objs in clip[1:]:
        for o in objs:
            if o.object_id not in seen:
                seen.add(o.object_id)
                newcomers += 1
                left, top, w, h = o.bbox
                assert left == 0.0 or top == 0.0 or left + w == pytest.approx(W) or top + h == pytest.approx(H)
    assert newcomers >= 3


def test_later_objects_cover_earlier_ones(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    """Boxes overlap in some frames (occlusion happens), and the last-drawn object's colour wins in its centre."""
    overlaps = 0
    for img, objs in clip:
        classes = _class_colour(img)
        for i, j in itertools.combinations(range(len(objs)), 2):
            if _intersects(objs[i].bbox, objs[j].bbox):
                overlaps += 1
                top = objs[j]  # drawn after objs[i]
                left, t, w, h = top.bbox
                inside = left > 8 and t > 8 and left + w < W - 8 and t + h < H - 8 and w >= 12
                if inside and not any(_intersects(top.bbox, o.bbox) for o in objs[j + 1 :]):
                    cx, cy = int(left + w / 2), int(t + (0.7 if top.class_id == 2 else 0.5) * h)
                    assert classes[cy, cx] == top.class_id
    assert overlaps >= 10


@pytest.mark.parametrize(
    ("class_id", "fill_range"),
    [(0, (0.45, 0.72)), (1, (0.6, 0.92)), (2, (0.2, 0.42))],  # circle ~ pi/4, square ~ 1, triangle ~ 1/2, less outline
)
def test_unoccluded_objects_show_their_shape_and_colour_exactly_inside_their_box(
    clip: list[tuple[np.ndarray, list[SceneObject]]], class_id: int, fill_range: tuple[float, float]
) -> None:
    margin = 0.07 * min(W, H)  # keeps away objects entering the frame below the visibility threshold
    checked = 0
    for img, objs in clip[::2]:
        classes = _class_colour(img)
        for o in objs:
            left, top, w, h = o.bbox
            if o.class_id != class_id or w < 12 or not (margin < left and margin < top):
                continue
            if left + w > W - margin or top + h > H - margin:
                continue
            if any(_intersects(o.bbox, p.bbox, pad=4.0) for p in objs if p is not o):
                continue
            x0, y0, x1, y1 = math.floor(left), math.floor(top), math.ceil(left + w), math.ceil(top + h)
            window = classes[y0:y1, x0:x1]
            mine = window == class_id
            assert not np.isin(window, [c for c in range(3) if c != class_id]).any()
            assert fill_range[0] <= mine.sum() / (w * h) <= fill_range[1]
            ring = classes[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3].copy()
            ring[3:-3, 3:-3] = -1
            assert not (ring >= 0).any(), "class colour outside the box"
            ys, xs = np.nonzero(mine)
            slack = 2.5 * max(1.0, round(0.06 * w)) + 1.5  # outline thickness (doubled at the triangle's apex)
            gaps = (
                xs.min() + x0 - left,
                left + w - (xs.max() + x0 + 1),
                ys.min() + y0 - top,
                top + h - (ys.max() + y0 + 1),
            )
            assert max(gaps) <= slack, gaps
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize(("width", "height"), [(641, 479), (64, 64), (1001, 64), (64, 300)])
def test_any_size_from_64_renders(width: int, height: int) -> None:
    scene = Scene(5, width, height)
    for i in (0, 1, 77):
        img, objs = scene.frame(i)
        assert img.shape == (height, width, 3)
        assert img.flags.c_contiguous
        for o in objs:
            assert _within(o.bbox, width, height)


@pytest.mark.parametrize(
    ("seed", "width", "height", "match"),
    [(-1, 64, 64, "seed"), (0, 63, 64, "width"), (0, 64, 10, "height"), (0, 64.0, 64, "width")],
)
def test_bad_arguments_raise_config_error(seed: int, width: int, height: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Scene(seed, width, height)


def test_negative_frame_index_raises() -> None:
    with pytest.raises(IndexError, match="frame index"):
        Scene(0, 64, 64).frame(-1)
