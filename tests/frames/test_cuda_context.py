"""pyinfer hands GStreamer's CUDA elements torch's primary context (pyinfer.frames.cuda_context).

What the CPU can check: which device a ``device`` property names, which queries the element answers and with which
device, that share-cuda-context=false leaves them alone, and that a machine without the CUDA driver answers
nothing (the decoder then makes its own context, as without pyinfer). That the decoder really runs in torch's
context is checked on the GPU (tests/gpu/test_cuda_memory.py).
"""

from __future__ import annotations

import logging

import pytest

from pyinfer._gi import Gst
from pyinfer.frames import cuda_context


@pytest.mark.parametrize(
    ("device", "index"),
    [("cuda", 0), ("auto", 0), ("CUDA:1", 1), (" cuda:12 ", 12), ("cpu", None), ("cuda:x", None), ("mps", None)],
)
def test_device_index(device, index):
    assert cuda_context.device_index(device) == index


def test_other_context_types_are_not_answered():
    query = Gst.Query.new_context("gst.gl.GLDisplay")
    assert cuda_context.answer_query(Gst.ElementFactory.make("identity"), query, 0) is False
    assert query.parse_context() is None


def test_no_driver_means_no_answer_logged_once(monkeypatch, caplog):
    def no_driver():
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(cuda_context, "_load", no_driver)
    monkeypatch.setattr(cuda_context, "_contexts", {})
    monkeypatch.setattr(cuda_context, "_failed", {})
    query = Gst.Query.new_context(cuda_context.CONTEXT_TYPE)
    with caplog.at_level(logging.INFO, logger="pyinfer.frames.cuda_context"):
        assert cuda_context.answer_query(Gst.ElementFactory.make("identity"), query, 0) is False
        assert cuda_context.primary_context(0) is None
        assert cuda_context.give_context(Gst.ElementFactory.make("identity"), 0) is False
    assert query.parse_context() is None
    notes = [r.getMessage() for r in caplog.records if "not shared" in r.getMessage()]
    assert notes == ["CUDA context of device 0 not shared with GStreamer: libcuda.so.1: cannot open shared object file"]


def _ask(element, context_type: str = cuda_context.CONTEXT_TYPE) -> bool:
    return element.get_static_pad("sink").query(Gst.Query.new_context(context_type))


@pytest.mark.parametrize(("device", "index"), [("auto", 0), ("cuda", 0), ("cuda:1", 1)])
def test_pyinfer_answers_the_cuda_context_query_for_its_device(monkeypatch, device, index):
    asked = []

    def answer(element, query, i):
        asked.append((element.get_name(), query.parse_context_type()[1], i))
        return True

    monkeypatch.setattr(cuda_context, "answer_query", answer)
    inf = Gst.ElementFactory.make("pyinfer", "inf")
    inf.set_property("device", device)
    assert inf.get_property("share-cuda-context") is True  # the default
    assert _ask(inf) is True
    assert asked == [("inf", cuda_context.CONTEXT_TYPE, index)]


@pytest.mark.parametrize(("device", "share"), [("cuda", False), ("cpu", True)])
def test_pyinfer_leaves_the_query_alone_when_told_or_on_the_cpu(monkeypatch, device, share):
    def answer(element, query, i):
        raise AssertionError("answered")

    monkeypatch.setattr(cuda_context, "answer_query", answer)
    inf = Gst.ElementFactory.make("pyinfer")
    inf.set_property("device", device)
    inf.set_property("share-cuda-context", share)
    assert _ask(inf) is False  # not answered, and nobody downstream (unlinked) answers either


def test_pyinfer_forwards_a_query_it_cannot_answer(monkeypatch):
    """No context to give (no driver): the query goes on downstream as before, where a CUDA element may answer."""
    monkeypatch.setattr(cuda_context, "answer_query", lambda element, query, i: False)
    pipeline = Gst.parse_launch("identity name=up ! pyinfer name=inf device=cuda ! fakesink name=down")
    seen = []
    pipeline.get_by_name("down").get_static_pad("sink").add_probe(
        Gst.PadProbeType.QUERY_DOWNSTREAM, lambda pad, info: seen.append(info.get_query().type) or Gst.PadProbeReturn.OK
    )
    assert _ask(pipeline.get_by_name("inf")) is False
    assert Gst.QueryType.CONTEXT in seen
