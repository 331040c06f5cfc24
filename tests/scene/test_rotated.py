"""Rotated scenes: spinning ellipses, rectangles and triangles whose truth carries canonical rotated boxes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from pyinfer.cli import main as cli_main
from pyinfer.jsonl import read_jsonl
from pyinfer.ops.rotated import corners, rotated_iou
from pyinfer.scene import ROTATED_CLASSES, Scene, SceneObject, canonical_cxcywhr
from pyinfer.scene.generator import _MAX_SPIN, _MIN_SPIN, ROTATED_MAX_SIZE
from pyinfer.scene.video import render_frames, truth_record

W, H = 400, 300
N_FRAMES = 160


@pytest.fixture(scope="module")
def clip() -> list[tuple[np.ndarray, list[SceneObject]]]:
    return list(render_frames(21, W, H, N_FRAMES, rotated=True))


def _class_colour(img: np.ndarray) -> np.ndarray:
    """(H, W) int: the class whose fill colour a pixel has, or -1 (its channel beats the others by >= 100)."""
    rgb = img.astype(np.int16)
    out = np.full(img.shape[:2], -1)
    for c in range(3):
        others = np.delete(rgb, c, axis=2).max(axis=2)
        out[rgb[..., c] - others >= 100] = c
    return out


def _fully_inside(o: SceneObject, margin: float = 2.0) -> bool:
    pts = corners(np.array([o.cxcywhr]))[0]
    return bool((pts[:, 0] > margin).all() and (pts[:, 0] < W - margin).all() and (pts[:, 1] > margin).all()) and bool(
        (pts[:, 1] < H - margin).all()
    )


def _inside(box: tuple[float, ...], pad: float) -> np.ndarray:
    """(H / 2, W / 2) bool: every other pixel centre of the frame, inside ``box`` grown by ``pad``."""
    ys, xs = np.mgrid[0:H:2, 0:W:2] + 0.5
    cx, cy, w, h, t = box
    u = (xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)
    v = (ys - cy) * math.cos(t) - (xs - cx) * math.sin(t)
    return (np.abs(u) <= w / 2 + pad) & (np.abs(v) <= h / 2 + pad)


def test_rotated_scenes_are_deterministic_and_random_access_equals_sequential(
    clip: list[tuple[np.ndarray, list[SceneObject]]],
) -> None:
    scene = Scene(21, W, H, rotated=True)
    for i in (100, 3, 159, 64, 63, 0):
        img, objs = scene.frame(i)
        np.testing.assert_array_equal(img, clip[i][0])
        assert objs == clip[i][1]


def test_rotated_and_default_scenes_of_one_seed_differ() -> None:
    img_r, objs_r = Scene(21, W, H, rotated=True).frame(5)
    img_d, objs_d = Scene(21, W, H).frame(5)
    assert not np.array_equal(img_r, img_d)
    assert all(o.cxcywhr is None for o in objs_d)
    assert all(o.cxcywhr is not None for o in objs_r)


def test_every_rotated_box_is_canonical_and_labelled_with_the_rotated_classes(
    clip: list[tuple[np.ndarray, list[SceneObject]]],
) -> None:
    seen = set()
    for _, objs in clip:
        for o in objs:
            _, _, w, h, angle = o.cxcywhr
            assert w >= h > 0.0
            assert 0.0 <= angle < math.pi
            assert o.label == ROTATED_CLASSES[o.class_id]
            seen.add(o.class_id)
    assert seen == {0, 1, 2}


def test_bbox_is_the_box_enclosing_the_rotated_box_clipped_to_the_frame(
    clip: list[tuple[np.ndarray, list[SceneObject]]],
) -> None:
    for _, objs in clip[::5]:
        for o in objs:
            pts = corners(np.array([o.cxcywhr]))[0]
            lo = np.clip(pts.min(0), 0, [W, H])
            hi = np.clip(pts.max(0), 0, [W, H])
            np.testing.assert_allclose(o.bbox, [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], atol=1e-6)


def test_objects_spin_within_the_configured_rate(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    """Between consecutive frames a fully visible object turns by 0.004..0.03 rad (modulo pi), so angles change."""
    steps = []
    for (_, prev), (_, cur) in itertools.pairwise(clip):
        before = {o.object_id: o for o in prev if _fully_inside(o)}
        for o in cur:
            if o.object_id in before and _fully_inside(o):
                d = (o.cxcywhr[4] - before[o.object_id].cxcywhr[4]) % math.pi
                steps.append(min(d, math.pi - d))
    steps = np.array(steps)
    assert len(steps) > 200
    assert steps.min() >= _MIN_SPIN - 1e-9
    assert steps.max() <= _MAX_SPIN + 1e-9


def test_the_long_side_stays_within_the_rotated_size_range(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    for _, objs in clip:
        for o in objs:
            assert o.cxcywhr[2] <= ROTATED_MAX_SIZE * min(W, H) + 1e-6


@pytest.mark.parametrize(
    ("class_id", "fill_range"),
    [(0, (0.45, 0.75)), (1, (0.55, 0.95)), (2, (0.2, 0.45))],  # ellipse ~ pi/4, rectangle ~ 1, triangle ~ 1/2
)
def test_unoccluded_objects_fill_their_rotated_box_tightly_with_their_colour(
    clip: list[tuple[np.ndarray, list[SceneObject]]], class_id: int, fill_range: tuple[float, float]
) -> None:
    checked = 0
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    for img, objs in clip[::4]:
        classes = _class_colour(img)
        for o in objs:
            if o.class_id != class_id or not _fully_inside(o, margin=4.0) or o.cxcywhr[3] < 12:
                continue
            others = [p for p in objs if p is not o]
            if (
                others
                and rotated_iou(
                    np.array([o.cxcywhr]) * [1, 1, 1.2, 1.2, 1], np.array([p.cxcywhr for p in others])
                ).max()
                > 0
            ):
                continue
            cx, cy, w, h, a = o.cxcywhr
            u = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
            v = (ys - cy) * math.cos(a) - (xs - cx) * math.sin(a)
            box = (np.abs(u) <= w / 2 + 1) & (np.abs(v) <= h / 2 + 1)
            mine = classes == class_id
            near = (np.abs(u) <= w / 2 + 6) & (np.abs(v) <= h / 2 + 6)
            assert not (mine & near & ~box).any(), "class colour outside the rotated box"
            assert fill_range[0] <= (mine & box).sum() / (w * h) <= fill_range[1]
            # Tight: the fill reaches close to the box along both axes (outline thickness plus a pixel). A
            # triangle's inner fill stops t / sin(half apex angle) short of its sharp apex, and its last w / h px
            # are a sliver under a pixel wide that pixel centres may miss.
            t = max(1.0, round(0.06 * h))
            slack = 2.5 * t + 1.5
            apex = t / math.sin(math.atan(h / (2 * w))) + w / h + 1.5 if class_id == 2 else slack
            mu, mv = u[mine & box], v[mine & box]
            near_end, far_end = sorted((w / 2 - mu.max(), w / 2 + mu.min()))
            assert near_end <= slack
            assert far_end <= apex
            assert h / 2 - np.abs(mv).max() <= slack
            checked += 1
    assert checked >= 3


def test_a_partly_visible_object_is_clipped_along_its_own_axes(
    clip: list[tuple[np.ndarray, list[SceneObject]]],
) -> None:
    """At the frame edge the box keeps its angle, stays inside the object's full box and covers its visible part."""
    scene = Scene(21, W, H, rotated=True)
    clipped = 0
    for i in range(0, N_FRAMES, 3):
        scene.frame(i)
        bodies = {b.object_id: b for b in scene._bodies}
        for o in clip[i][1]:
            body = bodies[o.object_id]
            a, b = body.half_extent()
            full = canonical_cxcywhr(body.cx, body.cy, 2 * a, 2 * b, body.angle)
            if np.allclose(full, o.cxcywhr, atol=1e-6):
                continue
            clipped += 1
            # Same axes: the angle agrees modulo pi/2 (canonical form swaps w and h if clipping made w < h).
            turn = (o.cxcywhr[4] - full[4]) % (math.pi / 2)
            assert min(turn, math.pi / 2 - turn) < 1e-9
            # The clipped box lies inside the full box (IoU = area ratio). Shared edges are collinear, where the
            # exact rotated IoU is accurate to ~1e-7 (pyinfer.ops.rotated), not to machine precision.
            ratio = (o.cxcywhr[2] * o.cxcywhr[3]) / (full[2] * full[3])
            assert rotated_iou(np.array([o.cxcywhr]), np.array([full]))[0, 0] == pytest.approx(ratio, abs=1e-6)
            # The visible part of the full box lies inside the clipped box: sample the frame's pixel centres.
            assert not (_inside(full, -1e-3) & ~_inside(o.cxcywhr, 1e-3)).any()
    assert clipped >= 5


