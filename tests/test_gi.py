"""pyinfer._gi's helpers for the gst-python differences between GStreamer 1.22 and 1.26."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyinfer._gi import Gst, GstVideo, copy_buffer, structure


def test_structure_of_caps_reads_fields_by_index():
    caps = Gst.Caps.from_string("video/x-raw,width=320,height=240; video/x-raw,width=64,height=48")
    with structure(caps) as s:
        assert s.get_name() == "video/x-raw"
        assert s.get_int("width") == (True, 320)
        assert s.get_value("height") == 240
    with structure(caps, 1) as s:
        assert s.get_value("width") == 64


def test_structure_of_event_query_message_and_context():
    fields = Gst.Structure.new_from_string("probe, answer=(int)42")
    event = Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM, fields.copy())
    query = Gst.Query.new_custom(Gst.QueryType.CUSTOM, fields.copy())
    message = Gst.Message.new_application(None, fields.copy())
    context = Gst.Context.new("probe", True)
    for owner in (event, query, message):
        with structure(owner) as s:
            assert s.get_name() == "probe"
            assert s.get_value("answer") == 42
    with structure(context) as s:
        assert s.get_name() == "context"


def test_structure_is_none_where_the_owner_has_none():
    with structure(Gst.Event.new_eos()) as s:
        assert s is None


def test_copy_buffer_is_writable_shallow_and_keeps_timestamps_and_meta():
    buf = Gst.Buffer.new_wrapped(bytes(range(16)))
    buf.pts, buf.duration = 5 * Gst.SECOND, Gst.SECOND // 30
    GstVideo.buffer_add_video_region_of_interest_meta(buf, "box", 1, 2, 3, 4)
    copy = copy_buffer(buf)
    copy.pts = 7 * Gst.SECOND  # gst-python 1.26 raises here for a buffer that is not writable
    assert (copy.pts, buf.pts, copy.duration) == (7 * Gst.SECOND, 5 * Gst.SECOND, Gst.SECOND // 30)
    assert copy.peek_memory(0) == buf.peek_memory(0)  # memory shared, not copied
    assert copy.extract_dup(0, 16) == bytes(range(16))
    meta = GstVideo.buffer_get_video_region_of_interest_meta_id(copy, 0)
    assert (meta.x, meta.y, meta.w, meta.h) == (1, 2, 3, 4)


@pytest.mark.parametrize("size", [0, 1, 4096])
def test_copy_buffer_holds_no_extra_reference(size):
    # Gst.Buffer.copy() through PyGObject holds one reference more than a new buffer: never freed.
    fresh = Gst.Buffer.new_allocate(None, size, None)
    copy = copy_buffer(fresh)
    assert copy.mini_object.refcount == fresh.mini_object.refcount
    assert copy.get_size() == size


def test_only_the_helper_calls_get_structure():
    # Anywhere else, a get_structure() call works on 1.22 and breaks on gst-python 1.26 (or the reverse).
    top = Path(__file__).resolve().parents[1]
    helper = top / "src" / "pyinfer" / "_gi.py"
    calls = [
        f"{path.relative_to(top)}:{n}"
        for folder in ("src", "tests", "bench", "train")
        for path in sorted((top / folder).rglob("*.py"))
        if path != helper
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\.get_structure\(", line)
    ]
    assert calls == [], "use pyinfer._gi.structure() instead"


def test_the_library_copies_buffers_through_the_helper():
    # Gst.Buffer.copy() from Python leaks a reference, and on gst-python 1.26 the copy is not writable: setting
    # its timestamps raises (a detect image feeder died that way). src/ uses pyinfer._gi.copy_buffer.
    top = Path(__file__).resolve().parents[1]
    calls = [
        f"{path.relative_to(top)}:{n}"
        for path in sorted((top / "src").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b(buf|buffer|get_buffer\(\))\.copy\(\)", line.split("#")[0])
        and not line.lstrip().startswith(("#", "Use it instead"))
    ]
    assert calls == [], "use pyinfer._gi.copy_buffer() instead"
