"""Caps pyosd and pyinfer cannot take: an ERROR from the element naming the offered format and the accepted
ones (issue #19: before, only upstream's "Internal data stream error", reason not-negotiated)."""

from __future__ import annotations

import pytest

from pyinfer._gi import Gst
from support import run

ACCEPTED = "it accepts video/x-raw format RGB, BGR, RGBA, BGRA, RGBx, BGRx"


def _appsrc_into(element: str, fmt: str = "I420", features: str = ""):
    caps = f"video/x-raw{features},format={fmt},width=64,height=48,framerate=30/1"
    pipeline = Gst.parse_launch(f"appsrc name=src format=time caps={caps} ! {element} name=el ! fakesink")

    def feed(p):
        src = p.get_by_name("src")
        for i in range(3):
            buf = Gst.Buffer.new_wrapped(bytes(64 * 48 * 3))
            buf.pts = i * Gst.SECOND // 30
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    return run(pipeline, 30, feed)


def _expect_negotiation_error(res, *fragments: str) -> None:
    assert res.message == Gst.MessageType.ERROR
    assert res.error_source == "el", (res.error_source, res.error.message)  # ours comes before upstream's
    assert res.error.matches(Gst.CoreError.quark(), Gst.CoreError.NEGOTIATION), res.error.message
    for fragment in fragments:
        assert fragment in res.error.message, res.error.message


@pytest.mark.parametrize("fmt", ["I420", "NV12", "GRAY8"])
def test_pyosd_names_a_refused_format_and_the_accepted_ones(fmt):
    res = _appsrc_into("pyosd", fmt)
    _expect_negotiation_error(res, f"video/x-raw format {fmt}", ACCEPTED)


@pytest.mark.parametrize("features", ["", "(memory:NVMM)"])
def test_pyinfer_names_a_refused_format_and_the_accepted_ones(fixed_model, features):
    res = _appsrc_into(f"pyinfer model-engine={fixed_model}", "GRAY16_LE", features)
    offered = f"cannot take video/x-raw{features} format GRAY16_LE"
    _expect_negotiation_error(res, offered, "it accepts video/x-raw format RGB", "video/x-raw(memory:NVMM) format RGB")


def test_caps_and_accept_caps_queries_that_merely_probe_post_nothing():
    # Upstream elements ask before they choose: a "no" to a question is not an error.
    pipeline = Gst.parse_launch("appsrc name=src format=time ! pyosd name=el ! fakesink")
    pipeline.set_state(Gst.State.PAUSED)
    try:
        pad = pipeline.get_by_name("el").get_static_pad("sink")
        i420 = Gst.Caps.from_string("video/x-raw,format=I420,width=64,height=48,framerate=30/1")
        assert pad.query_caps(i420).is_empty()
        assert not pad.query_accept_caps(i420)
        assert pipeline.get_bus().timed_pop_filtered(int(0.2 * Gst.SECOND), Gst.MessageType.ERROR) is None
    finally:
        pipeline.set_state(Gst.State.NULL)


def test_a_converter_in_front_negotiates_without_errors(run_pipeline):
    res = run_pipeline(
        "videotestsrc num-buffers=3 ! video/x-raw,format=I420,width=64,height=48 ! videoconvert ! pyosd ! "
        "appsink name=sink"
    )
    assert res.ok, res.error
    assert len(res.pts) == 3
