#!/usr/bin/env python
"""Throughput benchmark (issue #7): every variant side by side, same weights, frames, precision and device.

    # GPU machine (GStreamer from .gpu-bundle, ultralytics from a carried wheel, no venv):
    PYTHONPATH=src:bench/gpu:$ULTRALYTICS_SITE python3 bench/gpu/throughput.py --out $OUT [--budget-s 410]
    # this machine, the CPU path:
    .venv/bin/python bench/gpu/throughput.py --device cpu --quick

Models: YOLOv8n and YOLOv8s built from ultralytics' yaml with random weights (seed 0), fused, in fp16 on CUDA
(fp32 on the CPU), 640x640 input; without ultralytics, pyinfer's own YOLOv8-layout net of the same widths.
Frames: 1080p synthetic scenes (pyinfer.scene), 48 distinct, rotated. Variants (the issue's numbering):

1. raw model forward on letterboxed input: eager, CUDA-graph replay, the module compiled as pyinfer compiles it
   (inductor, channels_last) in a graph, and ``torch.compile(mode="reduce-overhead")`` with channels_last;
2. pyinfer's core path on (B, 1080, 1920, 3) uint8 frames already on the GPU: ``Engine.infer`` with
   cuda-graphs + channels-last, then also compile=default, each also pipelined (``FastPath.submit/collect``,
   two batches in flight), and with no knobs (the path before this issue);
3. appsrc (1080p RGB in host memory) -> pyinfer (module:callable backend, the same knobs) -> fakesink, a probe
   on the sink reading the ROI metas;
4. the naive element pattern (per-frame list, resize, torch.stack, model, per-object Python loop with .item())
   against pyinfer's core path on the same input, both with a wrapper planting 100 confident boxes per frame;
5. ultralytics ``predict`` on the same frames (host numpy), batch 1 and 16, at 640x640 (``rect=False``) and at
   its default (``rect=True``: 640x384 for 1080p).

Variant names and meanings: ``VARIANTS`` below (also written into the JSON). Everything but compiling runs
first, so a slow compile cannot cost the comparisons; then the compiled variants, CUDA-vs-CPU detections of the
trained embedded model, 10k-frame memory runs (core path and element), torch's reduce-overhead, batch 8 and
32, and YOLOv8s. Every core row has its peak GPU memory. Phases run in that order within ``--budget-s``; what
does not fit is listed under ``skipped``; the JSON is rewritten after every measurement, so a run cut short
keeps what it measured. Ends with a PNG chart (chart.py) and a summary table.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: common
sys.path.insert(0, str(HERE))  # bench/gpu/: chart
import common  # noqa: E402

# The element imports its model through model-engine=throughput:element_model; run as a script, this file is
# __main__, so make that name resolve to this very module (its globals hold the model).
sys.modules.setdefault("throughput", sys.modules[__name__])

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
os.environ.setdefault("YOLO_OFFLINE", "true")  # ultralytics: no network checks (there is no network)
os.environ.setdefault("YOLO_VERBOSE", "false")

FRAME_W, FRAME_H = 1920, 1080
INPUT = 640
NC = 80
LABELS = tuple(f"class{i}" for i in range(NC))
PLANTED = 100  # objects per frame for (2) vs (4)
#: What each variant name in the results means.
VARIANTS = {
    "raw-eager": "(1) the model alone on letterboxed input, eager",
    "raw-cudagraph": "(1) the model alone, captured in a CUDA graph and replayed (input copied in each time)",
    "raw-compile-default-cl-cudagraph": "(1) the model compiled in place by pyinfer.accel (inductor), channels_last, "
    "captured in a CUDA graph",
    "raw-compile-reduce-overhead-cl": "(1) torch.compile(mode='reduce-overhead'), channels_last",
    "pyinfer-core-plain": "(2) Engine.infer with no knobs (the path before issue #7)",
    "pyinfer-core-graphs": "(2) Engine.infer, cuda-graphs + channels-last",
    "pyinfer-core-graphs-pipelined": "(2) FastPath.submit/collect, two batches in flight, cuda-graphs + channels-last",
    "pyinfer-core-compiled": "(2) Engine.infer, cuda-graphs + compile=default + channels-last",
    "pyinfer-core-compiled-pipelined": "(2) FastPath.submit/collect, cuda-graphs + compile=default + channels-last",
    "pyinfer-gst-graphs": "(3) appsrc (host 1080p RGB) -> pyinfer cuda-graphs channels-last -> fakesink",
    "pyinfer-gst-compiled": "(3) the same with compile=default",
    "pyinfer-core-100obj": "(2) Engine.infer on the planted-100-objects model, cuda-graphs + channels-last",
    "naive-100obj": "(4) per-frame list, resize, stack, model, per-object Python loop with .item()",
    "ultralytics-predict": "(5) YOLO.predict on host frames, half=True, rect=False (640x640 input)",
    "ultralytics-predict-rect": "(5) YOLO.predict, its default rect=True (1080p -> 640x384 input)",
}

# -- the element's model: a module:callable factory ---------------------------------------------------------------
_ELEMENT_MODULE = None


def element_model():
    """Factory for ``model-engine=throughput:element_model``: a fresh copy of the module the benchmark put here.

    A copy per pipeline, as a process loading the model would have: the element compiles its copy in place (the
    compile cache makes that quick once the core path compiled the same graph).
    """
    return copy.deepcopy(_ELEMENT_MODULE)


def set_element_model(module) -> None:
    global _ELEMENT_MODULE
    _ELEMENT_MODULE = module


element_model.imgsz = INPUT
element_model.decoder = "yolov8"
element_model.names = list(LABELS)


# -- bookkeeping ---------------------------------------------------------------------------------------------------
class Report:
    """The result JSON, rewritten after every change."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data
        self.write()

    def write(self) -> None:
        common.write_json(self.path, self.data)

    def add(self, row: dict) -> None:
        self.data["results"].append(row)
        self.write()
        extra = f"  peak {row['peak_mem_mb']} MB" if row.get("peak_mem_mb") is not None else ""
        print(f"  {row['model']:8s} {row['variant']:34s} b{row['batch']:<3d} {row['frames_per_s']:10.1f} frames/s"
              f"{extra}", flush=True)  # fmt: skip

    def skip(self, what: str, why: str) -> None:
        self.data["skipped"].append({"what": what, "why": why})
        self.write()
        print(f"  skipped {what}: {why}", flush=True)

    def error(self, what: str, exc: BaseException) -> None:
        self.data["errors"].append(
            {"what": what, "error": f"{type(exc).__name__}: {exc}"[:2000], "trace": traceback.format_exc()[-3000:]}
        )
        self.write()
        print(f"  ERROR in {what}: {type(exc).__name__}: {str(exc)[:500]}", flush=True)


