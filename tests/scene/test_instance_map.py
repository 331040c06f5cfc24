"""Scene.instance_map: the exact instance masks of what Scene.frame paints, without touching frame()."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from pyinfer.scene import Scene
from pyinfer.scene.generator import _draw

CASES = [(1, 320, 240, 0), (1000003, 640, 360, 37), (424242, 200, 300, 130), (7, 480, 480, 501)]


def _alone(body, width: int, height: int) -> np.ndarray:
    """The pixels ``_draw`` paints for one body drawn alone, with a colour no background has."""
    img = np.zeros((height, width, 3), np.uint8)
    _draw(img, dataclasses.replace(body, fill=(255, 0, 255), outline=(255, 0, 255)))
    return (img == (255, 0, 255)).all(-1)


@pytest.mark.parametrize(("seed", "width", "height", "index"), CASES)
@pytest.mark.parametrize("marked", [False, True])
def test_the_map_is_what_frame_paints(seed: int, width: int, height: int, index: int, marked: bool) -> None:
    scene = Scene(seed, width, height, marked=marked)
    img, objects = scene.frame(index)
    ids = scene.instance_map(index)
    assert ids.shape == (height, width) and ids.dtype == np.int32
    bodies = list(scene._bodies)
    background = scene._background.render(index)
    # background where -1; elsewhere exactly the fill or outline colour of the object named there
    np.testing.assert_array_equal(img[ids == -1], background[ids == -1])
    for body in bodies:
        own = ids == body.object_id
        colours = img[own]
        ok = (colours == body.fill).all(-1) | (colours == body.outline).all(-1)
        assert ok.all(), f"object {body.object_id}: {int((~ok).sum())} pixels in neither its fill nor outline"
    # each object's pixels: those it paints alone, less those any later object paints
    covered = np.zeros((height, width), bool)
    lost = 0
    for body in reversed(bodies):
        alone = _alone(body, width, height)
        np.testing.assert_array_equal(ids == body.object_id, alone & ~covered, err_msg=f"object {body.object_id}")
        lost += int((alone & covered).sum())
        covered |= alone
    assert set(np.unique(ids).tolist()) <= {-1} | {b.object_id for b in bodies}
    assert {o.object_id for o in objects} <= set(np.unique(ids).tolist())
    if seed == 1:
        assert lost > 0, "this frame was chosen for its overlapping objects"


def test_later_objects_take_the_pixels_they_cover() -> None:
    """Over many frames, some objects lose pixels to later ones, and the map gives those pixels to the later one."""
    scene = Scene(3, 320, 240)
    occluded = 0
    for index in range(0, 400, 20):
        scene.frame(index)
        ids = scene.instance_map(index)
        bodies = list(scene._bodies)
        for k, body in enumerate(bodies):
            alone = _alone(body, 320, 240)
            hidden = alone & (ids != body.object_id)
            if hidden.any():
                occluded += 1
                later = {b.object_id for b in bodies[k + 1 :]}
                assert set(np.unique(ids[hidden]).tolist()) <= later
    assert occluded >= 3


def _digest(scene: Scene, indices: list[int], *, with_map: bool) -> list[str]:
    out = []
    for i in indices:
        img, objects = scene.frame(i)
        if with_map:
            scene.instance_map(i)
            scene.instance_map(i + 3)  # seeking ahead and back changes nothing either
        out.append(hashlib.sha256(img.tobytes() + repr(objects).encode()).hexdigest())
    return out


@pytest.mark.parametrize("marked", [False, True])
def test_frame_is_unchanged_by_the_map(marked: bool) -> None:
    indices = [0, 1, 2, 70, 5, 200, 130, 131]
    plain = _digest(Scene(1000003, 320, 180, marked=marked), indices, with_map=False)
    mapped = _digest(Scene(1000003, 320, 180, marked=marked), indices, with_map=True)
    assert plain == mapped


def test_rotated_scenes_are_refused() -> None:
    scene = Scene(5, 320, 240, rotated=True)
    with pytest.raises(ValueError, match="rotated"):
        scene.instance_map(0)
    with pytest.raises(IndexError):
        Scene(5, 320, 240).instance_map(-1)
