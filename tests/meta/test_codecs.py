"""pyinfer.meta.codecs: the plain-GStreamer metadata codecs behind one interface, read back by one reader."""

from __future__ import annotations

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.detections import Detections
from pyinfer.meta import analytics, read_detections, read_frame_info, roi
from pyinfer.meta.codecs import codec


def _dets() -> Detections:
    return Detections(np.array([[1.5, 2.0, 30.25, 40.0]], np.float32), np.array([0.5], np.float32),
                      np.array([1], np.int32), labels=("a", "b"))  # fmt: skip


def test_auto_is_analytics_where_gstreamer_has_it_else_roi():
    assert codec("auto").name == ("analytics" if analytics.available() else "roi")


def test_an_unknown_codec_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown metadata codec 'json'"):
        codec("json")


@pytest.mark.parametrize("name", ["analytics", "both"])
def test_analytics_without_gstreamer_support_names_the_version_and_the_way_out(name):
    if analytics.available():  # GStreamer >= 1.24: the codec is there
        assert codec(name).name in ("analytics", "analytics+roi")
        return
    with pytest.raises(ValueError, match=r"GStreamer >= 1\.24.*meta=roi"):
        codec(name)


@pytest.mark.parametrize("name", ["roi", "analytics", "both"])
def test_every_codec_is_read_back_by_the_one_reader(name):
    if name != "roi" and not analytics.available():  # GStreamer < 1.24: refused (the test just above)
        with pytest.raises(ValueError, match=r"GStreamer >= 1\.24"):
            codec(name)
        return
    buf = Gst.Buffer.new_allocate(None, 16, None)
    c = codec(name)
    c.write_detections(buf, _dets(), unique_id=3, model_id=1)
    c.write_frame_info(buf, inferred=True, unique_id=3, model_id=1)
    got = read_detections(buf)
    np.testing.assert_array_equal(got.xyxy, _dets().xyxy)
    assert got.label(0) == "b" and got.extra["unique_id"].tolist() == [3]
    assert read_frame_info(buf) == roi.FrameInfo(True, 3, 1)
    assert (len(roi.roi_metas(buf)) == 1) == (name != "analytics")
    assert analytics.has_analytics(buf) == (name != "roi")
