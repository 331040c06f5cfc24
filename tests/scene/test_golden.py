"""The default (axis-aligned) scenes are frozen: the committed shapes model and the held-out tests depend on them.

The hashes were taken from the generator before rotated scenes were added to it. A change that alters a single
pixel or truth value of a default scene fails here; rotated scenes are a separate option and must not touch the
default path. Images hash the raw RGB bytes; truth hashes both the exact floats (``repr``) and the JSON-lines
record that ``pyinfer scene`` writes.

The image hashes were taken again when the background noise stopped going through BLAS (issue #19's CI run
on an AVX2 machine: the matrix product rounded differently from the AVX-512 machine that took them first); the
truth hashes did not change. Now every CPU gives these bits.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from pyinfer.scene import Scene
from pyinfer.scene.video import render_frames, truth_record

# (seed, width, height, frame, image sha256[:16], truth record sha256[:16], exact truth sha256[:16], objects)
GOLDEN = [
    (0, 1280, 720, 0, "c87de974386bcdce", "43c6162de7a4066f", "a7bc2508ad0d780c", 8),
    (0, 1280, 720, 1, "d5e0a0cbfb998582", "04d4a2ccf03c0fff", "567c5d499826cefa", 8),
    (0, 1280, 720, 63, "30a59234e49a272e", "ae3609bf1839eeb0", "564222d2e0b726fc", 6),
    (0, 1280, 720, 64, "6fa997f58a085b4e", "5a9da3f5a3f5219a", "4edb3962c6c532ee", 6),
    (0, 1280, 720, 130, "3036422eee5c0281", "31014fac7bf0355c", "b386df1e4b222cc6", 10),
    (0, 1280, 720, 299, "3b528f0496fab0d5", "323f33975ca84843", "c04dcd50cc871cf0", 8),
    (1000003, 800, 600, 0, "6a0a5006bb6091fb", "3a0a2f6cf6df5957", "2654f75c2d9e5a82", 5),
    (1000003, 800, 600, 17, "615b603d004a9dde", "142166e69ed47b56", "43045dea7e0e90eb", 5),
    (1000003, 800, 600, 200, "afdfc35b7274c330", "5e5f833bb4ede3f0", "d05097cdc56e70b9", 5),
    (11, 320, 240, 5, "ef39775e6a40ccbb", "490b383b3ba0a830", "8cf7b7920f35181c", 5),
    (11, 320, 240, 150, "9206e08d0220d482", "8e233d936f811c81", "15c47e5288f5c020", 3),
    (5, 641, 479, 77, "a847a067dd17446b", "a225418c38f964d8", "674088d376a7275d", 7),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.fixture(scope="module")
def scenes() -> dict[tuple[int, int, int], Scene]:
    return {key: Scene(*key) for key in {(g[0], g[1], g[2]) for g in GOLDEN}}


@pytest.mark.parametrize(("seed", "width", "height", "index", "image", "record", "exact", "count"), GOLDEN)
def test_default_scene_frames_and_truth_are_bit_identical_to_the_frozen_hashes(
    scenes: dict[tuple[int, int, int], Scene],
    seed: int,
    width: int,
    height: int,
    index: int,
    image: str,
    record: str,
    exact: str,
    count: int,
) -> None:
    img, objects = scenes[seed, width, height].frame(index)
    rec = truth_record(index, round(index * 1e9 / 30), width, height, objects)
    assert len(objects) == count
    assert _sha(repr([(o.object_id, o.class_id, o.label, o.bbox) for o in objects]).encode()) == exact
    assert _sha(json.dumps(rec, sort_keys=True).encode()) == record
    assert _sha(img.tobytes()) == image


def test_render_frames_yields_the_frozen_default_scene() -> None:
    frames = list(render_frames(11, 320, 240, 6))
    img, objects = frames[5]
    assert _sha(img.tobytes()) == GOLDEN[9][4]
    assert len(objects) == GOLDEN[9][7]