class Budget:
    """Wall-clock seconds left for the run."""

    def __init__(self, seconds: float) -> None:
        self.t0, self.total = time.monotonic(), seconds

    def left(self) -> float:
        return self.total - (time.monotonic() - self.t0)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def in_thread(fn: Callable, *args):
    """Run on a fresh thread (CPU runs: no OpenMP team left behind to slow the pipeline's thread)."""
    from pyinfer.engine import on_fresh_thread

    return on_fresh_thread(fn, *args)


def register_pyinfer() -> bool:
    """Register the pyinfer element in this process; False (and why, printed) when GStreamer is not usable."""
    try:
        import pyinfer

        pyinfer.register()  # every element; fails when GStreamer's bindings are missing
        return True
    except Exception as exc:
        print(f"pyinfer.register() failed ({type(exc).__name__}: {exc}); registering pyinfer alone", flush=True)
    try:  # another element's optional dependency must not cost the measurement of this one
        from pyinfer._gi import GObject, Gst, ensure_init

        ensure_init()
        from pyinfer.elements.infer import InferElement

        if Gst.ElementFactory.find("pyinfer") is None:
            GObject.type_register(InferElement)
            Gst.Element.register(None, "pyinfer", Gst.Rank.NONE, InferElement)
        return Gst.ElementFactory.find("pyinfer") is not None
    except Exception as exc:
        print(f"GStreamer not available ({type(exc).__name__}: {exc}): no element runs", flush=True)
        return False


