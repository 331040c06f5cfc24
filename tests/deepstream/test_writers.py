"""The DeepStream writers field by field on fake batches, rotated boxes for DS 9 and DS 8, and the fakes' rules."""

from __future__ import annotations

import ctypes
import itertools
import math

import numpy as np
import nvds
import pyds
import pyservicemaker as sm
import pytest

from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.frames.deepstream import CtypesInferDone
from pyinfer.meta.deepstream import (
    ROTATED_BOX_META_TYPE,
    PydsWriter,
    ServiceMakerWriter,
    WriterOptions,
    fit_label,
)

W, H = 200, 100


def _batch(ds_major: int = 9, frames: int = 1, pool: int = 64):
    buf = Gst.Buffer.new_allocate(None, 64, None)
    bm = nvds.make_batch([np.zeros((H, W, 3), np.uint8)] * frames, pool_size=pool, ds_major=ds_major)
    nvds.register(buf, bm)
    return buf, bm


def _write_sm(dets: Detections, ds_major: int = 9, **options):
    buf, bm = _batch(ds_major)
    writer = ServiceMakerWriter(sm, WriterOptions(**options))
    wrapper = sm.Buffer(buf)
    batch_meta = wrapper.batch_meta
    for fm in batch_meta.frame_items:
        report = writer.write_frame(batch_meta, fm, dets, W, H)
    return bm, report


def _rotated() -> Detections:
    # a 60x20 box turned 30 degrees about (100, 50); one box reaching past the left edge
    cxcywhr = np.array([[100.0, 50.0, 60.0, 20.0, math.radians(30)], [5.0, 50.0, 40.0, 10.0, 0.0]], np.float32)
    xyxy = np.array([[69.0, 26.3, 131.0, 73.7], [-15.0, 45.0, 25.0, 55.0]], np.float32)
    return Detections(xyxy, np.array([0.9, 0.6], np.float32), np.array([1, 0], np.int32), cxcywhr, ("a", "b"))


def test_deepstream_9_gets_the_unrotated_box_and_the_angle_in_degrees():
    bm, report = _write_sm(_rotated(), ds_major=9)
    assert report.written == 2
    first, second = bm.objects
    r = first.rect_params
    assert (r.left, r.top, r.width, r.height) == pytest.approx((70.0, 40.0, 60.0, 20.0), abs=1e-4)
    assert r.rotation_angle == pytest.approx(30.0, abs=1e-4)
    assert second.rect_params.left == pytest.approx(-15.0)  # a rotated box is not clipped: that would change it
    assert first.user_meta == []


def test_before_deepstream_9_the_enclosing_box_is_clipped_and_the_rotated_box_rides_in_user_meta():
    bm, _ = _write_sm(_rotated(), ds_major=8)
    first, second = bm.objects
    assert not hasattr(first.rect_params, "rotation_angle")
    r = first.rect_params
    assert (r.left, r.top, r.width, r.height) == pytest.approx((69.0, 26.3, 62.0, 47.4), abs=1e-4)
    assert second.rect_params.left == 0.0 and second.rect_params.width == pytest.approx(25.0)
    (meta,) = first.user_meta
    assert meta.meta_type == ROTATED_BOX_META_TYPE >= nvds.NVDS_START_USER_META
    assert meta.data["angle_deg"] == pytest.approx(30.0, abs=1e-4)
    assert (meta.data["cx"], meta.data["cy"], meta.data["width"], meta.data["height"]) == pytest.approx(
        (100.0, 50.0, 60.0, 20.0)
    )