@pytest.mark.parametrize(
    ("box", "want"),
    [
        ((10.0, 20.0, 30.0, 10.0, 0.5), (10.0, 20.0, 30.0, 10.0, 0.5)),
        ((10.0, 20.0, 10.0, 30.0, 0.5), (10.0, 20.0, 30.0, 10.0, 0.5 + math.pi / 2)),
        ((0.0, 0.0, 30.0, 10.0, -0.5), (0.0, 0.0, 30.0, 10.0, math.pi - 0.5)),
        ((0.0, 0.0, 30.0, 10.0, 3 * math.pi + 0.25), (0.0, 0.0, 30.0, 10.0, 0.25)),
        ((0.0, 0.0, 10.0, 30.0, math.pi / 2 + 0.1), (0.0, 0.0, 30.0, 10.0, 0.1)),
        ((0.0, 0.0, 30.0, 10.0, math.pi), (0.0, 0.0, 30.0, 10.0, 0.0)),
    ],
)
def test_canonical_form_has_w_at_least_h_and_angle_in_0_pi(box: tuple[float, ...], want: tuple[float, ...]) -> None:
    got = canonical_cxcywhr(*box)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert rotated_iou(np.array([box]), np.array([got]))[0, 0] == pytest.approx(1.0)


def test_truth_record_of_a_rotated_scene_carries_cxcywhr(clip: list[tuple[np.ndarray, list[SceneObject]]]) -> None:
    _, objs = clip[7]
    rec = truth_record(7, 0, W, H, objs)
    assert len(rec["objects"]) == len(objs) > 0
    for got, o in zip(rec["objects"], objs, strict=True):
        np.testing.assert_allclose(got["cxcywhr"][:4], o.cxcywhr[:4], atol=0.006)
        assert got["cxcywhr"][4] == pytest.approx(o.cxcywhr[4], abs=1e-5)
        assert got["label"] == o.label


def test_scene_command_with_rotated_writes_truth_with_rotated_boxes(tmp_path: Path, capsys) -> None:
    assert cli_main(["scene", "--rotated", "--frames", "4", "--width", "160", "--height", "120", "--seed", "3",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    assert "rotated" in capsys.readouterr().out
    records = list(read_jsonl(tmp_path / "truth.jsonl"))
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    want = Scene(3, 160, 120, rotated=True).frame(2)[1]
    assert [o["object_id"] for o in records[2]["objects"]] == [o.object_id for o in want]
    assert all(len(o["cxcywhr"]) == 5 for o in records[2]["objects"])
    assert (tmp_path / "video.mp4").stat().st_size > 0