# -- machine -----------------------------------------------------------------------------------------------------
def gpu_info() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    info = {
        "name": torch.cuda.get_device_name(0),
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,power.limit", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        info["nvidia_smi"] = smi.stdout.strip()
        info["driver"] = smi.stdout.split(",")[0].strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["driver"] = f"unknown ({exc})"
    return info


def versions() -> dict:
    import torch

    out = {"torch": torch.__version__}
    for name in ("torchvision", "ultralytics", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except Exception as exc:  # an absent optional package is a finding, not a failure
            out[name] = f"not available ({type(exc).__name__}: {exc})"[:200]
    return out


# -- inputs --------------------------------------------------------------------------------------------------------
def render_frames(n: int, seed: int = 2026) -> list[np.ndarray]:
    from pyinfer.scene.generator import Scene

    scene = Scene(seed, FRAME_W, FRAME_H)
    return [scene.frame(i)[0] for i in range(n)]


def frame_batches(frames_dev, batch: int, k: int = 3) -> list:
    """``k`` distinct (B, H, W, 3) batches from the stacked frames (rotated, so caches do not flatter)."""
    n = frames_dev.shape[0]
    return [frames_dev[[(j * batch + i) % n for i in range(batch)]].contiguous() for j in range(k)]


def letterboxed(batches: list, dtype) -> list:
    from pyinfer.ops.letterbox import letterbox

    return [letterbox(b, INPUT, INPUT, dtype=dtype)[0].contiguous() for b in batches]


# -- models --------------------------------------------------------------------------------------------------------
class Bundle:
    """One model: a pristine module (copied before anything mutates it) and ultralytics' own object."""

    def __init__(self, name: str, module, ultra, source: str) -> None:
        self.name, self.module, self.ultra, self.source = name, module, ultra, source


def build_model(scale: str, device: str, dtype) -> Bundle:
    import torch

    name = f"yolov8{scale}"
    torch.manual_seed(0)
    try:
        from ultralytics import YOLO

        ultra = YOLO(f"yolov8{scale}.yaml")  # random weights; ultralytics' predict fuses/halves its own copy
        module = copy.deepcopy(ultra.model).fuse(verbose=False).eval()
        head = module.model[-1]
        head.export = True  # return the (B, 4 + nc, N) tensor alone
        source = f"ultralytics yaml, random weights (seed 0), fused; {fixed_anchors(head, INPUT)}"
    except ImportError as exc:
        from pyinfer.models.net import ShapesNet

        widths = {"n": (16, 32, 64, 128, 256), "s": (32, 64, 128, 256, 512)}[scale]
        module = ShapesNet(nc=NC, widths=widths, depths=(1, 2, 2, 1), c_box=64, c_cls=max(widths[2], NC))
        module = module.eval().fuse()
        ultra = None
        source = f"pyinfer.models.net.ShapesNet of YOLOv8{scale} widths (ultralytics not available: {exc})"
    for p in module.parameters():
        p.requires_grad_(False)
    module = module.to(device=device, dtype=dtype)
    return Bundle(name, module, ultra, source)


def fixed_anchors(head, size: int) -> str:
    """Give ultralytics' Detect head its anchors for a ``size`` x ``size`` input as buffers, computed once.

    Its own code keeps them in plain attributes, rebuilt whenever the input shape changes, from ``torch.arange``
    on the CPU copied to the GPU: a synchronous copy, which a CUDA graph capture refuses, an ``.item()`` per
    stride, which breaks torch.compile's graph, and Python state that captured or compiled code does not see
    change (a graph captured at one batch size would read the anchors of another after they were freed). As
    buffers they move with the module and never change address; the outputs are the same.
    """
    import torch
    from ultralytics.utils.tal import make_anchors

    base = type(head)
    if not hasattr(base, "_get_decode_boxes"):
        return "anchors: ultralytics' own (this version has no _get_decode_boxes)"
    strides = [float(s) for s in head.stride]
    sizes = [(size // int(s), size // int(s)) for s in strides]
    points, stride_t = make_anchors([torch.zeros(1, 1, h, w) for h, w in sizes], strides, 0.5)
    head.register_buffer("anchor_points", points.transpose(0, 1).contiguous())
    head.register_buffer("anchor_strides", stride_t.transpose(0, 1).contiguous())
    head.anchor_sizes = sizes

    class FixedAnchorsDetect(base):
        def _get_decode_boxes(self, x: dict) -> torch.Tensor:
            if [tuple(f.shape[2:]) for f in x["feats"]] != self.anchor_sizes:
                return super()._get_decode_boxes(x)
            boxes = self.decode_bboxes(self.dfl(x["boxes"]), self.anchor_points.unsqueeze(0), x.get("angle"))
            return boxes * self.anchor_strides

    head.__class__ = FixedAnchorsDetect
    return f"anchors for {size}x{size} as buffers"


def loaded(module, device: str, precision: str, tag: str):
    """A LoadedModel as the module backend makes it (wrap_module: inference mode, outputs as float32)."""
    import torch

    from pyinfer.backends._torch import wrap_module

    meta = {"imgsz": [INPUT, INPUT], "names": list(LABELS), "pyinfer": {"decoder": "yolov8"}}
    return wrap_module(module, path=f"bench:{tag}", device=torch.device(device), precision=precision,
                       backend="module", metadata=meta)  # fmt: skip


def planted(module, device: str, dtype):
    """``module`` whose output carries 100 confident, non-overlapping boxes per frame (all else below 0.001)."""
    import torch

    n_anchors = sum((INPUT // s) ** 2 for s in (8, 16, 32))
    table = torch.zeros(1, 4 + NC, n_anchors)
    mask = torch.zeros(1, 1, n_anchors, dtype=torch.bool)
    for k in range(PLANTED):
        a = 37 + k * (n_anchors // PLANTED)
        col, row = k % 10, k // 10
        table[0, :4, a] = torch.tensor([32.0 + 64 * col, 158.0 + 34 * row, 28.0, 24.0])  # inside the 1080p content
        table[0, 4 + k % NC, a] = 0.95 - 0.004 * k
        mask[0, 0, a] = True

    class Planted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.register_buffer("table", table.to(device=device, dtype=dtype))
            self.register_buffer("mask", mask.to(device))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x)
            y = torch.cat((y[:, :4], y[:, 4:] * 1e-3), dim=1)  # the model's own scores: far below any threshold
            return torch.where(self.mask, self.table, y)

    return Planted().eval()


def make_engine(model, settings):
    from pyinfer.accel import build_fast_path
    from pyinfer.engine import Engine

    engine = Engine(model, "yolov8", LABELS, (INPUT, INPUT))  # the decoder is named: warm_up is optional
    if getattr(model.module, "_compiled_call_impl", None) is None:
        # Not on a module an earlier engine compiled in place: warm_up's plain NCHW batch of 1 would compile a
        # variant nobody uses (the fast path feeds channels_last input).
        engine.warm_up()
    engine.fast = build_fast_path(engine.model, engine.decoder, (INPUT, INPUT), settings)
    return engine


# -- timing --------------------------------------------------------------------------------------------------------
class Timer:
    def __init__(self, cuda: bool, min_time: float, reps: int) -> None:
        import torch

        self.sync = torch.cuda.synchronize if cuda else (lambda: None)
        self.min_time, self.reps = min_time, reps

    def measure(self, fn: Callable, inputs: list, batch: int, warmup: int = 3) -> dict:
        """Frames/s of ``fn`` over ``inputs`` (cycled): median of ``reps`` timed runs of about ``min_time`` s."""
        for i in range(warmup):
            fn(inputs[i % len(inputs)])
        self.sync()
        t, k = time.perf_counter(), 0
        while k < 2 or time.perf_counter() - t < self.min_time / 5:
            fn(inputs[k % len(inputs)])
            k += 1
        self.sync()
        per = (time.perf_counter() - t) / k
        iters = max(2, int(self.min_time / per))
        runs = []
        for _ in range(self.reps):
            self.sync()
            t0 = time.perf_counter()
            for i in range(iters):
                fn(inputs[i % len(inputs)])
            self.sync()
            runs.append(iters * batch / (time.perf_counter() - t0))
        med = statistics.median(runs)
        return {"frames_per_s": round(med, 1), "ms_per_batch": round(1000 * batch / med, 4),
                "runs": [round(r, 1) for r in runs], "iters": iters}  # fmt: skip


def peak_mb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def mem_mb() -> float | None:
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


# -- (1) raw model -------------------------------------------------------------------------------------------------
def capture(fn: Callable, static_in):
    """Warm ``fn(static_in)`` up on a side stream, capture it in a CUDA graph; returns the graph."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(static_in)
    return graph


def raw_eager(module, inputs, batch, timer):
    import torch

    with torch.inference_mode():
        return timer.measure(module, inputs, batch)


def raw_graph(module, inputs, batch, timer, *, channels_last: bool = False):
    import torch

    from pyinfer.accel import mark_batch_dynamic

    with torch.inference_mode():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        static = inputs[0].clone().contiguous(memory_format=fmt)
        mark_batch_dynamic(static)  # as the fast path does: a compiled module then reuses its graph
        graph = capture(module, static)

        def step(x):
            static.copy_(x)
            graph.replay()

        return timer.measure(step, inputs, batch)


def raw_reduce_overhead(module, inputs, batch, timer):
    import torch

    with torch.inference_mode():
        cl = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
        t0 = time.perf_counter()
        module(cl[0])
        module(cl[0])  # the second call records torch's graph
        compile_s = time.perf_counter() - t0
        r = timer.measure(module, cl, batch)
    r["compile_s"] = round(compile_s, 1)
    return r


# -- (2) core path -------------------------------------------------------------------------------------------------
def core_sync(engine, batches, batch, timer):
    return timer.measure(lambda f: engine.infer(f), batches, batch)


def core_pipelined(engine, batches, batch, timer):
    fast = engine.fast

    def run(iters: int) -> None:
        q: deque = deque()
        for i in range(iters):
            if len(q) == 2:
                fast.collect(q.popleft()).detections(engine.labels)
            q.append(fast.submit(batches[i % len(batches)]))
        while q:
            fast.collect(q.popleft()).detections(engine.labels)

    run(4)
    t = time.perf_counter()
    run(10)
    per = (time.perf_counter() - t) / 10
    iters = max(6, int(timer.min_time / per))
    runs = []
    for _ in range(timer.reps):
        t0 = time.perf_counter()
        run(iters)
        runs.append(iters * batch / (time.perf_counter() - t0))
    med = statistics.median(runs)
    return {"frames_per_s": round(med, 1), "ms_per_batch": round(1000 * batch / med, 4),
            "runs": [round(r, 1) for r in runs], "iters": iters}  # fmt: skip


# -- (3) the element -----------------------------------------------------------------------------------------------
def run_element(bufs: list, batch: int, n_push: int, skip: int, knobs: str, device: str, sample_every: int = 0):
    """appsrc (queued before PLAYING) -> pyinfer -> fakesink; frames/s from a probe on fakesink's sink pad."""
    import torch

    from pyinfer._gi import Gst, GstVideo, copy_buffer

    desc = (
        f"appsrc name=src ! pyinfer name=infer model-engine=throughput:element_model decoder=yolov8 device={device} "
        f"batch-size={batch} {knobs} ! fakesink name=sink sync=false"
    )
    pipeline = Gst.parse_launch(desc)
    src, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    src.set_property(
        "caps", Gst.Caps.from_string(f"video/x-raw,format=RGB,width={FRAME_W},height={FRAME_H},framerate=30/1")
    )
    src.set_property("format", Gst.Format.TIME)
    for prop in ("max-bytes", "max-buffers", "max-time"):
        if src.find_property(prop) is not None:
            src.set_property(prop, 0)  # unlimited: the whole run is queued before PLAYING
    roi_api = GstVideo.VideoRegionOfInterestMeta.get_info().api
    stamps: list[float] = []
    metas = [0]
    samples: list[tuple[int, int]] = []
    cuda = device.startswith("cuda")

    def probe(pad, info):
        stamps.append(time.perf_counter())
        metas[0] += info.get_buffer().get_n_meta(roi_api)  # reads the metadata each frame carries
        if sample_every and cuda and len(stamps) % sample_every == 0:
            samples.append((len(stamps), torch.cuda.memory_allocated()))
        return Gst.PadProbeReturn.OK

    sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    bus = pipeline.get_bus()
    reset_peak()
    try:
        if pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            msg = bus.timed_pop_filtered(0, Gst.MessageType.ERROR)
            raise RuntimeError(f"could not start: {msg.parse_error() if msg else '?'}")
        dur = Gst.SECOND // 30
        for i in range(n_push):
            b = copy_buffer(bufs[i % len(bufs)])  # shallow: shares the frame's memory
            b.pts, b.duration = i * dur, dur
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
        pipeline.set_state(Gst.State.PLAYING)
        msg = bus.timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(f"pipeline: {msg.parse_error() if msg is not None else 'timeout'}")
    if len(stamps) != n_push:
        raise RuntimeError(f"{len(stamps)} of {n_push} buffers reached the sink")
    fps = (n_push - skip) / (stamps[-1] - stamps[skip - 1])
    out = {"frames_per_s": round(fps, 1), "ms_per_batch": round(1000 * batch / fps, 4), "frames": n_push,
           "timed_from_frame": skip, "rois_per_frame": round(metas[0] / n_push, 3), "pipeline": desc}  # fmt: skip
    if cuda:
        out["peak_mem_mb"] = peak_mb()
    if samples:
        out["memory"] = growth(samples, n_push)
    return out


def growth(samples: list[tuple[int, int]], total: int) -> dict:
    warm = [s for s in samples if s[0] >= total // 10] or samples
    return {"after_warmup_bytes": warm[0][1], "final_bytes": samples[-1][1],
            "growth_bytes": samples[-1][1] - warm[0][1], "samples": samples}  # fmt: skip


# -- (4) naive element pattern -------------------------------------------------------------------------------------
def naive_step(module, dtype, conf: float = 0.25, iou: float = 0.45) -> Callable:
    """What a first Python element does: one frame at a time into a list, stack, model, a Python loop per object."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import batched_nms

    def step(frames) -> list[list[dict]]:
        with torch.inference_mode():
            tensors = []
            for f in [frames[i] for i in range(frames.shape[0])]:  # per-frame list
                x = f.permute(2, 0, 1).unsqueeze(0).to(dtype) / 255.0
                tensors.append(F.interpolate(x, size=(INPUT, INPUT), mode="bilinear", align_corners=False)[0])
            out = module(torch.stack(tensors))
            sx, sy = frames.shape[2] / INPUT, frames.shape[1] / INPUT
            results = []
            for pred in out:  # per frame
                scores, cls = pred[4:].max(0)
                keep = scores > conf
                b, s, c = pred[:4, keep].T.float(), scores[keep].float(), cls[keep]
                xyxy = torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), 1)
                dets = []
                for j in batched_nms(xyxy, s, c, iou):  # per object, one host sync per .item()
                    dets.append({"x1": xyxy[j, 0].item() * sx, "y1": xyxy[j, 1].item() * sy,
                                 "x2": xyxy[j, 2].item() * sx, "y2": xyxy[j, 3].item() * sy,
                                 "confidence": s[j].item(), "class_id": int(c[j].item())})  # fmt: skip
                results.append(dets)
        return results

    return step


# -- (5) ultralytics -----------------------------------------------------------------------------------------------
def ultra_step(ultra, device: str, half: bool, *, rect: bool) -> Callable:
    """``predict`` as users call it. ``rect=False``: a 640x640 input like every other variant; ultralytics'
    default (``rect=True``) letterboxes 1080p frames to 640x384 instead, 40% fewer pixels."""

    def step(frames: list[np.ndarray]):
        return ultra.predict(frames if len(frames) > 1 else frames[0], imgsz=INPUT, half=half, device=device,
                             verbose=False, conf=0.25, iou=0.45, rect=rect)  # fmt: skip

    return step


# -- correctness: CUDA vs CPU on a trained model --------------------------------------------------------------------
def match_frames(ref, got) -> dict:
    """Greedy same-class IoU matching per frame: counts, unmatched, worst matched IoU."""
    from pyinfer.ops.boxes import box_iou

    worst, unmatched, same_count, total = 1.0, 0, True, 0
    for a, b in zip(ref, got):
        total += len(a)
        same_count &= len(a) == len(b)
        if len(a) == 0 or len(b) == 0:
            unmatched += abs(len(a) - len(b))
            continue
        iou = np.asarray(box_iou(a.xyxy, b.xyxy))
        iou = np.where(a.class_id[:, None] == b.class_id[None, :], iou, -1.0)
        used = set()
        for i in np.argsort(-a.confidence):
            j = int(np.argmax(np.where([k not in used for k in range(len(b))], iou[i], -2.0)))
            if iou[i, j] <= 0:
                unmatched += 1
                continue
            used.add(j)
            worst = min(worst, float(iou[i, j]))
        unmatched += len(b) - len(used)
    ok = bool(same_count and unmatched == 0 and worst >= 0.99)
    return {"detections": total, "same_counts": bool(same_count), "unmatched": unmatched,
            "min_matched_iou": round(worst, 5), "pass": ok}  # fmt: skip


def correctness(frames: list[np.ndarray]) -> dict:
    import torch

    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.zoo import get_model

    path = str(get_model().path)
    host = torch.from_numpy(np.stack(frames))
    cpu = Engine.build(EngineConfig(model=path, device="cpu"))
    ref = [d for i in range(0, len(frames), 4) for d in cpu.infer(host[i : i + 4])]
    out = {"model": "embedded shapes (trained, TorchScript, 384x384)", "frames": len(frames), "reference": "cpu fp32"}
    variants = {
        "cuda fp32 plain": EngineConfig(model=path, device="cuda"),
        "cuda fp32 cuda-graphs channels-last": EngineConfig(model=path, device="cuda", cuda_graphs=True,
                                                            channels_last=True),
        "cuda fp16 cuda-graphs channels-last": EngineConfig(model=path, device="cuda", precision="fp16",
                                                            cuda_graphs=True, channels_last=True),
    }  # fmt: skip
    for name, cfg in variants.items():
        try:
            eng = Engine.build(cfg)
            got = [d for i in range(0, len(frames), 4) for d in eng.infer(host[i : i + 4].cuda())]
            out[name] = match_frames(ref, got)
            if eng.fast is not None:
                out[name]["fixed_decode_redos"] = eng.fast.redos
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


# -- the run -------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default bench/results)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: batch 1 (and 2), few iterations")
    ap.add_argument("--budget-s", type=float, default=440.0, help="wall-clock budget; later phases are skipped")
    ap.add_argument("--models", default="n,s", help="YOLOv8 scales to run (n first: the targets are on n)")
    ap.add_argument("--soak-frames", type=int, default=10_000)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu", file=sys.stderr)
        return 2
    dev = "cuda" if cuda else "cpu"
    dtype = torch.float16 if cuda else torch.float32
    precision = "fp16" if cuda else "fp32"
    torch.backends.cudnn.benchmark = True
    date = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}"
    out_dir = args.out or common.RESULTS_DIR
    stem = f"gpu-{date}" if cuda else f"throughput-cpu-{date}"
    quick = args.quick
    batches = (1, 2) if quick else ((1, 8, 16, 32) if cuda else (1, 4))
    big = 16 if cuda else batches[-1]  # the "batch 16" on the GPU
    main_sizes = [b for b in batches if b in (1, big)]
    rest = [b for b in batches if b not in (1, big)]
    timer = Timer(cuda, min_time=0.2 if quick else (0.5 if cuda else 1.0), reps=2 if quick else 3)
    gst = register_pyinfer()
    report = Report(out_dir / f"{stem}.json", {
        "benchmark": "throughput (issue #7)",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(),
        "gpu": gpu_info(),
        "versions": versions(),
        "device": dev,
        "precision": precision,
        "frame": f"{FRAME_W}x{FRAME_H} RGB uint8 (pyinfer.scene synthetic scenes, 48 distinct)",
        "model_input": f"{INPUT}x{INPUT}",
        "quick": quick,
        "budget_s": args.budget_s,
        "variants": VARIANTS,
        "results": [], "targets": {}, "models": {}, "skipped": [], "errors": [], "phases": {},
    })  # fmt: skip

    def phase(name: str, need_s: float, fn: Callable, *a, **kw):
        """Run one phase if the budget allows; errors are recorded, never fatal."""
        if budget.left() < need_s:
            report.skip(name, f"budget: {budget.left():.0f} s left, phase needs ~{need_s:.0f} s")
            return None
        print(f"[{budget.elapsed():6.1f} s] {name}", flush=True)
        t = time.perf_counter()
        try:
            return fn(*a, **kw) if cuda else in_thread(lambda: fn(*a, **kw))
        except Exception as exc:
            report.error(name, exc)
            return None
        finally:
            report.data["phases"][name] = round(time.perf_counter() - t, 1)
            report.write()

    def row(variant: str, model: str, batch: int, r: dict | None, **extra) -> None:
        if r:
            report.add({"variant": variant, "model": model, "batch": batch, **r, **extra})

    # -- inputs and models
    frames = render_frames(8 if quick else 48)
    frames_dev = torch.from_numpy(np.stack(frames)).to(dev)
    bundles: dict[str, Bundle] = {}
    for scale in args.models.split(","):
        b = phase(f"build yolov8{scale}", 5, build_model, scale, dev, dtype)
        if b is not None:
            bundles[b.name] = b
            report.data["models"][b.name] = {"source": b.source,
                                             "parameters": sum(p.numel() for p in b.module.parameters())}  # fmt: skip
    report.write()
    if not bundles:
        return 1
    inputs = {bs: frame_batches(frames_dev, bs) for bs in batches}
    lb = {bs: letterboxed(inputs[bs], dtype) for bs in batches}
    bufs = None
    if gst:
        from pyinfer._gi import Gst

        bufs = [Gst.Buffer.new_wrapped(f.tobytes()) for f in frames]
    else:
        report.skip("element runs", "GStreamer is not available here")
    from pyinfer.accel import AccelSettings, model_function

    def settings(compile_mode: str) -> AccelSettings:
        return AccelSettings(cuda_graphs=cuda, compile=compile_mode, channels_last=True)

    def knob_text(compile_mode: str) -> str:
        return f"cuda-graphs={str(cuda).lower()} compile={compile_mode} channels-last=true"

    kept: dict[str, object] = {}  # the batch-16 engines, for the memory run

    # -- measurement units
    def raw_set(bundle: Bundle, sizes) -> None:
        for bs in sizes:
            row("raw-eager", bundle.name, bs,
                phase(f"raw eager {bundle.name} b{bs}", 3, raw_eager, bundle.module, lb[bs], bs, timer))  # fmt: skip
            if cuda:
                r = phase(f"raw cudagraph {bundle.name} b{bs}", 3, raw_graph, bundle.module, lb[bs], bs, timer)
                row("raw-cudagraph", bundle.name, bs, r)

    def core(bundle_name: str, model, bs: int, compile_mode: str, variant: str, pipelined: bool) -> bool:
        def run() -> None:
            kept.pop(variant, None)  # free an earlier engine before measuring memory
            before = mem_mb()
            reset_peak()
            t = time.perf_counter()
            eng = make_engine(model, settings(compile_mode))
            eng.infer(inputs[bs][0])  # captures (and compiles) this shape
            setup = time.perf_counter() - t
            r = core_sync(eng, inputs[bs], bs, timer)
            r.update(setup_s=round(setup, 1), peak_mem_mb=peak_mb(), mem_before_mb=before,
                     knobs=knob_text(compile_mode), fixed_decode_redos=eng.fast.redos)  # fmt: skip
            row(variant, bundle_name, bs, r)
            if pipelined and cuda:
                row(variant + "-pipelined", bundle_name, bs, core_pipelined(eng, inputs[bs], bs, timer),
                    peak_mem_mb=peak_mb(), knobs=knob_text(compile_mode))  # fmt: skip
            if bs == big:
                kept[variant] = eng

        phase(f"{variant} {bundle_name} b{bs}", 8 if compile_mode == "off" else 60, run)
        return one(report.data["results"], variant, bundle_name, bs) is not None

    def element(bundle: Bundle, bs: int, compile_mode: str, variant: str) -> None:
        if not gst:
            return
        set_element_model(bundle.module)  # the factory hands each pipeline a fresh copy
        if quick:
            n_push, skip = 4 * bs + 2, 2 * bs
        else:
            n_push, skip = (1500, 100) if bs == 1 else (200 * bs, 8 * bs)
        text = knob_text(compile_mode)
        row(variant, bundle.name, bs, phase(f"{variant} {bundle.name} b{bs}", 25 if compile_mode == "off" else 45,
                                            run_element, bufs, bs, n_push, skip, text, dev), knobs=text)  # fmt: skip

    def ultra(bundle: Bundle, bs: int, rect: bool = False) -> dict:
        step = ultra_step(bundle.ultra, "0" if cuda else "cpu", half=cuda, rect=rect)
        host_batches = [[frames[(j * bs + i) % len(frames)] for i in range(bs)] for j in range(3)]
        r = Timer(cuda, timer.min_time, timer.reps).measure(step, host_batches, bs, warmup=2)
        r["model_input"] = "640x384 (rect, ultralytics' default)" if rect else "640x640 (rect=False)"
        return r

    def ultra_set(bundle: Bundle, *, with_rect: bool) -> None:
        for bs in main_sizes:
            if bundle.ultra is None:
                report.skip(f"ultralytics predict {bundle.name} b{bs}", "ultralytics: not available")
                continue
            row("ultralytics-predict", bundle.name, bs,
                phase(f"ultralytics {bundle.name} b{bs}", 10, ultra, bundle, bs))  # fmt: skip
            if with_rect:
                row("ultralytics-predict-rect", bundle.name, bs,
                    phase(f"ultralytics rect {bundle.name} b{bs}", 10, ultra, bundle, bs, True))  # fmt: skip

    first = next(iter(bundles.values()))
    graphs_loaded = loaded(copy.deepcopy(first.module), dev, precision, f"{first.name}-graphs")
    fast_loaded = loaded(copy.deepcopy(first.module), dev, precision, f"{first.name}-compiled")
    compile_mode = "off" if quick else "default"

    # -- A: every comparison of the issue without compiling (compiling may be slow: this part must not wait on it)
    raw_set(first, main_sizes)
    for bs in main_sizes:
        core(first.name, graphs_loaded, bs, "off", "pyinfer-core-graphs", pipelined=True)
    plain_loaded = loaded(first.module, dev, precision, f"{first.name}-plain")
    for bs in main_sizes:
        row("pyinfer-core-plain", first.name, bs, phase(
            f"core plain {first.name} b{bs}", 5,
            lambda bs=bs: core_sync(make_engine(plain_loaded, AccelSettings()), inputs[bs], bs, timer)))  # fmt: skip
    for bs in main_sizes:
        element(first, bs, "off", "pyinfer-gst-graphs")

    def planted_core() -> dict:
        eng = make_engine(loaded(planted(copy.deepcopy(first.module), dev, dtype), dev, precision, "100obj"),
                          settings("off"))  # fmt: skip
        dets = eng.infer(inputs[big][0])
        r = core_sync(eng, inputs[big], big, timer)
        r.update(objects_per_frame=round(sum(len(d) for d in dets) / big, 2), knobs=knob_text("off"))
        return r

    def naive() -> dict:
        step = naive_step(planted(copy.deepcopy(first.module), dev, dtype), dtype)  # its own plain NCHW copy
        res = step(inputs[big][0])
        r = Timer(cuda, timer.min_time, timer.reps).measure(step, inputs[big], big, warmup=1)
        r["objects_per_frame"] = round(sum(len(d) for d in res) / big, 2)
        return r

    row("pyinfer-core-100obj", first.name, big, phase(f"core 100 objects {first.name} b{big}", 10, planted_core))
    row("naive-100obj", first.name, big, phase(f"naive 100 objects {first.name} b{big}", 15, naive))
    ultra_set(first, with_rect=True)
    evaluate_targets(report, first.name, big)

    # -- B: torch.compile (inductor kernels in pyinfer's graph), the raw model with the same compiled module
    def raw_compiled(bs: int) -> dict:
        t = time.perf_counter()
        model_function(fast_loaded, settings(compile_mode))  # compiled in place already by the core engine
        r = raw_graph(fast_loaded.module, lb[bs], bs, timer, channels_last=True)
        r["setup_s"] = round(time.perf_counter() - t, 1)
        return r

    compiled_ok = False
    if compile_mode != "off":
        for bs in main_sizes:
            compiled_ok = core(first.name, fast_loaded, bs, compile_mode, "pyinfer-core-compiled", pipelined=True)
            if not compiled_ok:
                report.skip(f"compile {first.name}", "the compiled core path failed (see errors): no more compiling")
                break
            if cuda:
                row("raw-compile-default-cl-cudagraph", first.name, bs,
                    phase(f"raw compile default {first.name} b{bs}", 20, raw_compiled, bs))  # fmt: skip
        if compiled_ok:
            for bs in main_sizes:
                element(first, bs, compile_mode, "pyinfer-gst-compiled")
        evaluate_targets(report, first.name, big)

    # -- C: correctness on a trained model, memory over 10k frames
    if cuda:
        report.data["correctness"] = phase("cuda vs cpu detections (shapes model)", 30, correctness, frames[:24])
        variant = "pyinfer-core-compiled" if "pyinfer-core-compiled" in kept else "pyinfer-core-graphs"

        def soak_core() -> dict:
            eng = kept[variant]
            samples, done, i = [], 0, 0
            reset_peak()
            t0 = time.perf_counter()
            while done < args.soak_frames:
                eng.infer(inputs[big][i % 3])
                done += big
                i += 1
                if i % 25 == 0:
                    samples.append((done, torch.cuda.memory_allocated()))
            elapsed = time.perf_counter() - t0
            return {"variant": variant, "frames": done, "batch": big, "frames_per_s": round(done / elapsed, 1),
                    "peak_mem_mb": peak_mb(), **growth(samples, done)}  # fmt: skip

        if variant in kept:
            report.data["memory_core"] = phase(f"memory: {args.soak_frames} frames, core b{big}", 20, soak_core)
        if gst:
            mode = compile_mode if compiled_ok else "off"
            set_element_model(first.module)
            report.data["memory_element"] = phase(
                f"memory: {args.soak_frames} frames, element b{big}", 35, run_element, bufs, big, args.soak_frames,
                8 * big, knob_text(mode), dev, 500)  # fmt: skip
        report.write()

    # -- D: torch's own reduce-overhead graphs (the best raw rate seen before this issue)
    if cuda and compiled_ok:
        ro_module = torch.compile(
            copy.deepcopy(first.module).to(memory_format=torch.channels_last), mode="reduce-overhead"
        )  # one compiled module for both sizes: the second compiles once with a symbolic batch
        for bs in main_sizes:
            row("raw-compile-reduce-overhead-cl", first.name, bs,
                phase(f"raw compile reduce-overhead {first.name} b{bs}", 60, raw_reduce_overhead, ro_module, lb[bs],
                      bs, timer))  # fmt: skip
        evaluate_targets(report, first.name, big)

    # -- E: the other batch sizes, then the other model
    raw_set(first, rest)
    for bs in rest:
        core(first.name, graphs_loaded, bs, "off", "pyinfer-core-graphs", pipelined=True)
        if compiled_ok and cuda:
            core(first.name, fast_loaded, bs, compile_mode, "pyinfer-core-compiled", pipelined=True)
            row("raw-compile-default-cl-cudagraph", first.name, bs,
                phase(f"raw compile default {first.name} b{bs}", 15, raw_compiled, bs))  # fmt: skip
    for bundle in list(bundles.values())[1:]:
        raw_set(bundle, batches)
        other = loaded(copy.deepcopy(bundle.module), dev, precision, f"{bundle.name}-graphs")
        for bs in batches:
            core(bundle.name, other, bs, "off", "pyinfer-core-graphs", pipelined=cuda)
        ultra_set(bundle, with_rect=False)
        for bs in main_sizes:
            element(bundle, bs, "off", "pyinfer-gst-graphs")

    report.data["total_s"] = round(budget.elapsed(), 1)
    report.write()
    try:
        from chart import render

        png = render(report.data, report.path.with_suffix(".png"))
        print(f"chart: {png}")
    except Exception as exc:  # matplotlib missing: bench/gpu/chart.py renders it from the JSON elsewhere
        print(f"no chart ({type(exc).__name__}: {exc}); run bench/gpu/chart.py on the JSON", flush=True)
    print_summary(report.data)
    print(f"wrote {report.path}")
    return 0


def best(rows: list[dict], prefix: str, model: str, batch: int) -> dict | None:
    hits = [r for r in rows if r["variant"].startswith(prefix) and r["model"] == model and r["batch"] == batch]
    return max(hits, key=lambda r: r["frames_per_s"]) if hits else None


def one(rows: list[dict], variant: str, model: str, batch: int) -> dict | None:
    hits = [r for r in rows if r["variant"] == variant and r["model"] == model and r["batch"] == batch]
    return hits[0] if hits else None


def evaluate_targets(report: Report, model: str, big: int) -> None:
    """The issue's targets, each with its numbers and pass/fail (None when a side was not measured)."""
    rows = report.data["results"]
    t: dict = {}

    def fastest(variants: tuple[str, ...], bs: int) -> dict | None:
        hits = [r for r in (one(rows, v, model, bs) for v in variants) if r]
        return max(hits, key=lambda r: r["frames_per_s"]) if hits else None

    def ratio(name: str, num: dict | None, den: dict | None, goal: float) -> None:
        if num is None or den is None:
            t[name] = {"goal": goal, "pass": None, "missing": "not measured"}
            return
        value = num["frames_per_s"] / den["frames_per_s"]
        t[name] = {"goal": goal, "value": round(value, 3), "pass": value >= goal,
                   "numerator": f"{num['variant']} {num['frames_per_s']}",
                   "denominator": f"{den['variant']} {den['frames_per_s']}"}  # fmt: skip

    core_all = ("pyinfer-core-graphs", "pyinfer-core-graphs-pipelined", "pyinfer-core-compiled",
                "pyinfer-core-compiled-pipelined")  # fmt: skip
    core_sync = ("pyinfer-core-graphs", "pyinfer-core-compiled")
    gst = ("pyinfer-gst-graphs", "pyinfer-gst-compiled")
    for bs, goal in ((big, 0.90), (1, 0.80)):
        raw = best(rows, "raw-", model, bs)
        ratio(f"core/raw b{bs} >= {goal}", fastest(core_all, bs), raw, goal)
        ratio(f"core (synchronous Engine.infer)/raw b{bs} >= {goal}", fastest(core_sync, bs), raw, goal)
    ratio("gst/ultralytics b1 >= 4", fastest(gst, 1), one(rows, "ultralytics-predict", model, 1), 4)
    ratio(f"gst/ultralytics b{big} >= 2", fastest(gst, big), one(rows, "ultralytics-predict", model, big), 2)
    ratio("gst/ultralytics (its default rect=True, 640x384) b1", fastest(gst, 1),
          one(rows, "ultralytics-predict-rect", model, 1), 4)  # fmt: skip
    ratio(f"gst/ultralytics (its default rect=True, 640x384) b{big}", fastest(gst, big),
          one(rows, "ultralytics-predict-rect", model, big), 2)  # fmt: skip
    ratio(f"core/naive b{big} 100 objects >= 10", one(rows, "pyinfer-core-100obj", model, big),
          one(rows, "naive-100obj", model, big), 10)  # fmt: skip
    report.data["targets"] = t
    report.write()


def print_summary(data: dict) -> None:
    rows = data["results"]
    print("\nframes/s (" + data["device"] + ", " + data["precision"] + ", " + data.get("gpu", {}).get("name", "") + ")")
    for model in sorted({r["model"] for r in rows}):
        batches = sorted({r["batch"] for r in rows if r["model"] == model})
        print(f"\n{model:34s}" + "".join(f"{'b' + str(b):>10s}" for b in batches))
        for variant in dict.fromkeys(r["variant"] for r in rows if r["model"] == model):
            cells = []
            for b in batches:
                r = one(rows, variant, model, b)
                cells.append(f"{r['frames_per_s']:10.1f}" if r else f"{'-':>10s}")
            print(f"{variant:34s}" + "".join(cells))
    print("\ntargets:")
    for name, t in data.get("targets", {}).items():
        print(f"  {name:45s} {t.get('value', '-')!s:>8s}  pass={t['pass']}")
    for key in ("memory_core", "memory_element"):
        m = data.get(key)
        if isinstance(m, dict) and "growth_bytes" in m:
            print(f"  {key}: {m['frames']} frames, growth {m['growth_bytes']} bytes, peak {m.get('peak_mem_mb')} MB")
    c = data.get("correctness")
    if isinstance(c, dict):
        for k, v in c.items():
            if isinstance(v, dict):
                print(f"  correctness {k}: {v}")
    if data["skipped"]:
        print(f"skipped: {[s['what'] for s in data['skipped']]}")
    if data["errors"]:
        print(f"errors: {[e['what'] + ': ' + e['error'][:160] for e in data['errors']]}")


if __name__ == "__main__":
    sys.exit(main())