@pytest.mark.parametrize("label", ["x" * 127, "y" * 128, "é" * 100, "a" * 300])
def test_labels_are_cut_to_127_bytes_at_a_character_boundary(label):
    dets = Detections(np.array([[1, 1, 9, 9]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int32),
                      labels=(label,))  # fmt: skip
    bm, report = _write_sm(dets)
    written = bm.objects[0].label
    assert len(written.encode()) <= 127
    assert label.startswith(written)
    assert (report.labels_cut == {label}) == (len(label.encode()) > 127)
    assert fit_label(label)[0] == written


def test_the_pyds_writer_takes_and_releases_the_lock_and_never_exceeds_the_pool():
    buf, bm = _batch(pool=3)
    dets = Detections(np.tile(np.array([[1, 1, 9, 9]], np.float32), (5, 1)), np.ones(5, np.float32),
                      np.zeros(5, np.int32), labels=("a",))  # fmt: skip
    batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
    fm = pyds.NvDsFrameMeta.cast(batch_meta.frame_meta_list.data)
    report = PydsWriter(pyds, WriterOptions(unique_id=3)).write_frame(batch_meta, fm, dets, W, H)
    assert report.written == 3 and report.pool_exhausted
    assert bm.lock_taken == 1 and bm.lock_depth == 0
    assert [o.unique_component_id for o in bm.objects] == [3, 3, 3]


def test_empty_detections_acquire_nothing():
    bm, report = _write_sm(Detections.empty())
    assert report.written == 0 and bm.acquired == 0


# -- the fakes enforce the documented contract -------------------------------------------------------
def test_fake_object_metadata_has_no_constructor():
    with pytest.raises(TypeError, match="No constructor defined"):
        sm.ObjectMetadata()


def test_fake_frame_items_alias_one_slot_that_dies_after_the_loop():
    buf, _ = _batch(frames=2)
    items = list(sm.Buffer(buf).batch_meta.frame_items)
    assert items[0] is items[1]
    with pytest.raises(nvds.Segfault):
        _ = items[0].batch_id


def test_fake_extract_is_falsy_for_non_rgb_and_crashes_when_touched():
    buf = Gst.Buffer.new_allocate(None, 64, None)
    nvds.register(buf, nvds.make_batch([np.zeros((H, W, 3), np.uint8)], color_format="RGBA"))
    t = sm.Buffer(buf).extract(0)
    assert not t
    with pytest.raises(nvds.Segfault):
        _ = t.shape


def test_fake_extract_is_a_zero_copy_pitched_view():
    import torch

    buf, bm = _batch()
    x = torch.from_dlpack(sm.Buffer(buf).extract(0))
    assert x.shape == (H, W, 3) and x.stride() == (bm.surfaces[0].pitch, 3, 1) and bm.surfaces[0].pitch > W * 3
    bm.surfaces[0].pixels[0, 0] = 200
    assert x[0, 0, 0] == 200


def test_fake_labels_overflow_and_frame_append_is_typed():
    buf, _ = _batch()
    batch_meta = sm.Buffer(buf).batch_meta
    om = batch_meta.acquire_object_meta()
    with pytest.raises(nvds.Overflow):
        om.label = "z" * 128
    for fm in batch_meta.frame_items:
        with pytest.raises(TypeError, match="incompatible"):
            fm.append(batch_meta.acquire_user_meta())
        with pytest.raises(AttributeError, match="read-only"):
            fm.bInferDone = True


def test_a_non_buffer_gives_an_empty_wrapper_silently():
    assert sm.Buffer(object()).batch_meta.n_frames == 0


# -- bInferDone through ctypes, against structs laid out as the DS headers say ----------------------------
class _GList(ctypes.Structure):
    pass


_GList._fields_ = [("data", ctypes.c_void_p), ("next", ctypes.c_void_p), ("prev", ctypes.c_void_p)]


class _FrameMeta(ctypes.Structure):
    _fields_ = [("base", ctypes.c_byte * 40), ("pad_index", ctypes.c_uint), ("batch_id", ctypes.c_uint),
                ("rest", ctypes.c_byte * 52), ("bInferDone", ctypes.c_int),
                ("obj_meta_list", ctypes.c_void_p)]  # fmt: skip


class _BatchMeta(ctypes.Structure):
    _fields_ = [("base", ctypes.c_byte * 40), ("max_frames", ctypes.c_uint), ("num_frames", ctypes.c_uint),
                ("pools", ctypes.c_void_p * 6), ("frame_meta_list", ctypes.c_void_p)]  # fmt: skip


def _c_batch(batch_ids: list[int], num_frames: int | None = None):
    frames = [_FrameMeta(batch_id=b) for b in batch_ids]
    nodes = [_GList(data=ctypes.addressof(f)) for f in frames]
    for a, b in itertools.pairwise(nodes):
        a.next = ctypes.addressof(b)
    bm = _BatchMeta(num_frames=len(frames) if num_frames is None else num_frames)
    bm.frame_meta_list = ctypes.addressof(nodes[0])
    return bm, frames, nodes


def test_ctypes_offsets_match_the_documented_layout():
    assert _FrameMeta.bInferDone.offset == 100 and _FrameMeta.batch_id.offset == 44
    assert _BatchMeta.frame_meta_list.offset == 96 and _BatchMeta.num_frames.offset == 44


def test_ctypes_marking_sets_binferdone_on_the_inferred_frames_only():
    bm, frames, _nodes = _c_batch([0, 1, 2])
    marker = CtypesInferDone(get_batch_meta=lambda ptr: ctypes.addressof(bm))
    assert marker.mark(Gst.Buffer.new(), {0, 2}, 3) == 2
    assert [f.bInferDone for f in frames] == [1, 0, 1]


def test_ctypes_marking_disables_itself_when_the_layout_does_not_check_out():
    bm, frames, _nodes = _c_batch([0, 1], num_frames=5)  # the binding says 2 frames: the offsets are wrong
    marker = CtypesInferDone(get_batch_meta=lambda ptr: ctypes.addressof(bm))
    assert marker.mark(Gst.Buffer.new(), {0, 1}, 2) == 0
    assert "layout differs" in marker.reason and not marker.available
    assert [f.bInferDone for f in frames] == [0, 0]


def test_ctypes_marking_refuses_unknown_deepstream_versions():
    assert "not verified" in CtypesInferDone(version="5.1").reason


def test_per_object_attributes_travel_as_json_user_meta():
    from pyinfer.meta.deepstream import ATTRIBUTES_META_TYPE

    dets = Detections(
        np.array([[0, 0, W, H], [1, 1, 5, 5]], np.float32), np.array([0.8, 0.7], np.float32),
        np.array([2, 0], np.int32), labels=("cat", "dog", "owl"),
        extra={"topk_class_id": np.array([[2, 0], [0, 1]], np.int32),
               "topk_confidence": np.array([[0.8, 0.1], [0.7, 0.2]], np.float32),
               "unique_id": np.array([1, 1]), "colour": np.array([3, 4])},
    )  # fmt: skip
    bm, _ = _write_sm(dets)
    first = bm.objects[0]
    (meta,) = first.user_meta
    assert meta.meta_type == ATTRIBUTES_META_TYPE
    assert [t["label"] for t in meta.data["topk"]] == ["owl", "cat"]
    assert meta.data["topk"][1]["confidence"] == pytest.approx(0.1)
    assert meta.data["colour"] == 3 and "unique_id" not in meta.data


# -- masks and keypoints (issue #15) ---------------------------------------------------------------------------------
def _seg_pose() -> Detections:
    xyxy = np.array([[10.0, 10.0, 50.0, 40.0], [100.0, 20.0, 180.0, 90.0]], np.float32)
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 2:6, 2:6] = 255
    masks[1, :, :4] = 200
    kpts = np.array([[[12.0, 11.0, 0.9], [48.5, 39.25, 0.2]], [[101.0, 21.0, 0.8], [179.0, 89.0, 0.7]]], np.float32)
    return Detections(xyxy, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32), labels=("a", "b"),
                      masks=masks, keypoints=kpts)  # fmt: skip


