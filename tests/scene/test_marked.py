"""Marked scenes (``Scene(..., marked=True)``): a dot, a bar or nothing on every object, named in the truth.

The option must leave every other scene as it was: the hashes below were taken from the generator before marks
were added to it (frames 0..99 of two scenes, images, JSON-lines truth records and the exact truth values).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pyinfer.cli import main as cli_main
from pyinfer.errors import ConfigError
from pyinfer.jsonl import read_jsonl
from pyinfer.scene import MARKS, Scene, SceneObject
from pyinfer.scene.generator import _TRIANGLE_ASPECT, _Body, _draw, _mark_mask
from pyinfer.scene.video import render_frames, truth_record

# (seed, width, height, rotated): sha256 of frames 0..99, of their truth records (pyinfer scene's JSON lines) and of
# their exact truth values, all taken before the marked option existed.
UNCHANGED = [
    (
        (7, 640, 360, False),
        "8e0af787280f841633297832f811a0a0a6d97ee252f4766db499dba93ebef087",
        "0cf44bc5495af63bdf854352e278dd980a7f75eb4a92858c87f3bee3b26b1a1b",
        "cbdd9180009e3046c13b8cc321592934ddac2578b58036710d6b7ea43f1b3711",
    ),
    (
        (3, 1280, 720, True),
        "489294ee6239a1b8f61667983d2da4b6a47bead260eb3f682c3fdb39bf12a5bd",
        "0165336b02eb0e7e39b1c88be0f9f2b072bf20415f05d1ac6264f5bc74c675b3",
        "ba08169df8be7d4785fa6b7a8252ff09997b3c5cfa4f5c8084dbb8800e0c5c6b",
    ),
]
W, H, SEED, N_FRAMES = 640, 360, 7, 120


@pytest.mark.parametrize(("key", "images", "records", "exact"), UNCHANGED, ids=["default", "rotated"])
def test_unmarked_scenes_are_bit_identical_to_before_marks_existed(
    key: tuple[int, int, int, bool], images: str, records: str, exact: str
) -> None:
    seed, width, height, rotated = key
    scene = Scene(seed, width, height, rotated=rotated, marked=False)
    img_h, rec_h, exact_h = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    for i in range(100):
        img, objects = scene.frame(i)
        img_h.update(img.tobytes())
        rec = truth_record(i, round(i * 1e9 / 30), width, height, objects)
        rec_h.update(json.dumps(rec, sort_keys=True).encode())
        exact_h.update(repr([(o.object_id, o.class_id, o.label, o.bbox, o.cxcywhr) for o in objects]).encode())
        assert all(o.mark is None for o in objects)
        assert all("mark" not in r for r in rec["objects"])
    assert (img_h.hexdigest(), rec_h.hexdigest(), exact_h.hexdigest()) == (images, records, exact)


@pytest.fixture(scope="module")
def pair() -> list[tuple[tuple[np.ndarray, list[SceneObject]], tuple[np.ndarray, list[SceneObject]]]]:
    """Frames 0..119 of the marked scene and of the unmarked scene of the same seed."""
    marked, plain = Scene(SEED, W, H, marked=True), Scene(SEED, W, H)
    return [(marked.frame(i), plain.frame(i)) for i in range(N_FRAMES)]


def test_marked_scene_has_the_unmarked_scenes_objects_and_motion(pair) -> None:
    for (_, objs), (_, want) in pair:
        assert [o.mark for o in objs] and all(o.mark in MARKS for o in objs)
        assert [(o.object_id, o.class_id, o.label, o.bbox, o.cxcywhr) for o in objs] == [
            (o.object_id, o.class_id, o.label, o.bbox, o.cxcywhr) for o in want
        ]


def test_every_mark_occurs_and_an_object_keeps_its_mark(pair) -> None:
    marks: dict[int, str | None] = {}
    for (_, objs), _ in pair:
        for o in objs:
            assert marks.setdefault(o.object_id, o.mark) == o.mark
    assert set(marks.values()) == set(MARKS)
    # Uniform over many objects (each from its own generator, seeded by the scene seed and the object id).
    many = [Scene(s, 160, 120, marked=True).frame(0)[1] for s in range(60)]
    counts = {m: sum(o.mark == m for objs in many for o in objs) for m in MARKS}
    assert all(counts[m] > 0.2 * sum(counts.values()) for m in MARKS), counts


def test_marks_change_only_pixels_inside_the_objects(pair) -> None:
    changed = 0
    for (img, objs), (want, _) in pair:
        diff = (img != want).any(axis=2)
        inside = np.zeros_like(diff)
        for o in objs:
            left, top, w, h = o.bbox
            inside[math.floor(top) : math.ceil(top + h), math.floor(left) : math.ceil(left + w)] = True
        assert not (diff & ~inside).any()
        changed += int(diff.sum())
    assert changed > 0


def _unoccluded(scene: Scene, index: int) -> list[_Body]:
    """The bodies of frame ``index`` (after rendering it) wholly inside the frame and under no later body's box."""
    out = []
    bodies = scene._bodies
    for k, body in enumerate(bodies):
        left, top, right, bottom = body.box()
        if left < 0 or top < 0 or right > scene.width or bottom > scene.height:
            continue
        later = [b.box() for b in bodies[k + 1 :]]
        if any(lt < right and rt > left and tp < bottom and bt > top for lt, tp, rt, bt in later):
            continue
        out.append(body)
    return out


