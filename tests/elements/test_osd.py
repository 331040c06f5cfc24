"""pyosd and pyinfer.draw: boxes, rotated boxes and tags in every packed format, any size and stride; buffers
without metadata untouched; writability through a tee; malformed metadata skipped; line width and text size
that follow the frame; tags that do not cover each other; the display-* properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinfer._gi import Gst, GstVideo
from pyinfer.detections import Detections
from pyinfer.draw import PALETTE, _tag_lut, auto_text_size, draw_detections, label_text, text_mask
from pyinfer.elements._base import writable
from pyinfer.frames.system import FORMATS
from pyinfer.meta.roi import UNTRACKED_ID, read_detections_checked, set_track_ids, write_detections
from support import run

GREY = 128


def _dets(xyxy, cls=(1,), conf=(0.87,), cxcywhr=None, extra=None, tracker_id=None) -> Detections:
    return Detections(
        np.asarray(xyxy, np.float32).reshape(-1, 4), np.asarray(conf, np.float32), np.asarray(cls, np.int32),
        cxcywhr=None if cxcywhr is None else np.asarray(cxcywhr, np.float32).reshape(-1, 5),
        labels=("a", "b", "c"), extra=extra or {},
        tracker_id=None if tracker_id is None else np.asarray(tracker_id, np.uint64),
    )  # fmt: skip


def _osd(frames_dets, fmt="RGB", width=97, height=61, stride=None, tee=False, extra_meta=None, props=""):
    """Push grey frames with detections through pyosd (``props``: its properties, ``"k=v ..."``); returns
    (result, drawn frames, reference frames)."""
    c = FORMATS[fmt]
    caps = Gst.Caps.from_string(f"video/x-raw,format={fmt},width={width},height={height},framerate=30/1")
    info = GstVideo.VideoInfo.new_from_caps(caps)
    row = stride or info.stride[0]
    osd = f"pyosd name=osd {props} ! appsink name=out"
    tail = f"tee name=t t. ! queue ! {osd} t. ! queue ! appsink name=ref" if tee else osd
    pipeline = Gst.parse_launch(f"appsrc name=src format=time ! {tail}")
    pipeline.get_by_name("src").set_property("caps", caps)
    out = {"out": [], "ref": []}
    for name in out if tee else ("out",):
        sink = pipeline.get_by_name(name)
        sink.set_property("emit-signals", True)
        sink.set_property("sync", False)

        def on_sample(appsink, name=name):
            buf = appsink.emit("pull-sample").get_buffer()
            raw = np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8)
            out[name].append(raw[: height * row].reshape(height, row))
            return Gst.FlowReturn.OK

        sink.connect("new-sample", on_sample)

    def feed(p):
        src = p.get_by_name("src")
        for i, dets in enumerate(frames_dets):
            data = np.full((height, row), GREY, np.uint8)
            data[:, width * c :] = 7  # row padding: must stay as it is
            buf = Gst.Buffer.new_wrapped(data.tobytes())
            with writable(buf):
                if stride is not None:
                    GstVideo.buffer_add_video_meta_full(
                        buf, GstVideo.VideoFrameFlags.NONE, info.finfo.format, width, height, 1, [0, 0, 0, 0],
                        [row, 0, 0, 0],
                    )  # fmt: skip
                if dets is not None:
                    write_detections(buf, dets)
                if extra_meta is not None:
                    extra_meta(buf)
            buf.pts = i * Gst.SECOND // 30
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    result = run(pipeline, 30, feed)
    assert result.ok, result.error
    pixels = [f[:, : width * c].reshape(height, width, c) for f in out["out"]]
    return result, pixels, out, pipeline


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_box_edges_get_the_class_colour_in_the_channel_order_of_every_format(fmt):
    _, [frame], _, _ = _osd([_dets([20, 30, 70, 55])], fmt=fmt)
    colour = PALETTE[1]
    order = [2, 1, 0] if fmt.startswith("B") else [0, 1, 2]
    np.testing.assert_array_equal(frame[55, 45, :3], colour[order])  # bottom edge
    np.testing.assert_array_equal(frame[40, 20, :3], colour[order])  # left edge
    assert (frame[40, 45] == GREY).all()  # inside the box: untouched
    if FORMATS[fmt] == 4:
        assert (frame[..., 3] == GREY).all()  # the alpha / padding byte is never written


def test_padded_rows_from_video_meta_are_respected_and_the_padding_is_untouched():
    _, [frame], out, _ = _osd([_dets([5, 20, 30, 40])], fmt="RGB", width=37, height=45, stride=37 * 3 + 13)
    assert (out["out"][0][:, 37 * 3 :] == 7).all()
    np.testing.assert_array_equal(frame[40, 15], PALETTE[1])
    assert (frame[30, 15] == GREY).all()


def test_rotated_boxes_are_drawn_as_polygons():
    angle = math.radians(30)
    cx, cy, w, h = 60.0, 40.0, 50.0, 16.0
    ex = 0.5 * (w * math.cos(angle) + h * math.sin(angle))
    ey = 0.5 * (w * math.sin(angle) + h * math.cos(angle))
    dets = _dets([cx - ex, cy - ey, cx + ex, cy + ey], cxcywhr=[cx, cy, w, h, angle])
    _, [frame], _, _ = _osd([dets], width=120, height=80)
    colour = PALETTE[1]
    # Midpoint of the lower long edge, clockwise rotation in image coordinates: (0, h/2) turned by +30 degrees.
    mx, my = cx - (h / 2) * math.sin(angle), cy + (h / 2) * math.cos(angle)
    assert (frame[int(my), int(mx)] == colour).all()
    corner = frame[int(cy + ey) - 1, int(cx + ex) - 1]  # a corner of the enclosing box, off the polygon
    assert (corner == GREY).all()


def test_frames_without_metadata_pass_untouched_and_drawing_stays_in_its_tee_branch():
    result, _, out, _ = _osd([None, _dets([10, 20, 40, 50]), None], tee=True)
    assert len(out["out"]) == len(out["ref"]) == 3
    assert np.array_equal(out["out"][0], out["ref"][0]) and np.array_equal(out["out"][2], out["ref"][2])
    assert not np.array_equal(out["out"][1], out["ref"][1])
    assert (out["ref"][1] != 7).sum() == (out["ref"][1] == GREY).sum()  # the other branch's frame is pristine
    assert result.warnings == []


def _malformed(buf):
    meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, "junk", 1, 1, 5, 5)
    meta.id = 1  # after the one good detection
    s = Gst.Structure.new_empty("detection")
    s.set_value("left", float("nan"))
    meta.add_param(s)


def test_malformed_metadata_is_skipped_with_a_warning_and_counted_while_good_boxes_are_drawn():
    result, drawn, _, pipeline = _osd([_dets([20, 30, 70, 55])] * 3, extra_meta=_malformed)
    assert pipeline.get_by_name("osd").get_property("skipped-metas") == 3
    assert len(result.warnings) == 1 and "ROI 1" in result.warnings[0] and "left" in result.warnings[0]
    assert all((f[55, 45] == PALETTE[1]).all() for f in drawn)


def test_tags_carry_track_id_label_and_confidence_and_predicted_boxes_no_score():
    extra = {"predicted": np.array([False, False, True])}
    tracked = _dets([[0, 0, 5, 5]] * 3, cls=(0, 1, 2), conf=(0.5, 0.25, 0.75), extra=extra,
                    tracker_id=[7, UNTRACKED_ID, 9])  # fmt: skip
    assert [label_text(tracked, i) for i in range(3)] == ["#7 a 0.50", "b 0.25", "#9 c"]
    assert text_mask("#7 a 0.50").shape[1] > text_mask("a 0.50").shape[1]


def test_predicted_boxes_are_drawn_thin():
    frame = np.full((60, 80, 3), GREY, np.uint8)
    dets = _dets([10, 30, 60, 50], extra={"predicted": np.array([True])}, tracker_id=[3])
    draw_detections(frame, dets, thickness=3)
    assert (frame[50, 35] == PALETTE[1]).all() and (frame[49, 35] == GREY).all()
    solid = np.full((60, 80, 3), GREY, np.uint8)
    draw_detections(solid, _dets([10, 30, 60, 50]), thickness=3)  # the same box, not predicted
    assert (solid[48, 35] == PALETTE[1]).all()


def test_tag_text_contrasts_with_every_palette_colour():
    luma = np.array([0.299, 0.587, 0.114])
    for colour in PALETTE:
        lut = _tag_lut(tuple(int(v) for v in colour))
        assert (lut[0] == colour).all()  # background of the tag: the class colour
        assert abs(float(lut[255] @ luma) - float(colour @ luma)) >= 90, colour  # ink: black or white


def test_any_frame_size_and_boxes_beyond_the_frame_draw_without_errors():
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (2, 3), (17, 5), (40, 300)):
        frame = np.full((h, w, 4), GREY, np.uint8)
        view = frame[:, :, [2, 1, 0, 3]]  # a strided, non-contiguous view
        xyxy = np.sort(rng.uniform(-50, 350, (20, 2, 2)), axis=1).reshape(20, 4)[:, [0, 2, 1, 3]]
        cx = np.column_stack([rng.uniform(-50, 350, (20, 2)), rng.uniform(1, 400, (20, 2)), rng.uniform(-4, 4, 20)])
        dets = Detections(xyxy.astype(np.float32), rng.random(20).astype(np.float32),
                          rng.integers(0, 30, 20).astype(np.int32), cxcywhr=cx.astype(np.float32))  # fmt: skip
        draw_detections(view, dets, "BGRx")
        assert (frame[..., 3] == GREY).all()


def _osd_with_video_meta(stride: int, offset: int, rows: np.ndarray, width: int, height: int, fmt: str = "RGB"):
    """Push one grey frame laid out by a GstVideoMeta (``rows``: the memory, one row per line) with one box
    through pyosd; returns (result, the memory that came out)."""
    caps = Gst.Caps.from_string(f"video/x-raw,format={fmt},width={width},height={height},framerate=30/1")
    info = GstVideo.VideoInfo.new_from_caps(caps)
    pipeline = Gst.parse_launch("appsrc name=src format=time ! pyosd name=osd ! appsink name=out")
    pipeline.get_by_name("src").set_property("caps", caps)
    out = []
    sink = pipeline.get_by_name("out")
    sink.set_property("emit-signals", True)
    sink.set_property("sync", False)

    def on_sample(appsink):
        buf = appsink.emit("pull-sample").get_buffer()
        out.append(np.frombuffer(buf.extract_dup(0, buf.get_size()), np.uint8).reshape(rows.shape))
        return Gst.FlowReturn.OK

    sink.connect("new-sample", on_sample)

    def feed(p):
        buf = Gst.Buffer.new_wrapped(rows.tobytes())
        with writable(buf):
            GstVideo.buffer_add_video_meta_full(
                buf, GstVideo.VideoFrameFlags.NONE, info.finfo.format, width, height, 1, [offset, 0, 0, 0],
                [stride, 0, 0, 0],
            )  # fmt: skip
            write_detections(buf, _dets([5, 20, 30, 40]))
        src = p.get_by_name("src")
        src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    return run(pipeline, 30, feed), out


def test_a_bottom_up_frame_with_a_negative_stride_is_drawn_the_right_way_up():
    w, h, row = 37, 45, 37 * 3 + 13
    rows = np.full((h, row), GREY, np.uint8)
    rows[:, w * 3 :] = 7
    result, [memory] = _osd_with_video_meta(-row, row * (h - 1), rows, w, h)
    assert result.ok, result.error
    frame = memory[::-1, : w * 3].reshape(h, w, 3)  # the top row is the last one in memory
    np.testing.assert_array_equal(frame[40, 15], PALETTE[1])  # bottom edge of the box
    np.testing.assert_array_equal(frame[25, 5], PALETTE[1])  # left edge
    assert (frame[30, 15] == GREY).all()
    assert (memory[:, w * 3 :] == 7).all()  # the row padding is untouched


def test_a_negative_stride_without_its_offset_is_a_bus_error_not_a_write_before_the_buffer():
    # Issue #19: stride -row with offset 0 passed the size check and pyosd drew (h - 1) * row bytes before
    # the buffer's start. Only run against the fixed bounds check (see tests/frames/test_system.py).
    w, h, row = 37, 45, 37 * 3 + 13
    rows = np.full((h, row), GREY, np.uint8)
    result, out = _osd_with_video_meta(-row, 0, rows, w, h)
    assert result.message == Gst.MessageType.ERROR
    assert result.error_source == "osd"
    assert f"starts {row * (h - 1)} bytes before the buffer" in result.error.message, result.error.message
    assert out == []


# -- sizes that follow the frame, tags that do not cover each other, what is displayed ---------------------


def _colour_bbox(frame: np.ndarray, colour) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), exclusive, of the pixels of exactly ``colour``."""
    ys, xs = np.nonzero((frame[..., :3] == np.asarray(colour, np.uint8)).all(axis=-1))
    assert len(ys), f"no pixel of colour {colour}"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _line_and_tag(width: int, height: int, props: str = "") -> tuple[int, int]:
    """Drawn through pyosd, one box at the same place relative to the frame: (the width of its bottom line,
    the height of its tag), both in pixels counted in the frame."""
    x0, y0, x1, y1 = width // 4, 2 * height // 5, 3 * width // 5, 4 * height // 5
    _, [frame], _, _ = _osd([_dets([x0, y0, x1, y1])], width=width, height=height, props=props)
    on = (frame == PALETTE[1]).all(axis=-1)
    column = on[:, (x0 + x1) // 2]  # crosses the top line and the bottom one, not the tag
    line = 0
    while column[y1 - line]:
        line += 1
    tag = on[:y0, x0]  # the tag's first column is its margin: all tag colour
    tag_rows = int(tag.sum())
    assert tag[y0 - tag_rows :].all(), "the tag is one block right above the box"
    return line, tag_rows


def test_lines_and_text_grow_with_the_frame_and_the_properties_override_them():
    small_line, small_tag = _line_and_tag(640, 480)
    big_line, big_tag = _line_and_tag(3840, 2160)
    assert small_line == 2 and big_line == 6  # 2 px up to 720p (as before), one per 360 rows beyond
    assert big_tag >= 3 * small_tag, (small_tag, big_tag)  # 48 px text at 4K, 12 at 480p
    assert auto_text_size(480) == 12 and auto_text_size(720) == 18 and auto_text_size(1080) == 24
    line, tag = _line_and_tag(640, 480, "thickness=5 text-size=40")
    assert line == 5 and tag >= 3 * small_tag


def _rects_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_overlapping_detections_get_tags_that_do_not_cover_each_other():
    dets = _dets([[100, 100, 200, 200], [110, 104, 210, 204]], cls=(0, 1), conf=(0.9, 0.8))
    _, [frame], _, _ = _osd([dets], width=640, height=480, props="display-bbox=false")
    first, second = _colour_bbox(frame, PALETTE[0]), _colour_bbox(frame, PALETTE[1])
    assert not _rects_overlap(first, second), (first, second)
    assert first[3] == 100  # the first tag right above its box
    assert second[1] == 100  # the second one shifted down past it: it would have covered it
    # Drawn again, the same places: the placement depends on nothing but the detections.
    _, [again], _, _ = _osd([dets], width=640, height=480, props="display-bbox=false")
    assert np.array_equal(frame, again)


@pytest.mark.parametrize("where", ["top", "bottom"])
def test_a_crowd_of_tags_at_the_frame_edge_stays_inside_it_without_overlap(where):
    h, w = 120, 160
    y = 0 if where == "top" else h - 12
    n = 6
    dets = Detections(
        np.tile(np.array([[w - 30, y, w - 1, min(h - 1, y + 11)]], np.float32), (n, 1)),
        np.full(n, 0.5, np.float32), np.arange(n, dtype=np.int32), labels=tuple("abcdef"),
    )  # fmt: skip
    frame = np.full((h, w, 3), GREY, np.uint8)
    draw_detections(frame, dets, display_bbox=False)
    rects = [_colour_bbox(frame, PALETTE[i]) for i in range(n)]
    for i, a in enumerate(rects):
        assert a[0] >= 0 and a[1] >= 0 and a[2] <= w and a[3] <= h
        assert not any(_rects_overlap(a, b) for b in rects[i + 1 :]), rects


def _outside(frame: np.ndarray, box) -> np.ndarray:
    """Pixels not grey outside ``box`` (left, top, right, bottom; inclusive) as (y, x) indices."""
    changed = (frame != GREY).any(axis=-1)
    x0, y0, x1, y1 = box
    changed[y0 : y1 + 1, x0 : x1 + 1] = False
    return np.argwhere(changed)


def test_display_text_false_draws_the_boxes_without_text():
    box = (20, 30, 70, 55)
    _, [frame], _, _ = _osd([_dets(box)], width=97, height=61, props="display-text=false")
    assert (frame[55, 45] == PALETTE[1]).all() and (frame[40, 20] == PALETTE[1]).all()  # the outline
    assert len(_outside(frame, box)) == 0  # no tag above the box, nor anywhere else
    inside = frame[33:53, 23:68]
    assert (inside == GREY).all()  # nor inside it


def test_display_bbox_false_draws_the_tags_without_the_boxes():
    box = (20, 30, 70, 55)
    _, [frame], _, _ = _osd([_dets(box)], width=97, height=61, props="display-bbox=false")
    assert (frame[55, 45] == GREY).all() and (frame[40, 20] == GREY).all() and (frame[40, 70] == GREY).all()
    assert (frame[30:56, 20:71] == GREY).all()  # no outline: the whole box is untouched
    tag = _outside(frame, box)
    assert len(tag) and tag[:, 0].max() < 30  # the tag, above the box


def _track_4(buf):
    """As pytracker tags the frame's detection: track id 4."""
    set_track_ids(read_detections_checked(buf).metas, [0], [4], predicted=False)


def _tag_pixels(props: str) -> np.ndarray:
    """The tag pyosd drew for one detection of class 1 ("b", 0.87) with track id 4, at 640x480."""
    _, [frame], _, _ = _osd([_dets([20, 60, 120, 110])], width=640, height=480, props=props, extra_meta=_track_4)
    x0, y0, x1, y1 = _colour_bbox(frame[:60], PALETTE[1])
    return frame[y0:y1, x0:x1]


def test_display_confidence_false_shows_the_label_without_the_score():
    colour = tuple(int(v) for v in PALETTE[1])
    size = auto_text_size(480)
    tag = _tag_pixels("display-confidence=false")
    np.testing.assert_array_equal(tag, _tag_lut(colour)[text_mask("#4 b", size)])
    full = _tag_pixels("")
    assert full.shape[1] == text_mask("#4 b", size).shape[1] + text_mask(" 0.87", size).shape[1]
    np.testing.assert_array_equal(full[:, : tag.shape[1]], tag)  # the same head, then the score
    assert label_text(_dets([0, 0, 5, 5], tracker_id=[4]), 0, confidence=False) == "#4 b"


def test_display_track_id_false_leaves_the_track_id_out():
    colour = tuple(int(v) for v in PALETTE[1])
    size = auto_text_size(480)
    tag = _tag_pixels("display-track-id=false display-confidence=false")
    np.testing.assert_array_equal(tag, _tag_lut(colour)[text_mask("b", size)])
    assert label_text(_dets([0, 0, 5, 5], tracker_id=[4]), 0, track_id=False) == "b 0.87"


def test_nothing_to_display_leaves_the_frame_untouched():
    _, _, out, _ = _osd([_dets([20, 30, 70, 55])], tee=True, props="display-bbox=false display-text=false")
    assert np.array_equal(out["out"][0], out["ref"][0])


def _shape_dets(masks=None, keypoints=None) -> Detections:
    return Detections(
        np.array([[10, 8, 50, 48]], np.float32), np.array([0.9], np.float32), np.array([1], np.int32),
        labels=("a", "b", "c"), masks=masks, keypoints=keypoints,
    )  # fmt: skip


def test_masks_are_blended_in_the_class_colour_inside_the_mask_only():
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, :2, :2] = 200  # the box's top-left quarter: pixels x 10..29, y 8..27
    frame = np.full((60, 80, 3), GREY, np.uint8)
    draw_detections(frame, _shape_dets(masks=masks), "RGB", display_bbox=False, display_text=False)
    colour = PALETTE[1].astype(np.float32)
    want = np.round(GREY * 0.55 + colour * 0.45).astype(np.uint8)
    assert (frame[8:28, 10:30] == want).all()
    assert (frame[28:48, 10:50] == GREY).all() and (frame[8:28, 30:50] == GREY).all()
    untouched = np.full((60, 80, 3), GREY, np.uint8)
    draw_detections(untouched, _shape_dets(masks=masks), "RGB", display_bbox=False, display_text=False,
                    display_mask=False)  # fmt: skip
    assert (untouched == GREY).all()