def test_masks_become_mask_params_in_memory_deepstream_can_free():
    from pyinfer.meta.deepstream import MASK_THRESHOLD

    dets = _seg_pose()
    bm, report = _write_sm(dets)
    assert report.written == 2 and not report.not_written
    for obj, cells in zip(bm.objects, dets.masks):
        m = obj.mask_params
        assert (m.width, m.height, m.size) == (8, 8, 8 * 8 * 4)  # the model's cells over the box, as nvinfer's
        assert m.threshold == MASK_THRESHOLD
        np.testing.assert_allclose(m.values, cells / 255.0, atol=1e-6)
        assert [name for name, _ in obj.writes].count("mask_params.mask_array") == 1
    import gc

    gc.collect()  # nothing in Python owns the blocks: collecting must not free them
    nvds.reset()  # DeepStream releases the batch: each block still holds its mask and is g_free'd
    assert not nvds.MASKS


def test_the_fake_refuses_numpy_owned_mask_memory():
    """What pyinfer must not do: hand pyservicemaker's non-copying setter an array NumPy will free."""
    buf, _bm = _batch()
    batch_meta = sm.Buffer(buf).batch_meta
    om = batch_meta.acquire_object_meta()
    with pytest.raises(nvds.BadFree, match="NumPy"):
        om.mask_params.mask_array = np.ones((4, 4), np.float32)
    with pytest.raises(nvds.BadFree, match="NumPy"):
        om.mask_params.mask_array = np.ones((4, 8), np.float32)[:, :4].copy()


def test_keypoints_become_a_json_user_meta_on_their_object():
    from pyinfer.meta.deepstream import KEYPOINTS_META_TYPE

    dets = _seg_pose()
    bm, _ = _write_sm(dets)
    for obj, kpts in zip(bm.objects, dets.keypoints):
        metas = [u for u in obj.user_meta if u.meta_type == KEYPOINTS_META_TYPE]
        assert len(metas) == 1
        np.testing.assert_allclose(metas[0].data["keypoints"], kpts, atol=1e-3)


def test_pyds_reports_masks_and_keypoints_it_cannot_write():
    buf, bm = _batch()
    batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
    frame = pyds.NvDsFrameMeta.cast(batch_meta.frame_meta_list.data)
    report = PydsWriter(pyds, WriterOptions()).write_frame(batch_meta, frame, _seg_pose(), W, H)
    assert report.written == 2
    assert report.not_written == {"masks", "keypoints"}
    assert all(o.mask_params.data == 0 for o in bm.objects)
