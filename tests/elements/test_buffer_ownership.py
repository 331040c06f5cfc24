"""Every buffer that enters pyinfer is freed once it has left (or been dropped): nothing keeps a reference.

GstBaseTransform hands ``submit_input_buffer`` a reference the element must release; through PyGObject that
reference was never released, so every frame stayed alive: a buffer pool allocated a new buffer for each one
(6 MB of host memory per 1080p RGB frame, NVDEC's CUDA memory on the GPU). A weak reference is put on each
buffer where it enters the element under test; after the pipeline is set to NULL (pools freed), every buffer
that was seen must have been finalized, whether it was pushed, dropped by a stop, or copied behind a tee.
"""

from __future__ import annotations

import ctypes
import gc
import threading

import numpy as np
import pytest

from pyinfer._gi import Gst

_NOTIFY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class Finalized:
    """Counts buffers seen at a pad and buffers finalized (gst_mini_object_weak_ref)."""

    def __init__(self) -> None:
        self.seen = 0
        self.finalized = 0
        self._lock = threading.Lock()
        self._cb = _NOTIFY(self._notify)  # kept alive as long as this object
        lib = ctypes.CDLL("libgstreamer-1.0.so.0")
        self._weak_ref = lib.gst_mini_object_weak_ref
        self._weak_ref.argtypes = [ctypes.c_void_p, _NOTIFY, ctypes.c_void_p]
        self._weak_ref.restype = None

    def _notify(self, data, obj) -> None:
        with self._lock:
            self.finalized += 1

    def probe(self, pad, info):
        self._weak_ref(hash(info.get_buffer()), self._cb, None)
        with self._lock:
            self.seen += 1
        return Gst.PadProbeReturn.OK

    def watch(self, pipeline: Gst.Pipeline, element: str) -> None:
        pipeline.get_by_name(element).get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self.probe)


def _run_to_eos(pipeline: Gst.Pipeline, timeout_s: float = 90) -> None:
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(
        int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    pipeline.set_state(Gst.State.NULL)
    assert msg is not None and msg.type == Gst.MessageType.EOS, msg.parse_error() if msg else "timeout"


def _assert_all_freed(counter: Finalized, expected_seen: int) -> None:
    gc.collect()
    assert counter.seen == expected_seen
    assert counter.finalized == counter.seen, (
        f"{counter.seen - counter.finalized} of {counter.seen} buffers never freed"
    )


@pytest.mark.parametrize(
    "props",
    [
        "batch-size=1",
        "batch-size=4",
        "batch-size=4 in-flight=1",
        "batch-size=3 interval=2",
        "batch-size=2 batch-group=own",
    ],
)
def test_buffers_through_pyinfer_are_freed(embedded_model, props):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=30 ! video/x-raw,format=NV12,width=320,height=240,framerate=30/1 ! "
        f"pyinfer name=infer model-engine={embedded_model.path} {props} ! fakesink sync=false"
    )
    counter = Finalized()
    counter.watch(pipeline, "infer")
    _run_to_eos(pipeline)
    del pipeline
    _assert_all_freed(counter, 30)


def test_a_decoders_pool_is_recycled_not_grown(embedded_model):
    """The visible symptom: a pool upstream gets its buffers back, so it hands out the same few again."""
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=90 ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 ! "
        "videoconvert ! video/x-raw,format=NV12 ! "
        f"pyinfer name=infer model-engine={embedded_model.path} batch-size=4 ! fakesink sync=false"
    )
    addresses: set[int] = set()

    def probe(pad, info):
        addresses.add(hash(info.get_buffer()))
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("infer").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    _run_to_eos(pipeline)
    assert len(addresses) <= 30, f"{len(addresses)} distinct buffers for 90 frames: the pool never got them back"


def test_behind_a_tee_the_shared_buffer_and_the_copy_are_both_freed(embedded_model):
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=24 ! video/x-raw,format=RGB,width=320,height=240,framerate=30/1 ! tee name=t "
        f"t. ! queue ! pyinfer name=infer model-engine={embedded_model.path} batch-size=4 ! fakesink sync=false "
        "t. ! queue ! fakesink sync=false"
    )
    counter = Finalized()
    counter.watch(pipeline, "t")
    copies = Finalized()
    pipeline.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, copies.probe)
    _run_to_eos(pipeline)
    del pipeline
    _assert_all_freed(counter, 24)
    _assert_all_freed(copies, 24)


def test_frames_held_in_a_batch_when_the_pipeline_stops_are_freed(embedded_model):
    """A stop drops the open batch (never pushed): those buffers are released too."""
    pipeline = Gst.parse_launch(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width=320,height=240,framerate=30/1 ! "
        f"pyinfer name=infer model-engine={embedded_model.path} batch-size=8 batch-timeout=0 ! "
        "fakesink sync=false"
    )
    counter = Finalized()
    counter.watch(pipeline, "infer")
    pipeline.set_state(Gst.State.PLAYING)
    src = pipeline.get_by_name("src")
    frame = np.zeros((240, 320, 3), np.uint8).tobytes()
    for i in range(5):  # fewer than a batch, no EOS: the batch stays open
        buf = Gst.Buffer.new_wrapped(frame)
        buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
        src.emit("push-buffer", buf)
    deadline = 200
    while counter.seen < 5 and deadline:
        Gst.Bus.timed_pop(pipeline.get_bus(), 10 * Gst.MSECOND)
        deadline -= 1
    pipeline.set_state(Gst.State.NULL)
    del pipeline, src, buf
    _assert_all_freed(counter, 5)


def test_a_buffer_pushed_before_its_submit_returns_is_freed_once(embedded_model, monkeypatch):
    """The worker may push a buffer before the streaming thread has left submit_input_buffer (the wrapper is
    still borrowed then, and PyGObject takes no reference of its own): the reference handed over is pushed,
    nothing is released twice, and every buffer is freed."""
    from pyinfer.elements import infer

    pushed = threading.Event()
    before_return = []
    push = infer._Pusher.__call__
    seal = infer.InferElement._seal

    def pushing(self, pad, item):
        ret = push(self, pad, item)
        pushed.set()
        return ret

    def sealing(self):
        pushed.clear()
        seal(self)
        before_return.append(pushed.wait(2.0))  # submit returns only once the worker pushed the frame

    monkeypatch.setattr(infer._Pusher, "__call__", pushing)
    monkeypatch.setattr(infer.InferElement, "_seal", sealing)
    pipeline = Gst.parse_launch(
        "videotestsrc num-buffers=20 ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"pyinfer name=infer model-engine={embedded_model.path} batch-size=1 in-flight=1 ! fakesink sync=false"
    )
    counter = Finalized()
    counter.watch(pipeline, "infer")
    _run_to_eos(pipeline)
    del pipeline
    assert before_return.count(True) >= 20
    _assert_all_freed(counter, 20)