def test_confident_keypoints_are_dots_joined_by_the_person_skeleton():
    kpts = np.zeros((1, 17, 3), np.float32)
    kpts[0, :, :2] = [70, 50]  # out of the way
    kpts[0, 5] = [20, 20, 0.9]  # left shoulder
    kpts[0, 6] = [40, 20, 0.9]  # right shoulder: the skeleton joins 5 and 6
    kpts[0, 0] = [20, 40, 0.2]  # the nose, not confident: not drawn
    frame = np.full((60, 80, 3), GREY, np.uint8)
    draw_detections(frame, _shape_dets(keypoints=kpts), "RGB", display_bbox=False, display_text=False, thickness=1)
    colour = PALETTE[1]
    assert (frame[20, 20] == colour).all() and (frame[20, 40] == colour).all()
    assert (frame[20, 30] == colour).all()  # on the 5-6 line
    assert (frame[40, 20] == GREY).all() and (frame[50, 70] == GREY).all()


def test_pyosd_draws_the_masks_its_metadata_carries_unless_display_mask_is_false():
    masks = np.full((1, 8, 8), 255, np.uint8)
    dets = _shape_dets(masks=masks)
    _, drawn, _, _ = _osd([dets], props="display-bbox=false display-text=false")
    colour = PALETTE[1].astype(np.float32)
    assert (drawn[0][10:46, 12:48] == np.round(GREY * 0.55 + colour * 0.45).astype(np.uint8)).all()
    _, plain, _, _ = _osd([dets], props="display-bbox=false display-text=false display-mask=false")
    assert (plain[0] == GREY).all()