def test_marks_are_drawn_in_the_outline_colour_at_the_objects_centre() -> None:
    scene = Scene(SEED, W, H, marked=True)
    seen = {m: 0 for m in MARKS}
    for index in range(0, N_FRAMES, 3):
        img, _ = scene.frame(index)
        for body in _unoccluded(scene, index):
            s, hh = body.size, body.half_extent()[1]
            if body.mark == "dot":  # a triangle's dot sits at its centroid, its bar lower (module docstring)
                cy = body.cy + (hh / 3.0 if body.class_id == 2 else 0.0)
            else:
                cy = body.cy + (hh - 0.17 * s if body.class_id == 2 else 0.0)

            def px(dx: float, dy: float, cy: float = cy, body: _Body = body, img: np.ndarray = img) -> tuple:
                """The pixel ``(dx, dy) * size`` from the mark's centre."""
                row, col = math.floor(cy + dy * body.size), math.floor(body.cx + dx * body.size)
                return tuple(int(v) for v in img[row, col])

            if body.mark == "plain":
                assert px(0.0, 0.0) == body.fill
            elif body.mark == "dot":
                assert px(0.0, 0.0) == body.outline
                assert px(0.0, -0.11) == body.outline  # a disc: as high as wide
                assert px(-0.22, 0.0) == px(0.22, 0.0) == body.fill  # no bar
            else:
                assert px(0.0, 0.0) == body.outline
                assert px(-0.2, 0.0) == px(0.2, 0.0) == body.outline  # a bar: wide
                assert px(0.0, -0.12) == px(0.0, 0.12) == body.fill  # and low
            seen[str(body.mark)] += 1
    assert min(seen.values()) >= 5, seen


@pytest.mark.parametrize("class_id", [0, 1, 2])
@pytest.mark.parametrize("mark", ["dot", "bar"])
def test_a_mark_lies_inside_the_fill_of_every_shape_at_every_size(class_id: int, mark: str) -> None:
    rng = np.random.default_rng(class_id)
    for size in [*np.linspace(4.0, 60.0, 57), *rng.uniform(60.0, 300.0, 20)]:
        cx, cy = 160.0 + rng.random(), 160.0 + rng.random()
        fill, outline = (200, 100, 50), (80, 40, 20)
        body = _Body(0, class_id, cx, cy, float(size), 0.0, 0.0, 0.0, fill, outline)
        bare = np.zeros((320, 320, 3), np.uint8)
        _draw(bare, body)
        body.mark = mark
        marked = np.zeros_like(bare)
        _draw(marked, body)
        changed = (marked != bare).any(axis=2)
        assert ((bare[changed] == fill).all(axis=1)).all()  # only fill pixels are drawn over
        assert ((marked[changed] == outline).all(axis=1)).all()
        if size >= 8.0:  # and the mark is whole there: the fill holds it, nothing was clipped away
            ys = (np.arange(320, dtype=np.float32) + 0.5 - cy)[:, None]
            xs = (np.arange(320, dtype=np.float32) + 0.5 - cx)[None, :]
            assert changed.sum() == _mark_mask(body, xs, ys).sum() > 0, size


def test_triangle_marks_sit_where_the_triangle_is_wide_enough() -> None:
    s = 100.0
    hh = s / 2 * _TRIANGLE_ASPECT
    body = _Body(0, 2, 0.0, 0.0, s, 0.0, 0.0, 0.0, (0, 0, 255), (0, 0, 100), mark="bar")
    ys = np.array([[hh - 0.17 * s]], np.float32)  # the bar's centre, 0.17 * size above the base
    assert _mark_mask(body, np.array([[0.0]], np.float32), ys).all()


def test_random_access_gives_the_sequential_marked_frames(pair) -> None:
    scene = Scene(SEED, W, H, marked=True)
    for i in (100, 3, 64, 119, 0):
        img, objs = scene.frame(i)
        np.testing.assert_array_equal(img, pair[i][0][0])
        assert objs == pair[i][0][1]


def test_rotated_and_marked_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="marked"):
        Scene(1, 160, 120, rotated=True, marked=True)


def test_truth_record_of_a_marked_scene_names_the_mark(pair) -> None:
    (_, objs), _ = pair[5]
    rec = truth_record(5, 0, W, H, objs)
    assert [r["mark"] for r in rec["objects"]] == [o.mark for o in objs]
    frames = list(render_frames(SEED, W, H, 6, marked=True))
    assert frames[5][1] == objs


def test_scene_command_with_marked_writes_the_marks_in_the_truth(tmp_path: Path, capsys) -> None:
    assert cli_main(["scene", "--marked", "--frames", "3", "--width", "160", "--height", "120", "--seed", "3",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    assert "marked" in capsys.readouterr().out
    records = list(read_jsonl(tmp_path / "truth.jsonl"))
    want = Scene(3, 160, 120, marked=True).frame(2)[1]
    assert [(o["object_id"], o["mark"]) for o in records[2]["objects"]] == [(o.object_id, o.mark) for o in want]
    assert (tmp_path / "video.mp4").stat().st_size > 0


def test_scene_command_refuses_rotated_with_marked(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["scene", "--rotated", "--marked", "--frames", "1", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "not allowed" in capsys.readouterr().err
