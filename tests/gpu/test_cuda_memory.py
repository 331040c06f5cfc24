"""GPU-resident frames (issue #12), run on a machine with an NVIDIA GPU and gst-plugins-bad's nvcodec.

NVDEC decodes the 1080p H.264 scene (``pyinfer scene --width 1920 --height 1080``; ``PYINFER_GPU_VIDEO`` or
``.gpu-data/scene/video.mp4`` with its ``truth.jsonl``) into ``video/x-raw(memory:CUDAMemory)``; pyinfer reads the
NV12 planes through the mapped device pointer. These tests prove on real decoder output what the CPU tests
(tests/ops/test_colour.py, tests/frames) prove on CPU tensors: the planes are read where GstVideoMeta says, the GPU
colour conversion agrees with GStreamer's videoconvert, and the element finds the scene's objects on CUDA frames
exactly as on the same frames in system memory, every buffer delivered once, in order, still in CUDA memory.

CI has no GPU: the module is skipped there (and says why); the GPU run is recorded in bench/results.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinfer._gi import Gst, structure
from pyinfer.evaluate import evaluate
from pyinfer.frames.video import CUDA_FEATURE, VideoLayout, map_frame
from pyinfer.jsonl import frame_record, read_jsonl
from pyinfer.meta import read_detections

ROOT = Path(__file__).resolve().parents[2]
VIDEO = Path(os.environ.get("PYINFER_GPU_VIDEO", ROOT / ".gpu-data" / "scene" / "video.mp4"))

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
if Gst.ElementFactory.find("nvh264dec") is None:
    pytest.skip("needs NVDEC (nvh264dec: an NVIDIA GPU and its driver)", allow_module_level=True)
if not VIDEO.exists():
    pytest.skip(
        f"GPU machine without its prepared 1080p scene video {VIDEO} (bench/README.md)", allow_module_level=True
    )

DECODE = f"filesrc location={VIDEO} ! qtdemux ! h264parse ! nvh264dec"
CUDA_NV12 = "video/x-raw(memory:CUDAMemory),format=NV12"


def _pull(desc: str, limit: int | None = None, timeout_s: float = 120) -> list[Gst.Sample]:
    """Play ``desc`` (an appsink named ``sink``) and return its samples, in order; fails on an error."""
    pipeline = Gst.parse_launch(desc)
    sink = pipeline.get_by_name("sink")
    sink.set_property("sync", False)
    samples: list[Gst.Sample] = []
    pipeline.set_state(Gst.State.PLAYING)
    try:
        deadline = Gst.util_get_timestamp() + int(timeout_s * Gst.SECOND)
        while limit is None or len(samples) < limit:
            sample = sink.emit("try-pull-sample", Gst.SECOND)
            if sample is not None:
                samples.append(sample)
                continue
            msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
            assert msg is None, msg.parse_error()
            if sink.get_property("eos"):
                break
            assert Gst.util_get_timestamp() < deadline, f"no EOS within {timeout_s} s ({len(samples)} samples)"
    finally:
        pipeline.set_state(Gst.State.NULL)
    return samples


def _planes(sample: Gst.Sample) -> tuple[VideoLayout, list[np.ndarray]]:
    layout = VideoLayout.from_caps(sample.get_caps())
    frame = map_frame(sample.get_buffer(), layout)
    try:
        return frame.layout, [p.cpu().numpy().copy() for p in frame.planes]
    finally:
        frame.close()


def test_cuda_nv12_planes_are_the_system_memory_planes():
    cuda = _pull(f"{DECODE} ! {CUDA_NV12} ! appsink name=sink max-buffers=8", limit=6)
    system = _pull(f"{DECODE} ! video/x-raw,format=NV12 ! appsink name=sink max-buffers=8", limit=6)
    assert len(cuda) == len(system) == 6
    for c, s in zip(cuda, system, strict=True):
        assert c.get_caps().get_features(0).contains(CUDA_FEATURE)
        layout, cp = _planes(c)
        assert layout.memory == "cuda"
        _, sp = _planes(s)
        for a, b in zip(cp, sp, strict=True):
            np.testing.assert_array_equal(a, b)
        assert cp[0].std() > 10  # a real picture, not a blank plane


def test_gpu_colour_conversion_matches_videoconvert_on_the_decoded_frames():
    cuda = _pull(f"{DECODE} ! {CUDA_NV12} ! appsink name=sink max-buffers=8", limit=4)
    rgb = _pull(f"{DECODE} ! video/x-raw,format=NV12 ! videoconvert ! video/x-raw,format=RGB "
                "! appsink name=sink max-buffers=8", limit=4)  # fmt: skip
    for c, r in zip(cuda, rgb, strict=True):
        layout = VideoLayout.from_caps(c.get_caps())
        frame = map_frame(c.get_buffer(), layout)
        try:
            yuv = frame.frames()
            got_gpu = yuv.to_rgb()[0]
            assert got_gpu.device.type == "cuda"
            got_gpu = got_gpu.cpu().numpy().astype(int)
            # the same code on CPU tensors (what CI runs) gives the same picture
            from pyinfer.ops.colour import YuvFrames

            cpu = YuvFrames(yuv.y.cpu(), yuv.u.cpu(), yuv.v.cpu(), yuv.colour).to_rgb()[0].numpy().astype(int)
        finally:
            frame.close()
        assert np.abs(got_gpu - cpu).max() <= 1
        with structure(r.get_caps()) as info:
            w, h = info.get_value("width"), info.get_value("height")
        _ok, mi = r.get_buffer().map(Gst.MapFlags.READ)
        stride = len(mi.data) // h
        ref = np.frombuffer(mi.data, np.uint8).reshape(h, stride)[:, : w * 3].reshape(h, w, 3).astype(int)
        r.get_buffer().unmap(mi)
        diff = np.abs(got_gpu - ref)
        assert diff.mean() < 2.6, diff.mean()  # the CPU test's bounds: videoconvert's 6-bit fixed point
        assert np.percentile(diff, 99.9) <= 6
        assert diff.max() <= 12


def _detect(embedded_model, memory_caps: str, batch: int, in_flight: int = 2, limit: int | None = None, knobs=""):
    samples = _pull(
        f"{DECODE} ! {memory_caps} ! pyinfer model-engine={embedded_model.path} "
        f"labels-file={embedded_model.labels_file} device=cuda {knobs} "
        f"batch-size={batch} in-flight={in_flight} ! appsink name=sink max-buffers=64",
        limit=limit,
        timeout_s=240,
    )
    return samples, [read_detections(s.get_buffer()) for s in samples]


@pytest.mark.parametrize(("batch", "in_flight"), [(1, 2), (4, 2), (16, 3)])
def test_element_on_nvdec_cuda_frames_finds_the_scene_every_frame_once_in_order(embedded_model, batch, in_flight):
    samples, dets = _detect(embedded_model, CUDA_NV12, batch, in_flight)
    truth = list(read_jsonl(VIDEO.with_name("truth.jsonl")))
    assert len(samples) == len(truth)  # every frame, once
    pts = [s.get_buffer().pts for s in samples]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # in order
    assert all(s.get_caps().get_features(0).contains(CUDA_FEATURE) for s in samples)  # left in CUDA memory
    w, h = truth[0]["width"], truth[0]["height"]
    preds = [frame_record(i, None, w, h, d) for i, d in enumerate(dets)]
    result = evaluate(preds, truth, iou_threshold=0.5)
    assert result.truth_objects > 1000
    assert result.precision >= 0.9, result
    assert result.recall >= 0.9, result


def test_cuda_and_system_memory_frames_give_the_same_detections(embedded_model):
    _, cuda = _detect(embedded_model, CUDA_NV12, 4, limit=64)
    _, system = _detect(embedded_model, "video/x-raw,format=NV12", 4, limit=64)
    assert sum(len(d) for d in cuda) > 100
    for a, b in zip(cuda, system, strict=True):
        assert a.class_id.tolist() == b.class_id.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)


def test_rgba_frames_uploaded_with_cudaupload_give_the_system_memory_detections(embedded_model):
    rgba = "video/x-raw,format=NV12 ! videoconvert ! video/x-raw,format=RGBA"
    _, cuda = _detect(embedded_model, f"{rgba} ! cudaupload ! video/x-raw(memory:CUDAMemory),format=RGBA", 2, limit=24)
    _, system = _detect(embedded_model, rgba, 2, limit=24)
    assert sum(len(d) for d in cuda) > 40
    for a, b in zip(cuda, system, strict=True):
        assert a.class_id.tolist() == b.class_id.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)


@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_graphs_on_nvdec_frames_give_the_plain_detections(embedded_model, batch):
    """With cuda-graphs the NV12 planes are copied into the graph's static planes and converted inside it.

    Boxes within 2 px on 1080p frames: channels-last and cuDNN's benchmarked algorithms (TF32 where it picks them)
    round differently from the plain path, and the box head's distribution decode turns that into up to ~1.2 px
    (measured on the H200); the classes are the same."""
    _, plain = _detect(embedded_model, CUDA_NV12, batch, limit=48)
    _, graphs = _detect(embedded_model, CUDA_NV12, batch, limit=48, knobs="cuda-graphs=true channels-last=true")
    assert sum(len(d) for d in plain) > 80
    for a, b in zip(plain, graphs, strict=True):
        assert a.class_id.tolist() == b.class_id.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=2.0)


def test_batch_group_on_nvdec_cuda_frames_gives_each_stream_its_own_detections(embedded_model):
    """Two NVDEC streams in CUDA memory through one batch-group (issue #13): each stream's frames once, in order,
    still in CUDA memory, with the detections a pyinfer of its own gives."""
    n = 32
    desc = " ".join(
        f"{DECODE} ! {CUDA_NV12} ! identity eos-after={n} ! pyinfer model-engine={embedded_model.path} device=cuda "
        f"batch-group=gpu batch-size=4 ! appsink name=sink{i} sync=false emit-signals=true"
        for i in range(2)
    )
    pipeline = Gst.parse_launch(desc)
    got: list[list] = [[], []]
    for i in range(2):
        pipeline.get_by_name(f"sink{i}").connect(
            "new-sample",
            lambda sink, i=i: got[i].append(sink.emit("pull-sample")) or Gst.FlowReturn.OK,
        )
    pipeline.set_state(Gst.State.PLAYING)
    try:
        msg = pipeline.get_bus().timed_pop_filtered(240 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        assert msg is not None and msg.type == Gst.MessageType.EOS, msg and msg.parse_error()
    finally:
        pipeline.set_state(Gst.State.NULL)
    # What the branch passes without pyinfer: identity's eos-after lets the decoder's drain through too (34 frames
    # for 32 here, with B-frames: not a frame count), so the frames are compared by timestamp.
    passed = [s.get_buffer().pts for s in _pull(f"{DECODE} ! {CUDA_NV12} ! identity eos-after={n} ! appsink name=sink")]
    alone_samples, alone = _detect(embedded_model, CUDA_NV12, 1)
    by_pts = {s.get_buffer().pts: d for s, d in zip(alone_samples, alone, strict=True)}
    for samples in got:
        pts = [s.get_buffer().pts for s in samples]
        assert pts == passed  # every frame once, in order
        assert all(s.get_caps().get_features(0).contains(CUDA_FEATURE) for s in samples)
        for s in samples:
            a, b = read_detections(s.get_buffer()), by_pts[s.get_buffer().pts]
            assert a.class_id.tolist() == b.class_id.tolist()
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1.0)  # batch 4 against 1: cuDNN may round otherwise


def test_triton_yuv_letterbox_gives_the_eager_values_on_nvdec_frames(monkeypatch):
    """The one-kernel NV12 -> letterboxed RGB (pyinfer.ops.yuv_triton), compiled for this GPU, against the eager
    conversion + resize on the same decoded frames: value for value, fp16 into a channels-last input."""
    from pyinfer.ops import yuv_triton
    from pyinfer.ops.colour import YuvFrames
    from pyinfer.ops.letterbox import LetterboxGeometry, resize_gather

    samples = _pull(f"{DECODE} ! {CUDA_NV12} ! appsink name=sink max-buffers=8", limit=4)
    mapped = [map_frame(s.get_buffer(), VideoLayout.from_caps(s.get_caps())) for s in samples]
    try:
        one = [m.frames() for m in mapped]
        frames = YuvFrames(
            torch.cat([f.y for f in one]), torch.cat([f.u for f in one]), torch.cat([f.v for f in one]), one[0].colour
        )
        _, h, w, _ = frames.shape
        geo = LetterboxGeometry.compute(w, h, 640, 640)
        top, left, rh, rw = int(geo.pad_y), int(geo.pad_x), geo.resized_h, geo.resized_w

        def run(use_kernel: bool) -> torch.Tensor:
            monkeypatch.setattr(yuv_triton, "ENABLED", use_kernel)
            full = torch.zeros(4, 3, 640, 640, dtype=torch.float16, device="cuda")
            full = full.contiguous(memory_format=torch.channels_last)
            resize_gather(frames, rw, rh, "RGB", full[:, :, top : top + rh, left : left + rw])
            torch.cuda.synchronize()
            return full

        monkeypatch.setattr(yuv_triton, "_FAILED", [])
        kernel = run(True)
        assert yuv_triton.available(), yuv_triton._FAILED  # the kernel ran (no fallback)
        eager = run(False)
    finally:
        for m in mapped:
            m.close()
    assert torch.equal(kernel, eager)
    assert 0.1 < float(kernel[:, :, top : top + rh].float().mean()) < 0.9


@pytest.mark.parametrize("share", [True, False])
def test_the_decoder_runs_in_torchs_primary_context_unless_told_otherwise(embedded_model, share):
    """pyinfer answers nvh264dec's context query with the device's primary context (torch's): the decoder's
    copies and the model's kernels then run in one CUDA context, not time-sliced between two. With
    share-cuda-context=false the decoder makes its own, as before."""
    from pyinfer.frames import cuda_context

    torch.zeros(1, device="cuda")  # torch's context exists
    pipeline = Gst.parse_launch(
        f"{DECODE} name=dec ! {CUDA_NV12} ! pyinfer model-engine={embedded_model.path} device=cuda "
        f"share-cuda-context={str(share).lower()} ! fakesink"
    )
    pipeline.set_state(Gst.State.PAUSED)
    try:
        assert pipeline.get_state(60 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
        decoder = cuda_context.element_handle(pipeline.get_by_name("dec"))
    finally:
        pipeline.set_state(Gst.State.NULL)
    primary = cuda_context.primary_handle(0)
    assert decoder is not None and primary is not None
    current = ctypes.c_void_p()
    assert ctypes.CDLL("libcuda.so.1").cuCtxGetCurrent(ctypes.byref(current)) == 0
    assert current.value == primary  # torch's context is the primary one
    assert (decoder == primary) is share
