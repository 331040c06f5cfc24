#!/usr/bin/env python
"""The element at the model's speed (issue #12): GPU-resident frames from NVDEC, batches in flight, side by side.

    # GPU machine (GStreamer + nvcodec from .gpu-bundle, ultralytics from carried wheels):
    PYTHONPATH=src:bench/gpu:bench:$PYTHONPATH python3 bench/gpu/element.py --video .gpu-data/scene/video.mp4 --out $OUT

One process, one model (YOLOv8n from ultralytics' yaml, random weights, fused, fp16, 640x640; pyinfer's own net of
the same widths without ultralytics), the same knobs everywhere (cuda-graphs + channels-last; then compile=default
where the budget allows). Variants, frames/s each:

- ``raw``: the model alone on letterboxed input already on the GPU, captured in a CUDA graph (the ceiling);
- ``nvdec-decode``: ``filesrc ! qtdemux ! h264parse ! nvh264dec ! video/x-raw(memory:CUDAMemory) ! fakesink``, the
  1080p H.264 file looped (segment seeks): one stream's decode rate;
- ``nvdec-pyinfer-cuda``: the same with ``pyinfer`` before the sink, NV12 frames read in CUDA memory;
- ``nvdec-pyinfer-system``: ``nvh264dec ! video/x-raw,format=NV12`` (system memory) ``! pyinfer``;
- ``cuda-appsrc-pyinfer``: NV12 frames decoded by NVDEC once, kept in CUDA memory and pushed again and again by
  an appsrc (frames on the GPU faster than one decoder makes them): pyinfer on GPU-resident frames;
- ``host-appsrc-pyinfer``: 1080p RGB frames in host memory through appsrc (the path measured in issue #7): 16
  frames whose memories come back again and again (shallow copies), as a buffer pool's do, so pyinfer page-locks
  them in place (pyinfer.frames.pinning) and the GPU copies them by DMA;
- ``host-appsrc-pyinfer-staged``: the same with page-locking off (what a source that allocates every frame afresh
  gets): each frame is copied by the CPU into pinned staging first.

Every pipeline has a probe on the sink pad that reads each frame's detections (pyinfer.meta.roi), timed from the
first buffer after the warm-up frames. Results: bench/results/element-gpu-DATE.json (--out).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import throughput as tp  # noqa: E402  (its element_model factory serves model-engine=throughput:element_model)

KNOBS = {
    "graphs": "cuda-graphs=true channels-last=true",
    "compiled": "cuda-graphs=true channels-last=true compile=default",
}


#: bench/sampler.py's Sampler of a --profile run: enabled at the first timed buffer.
SAMPLER = None


def _probe(pipeline, stamps: list, counts: list, skip: int = 0):
    from pyinfer.meta import read_detections

    def probe(pad, info):
        stamps.append(time.perf_counter())
        if SAMPLER is not None and len(stamps) == skip + 1:
            SAMPLER.enabled.set()
        counts.append(len(read_detections(info.get_buffer())))
        return tp_gst().PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(tp_gst().PadProbeType.BUFFER, probe)


def tp_gst():
    from pyinfer._gi import Gst

    return Gst


def _rate(stamps: list, skip: int) -> float:
    if len(stamps) <= skip + 1:
        raise RuntimeError(f"only {len(stamps)} buffers reached the sink")
    return (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def run_file(video: str, middle: str, loops: int, skip: int, timeout_s: float = 90, decoder: str = "nvh264dec") -> dict:
    """``filesrc ! qtdemux ! h264parse ! nvh264dec ! MIDDLE ! fakesink``, the file played ``loops`` times."""
    Gst = tp_gst()
    desc = f"filesrc location={video} ! qtdemux ! h264parse ! {decoder} ! {middle} ! fakesink name=sink sync=false"
    pipeline = Gst.parse_launch(desc)
    stamps: list[float] = []
    counts: list[int] = []
    _probe(pipeline, stamps, counts, skip)
    bus = pipeline.get_bus()
    done = 0
    try:
        pipeline.set_state(Gst.State.PAUSED)
        if pipeline.get_state(60 * Gst.SECOND)[0] != Gst.StateChangeReturn.SUCCESS:
            msg = bus.timed_pop_filtered(0, Gst.MessageType.ERROR)
            raise RuntimeError(f"could not preroll: {msg.parse_error() if msg else '?'}")
        seg = Gst.SeekFlags.SEGMENT
        first = Gst.SeekFlags.FLUSH | (seg if loops > 1 else Gst.SeekFlags.NONE)
        pipeline.seek(1.0, Gst.Format.TIME, first, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        pipeline.set_state(Gst.State.PLAYING)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # a run that does not end in time is an error, not a result
            msg = bus.timed_pop_filtered(
                Gst.SECOND, Gst.MessageType.SEGMENT_DONE | Gst.MessageType.ERROR | Gst.MessageType.EOS
            )
            if msg is None:
                continue
            if msg.type == Gst.MessageType.ERROR:
                raise RuntimeError(str(msg.parse_error()))
            if msg.type == Gst.MessageType.EOS:
                break
            done += 1
            # The next loop; the last one is a plain (non-segment) seek, so the stream ends with a real EOS that
            # the element drains on. (An EOS event sent into a segment-looping pipeline did not reach the bus in
            # the first H200 run: each run then waited out its timeout.)
            last = done >= loops - 1
            flags = Gst.SeekFlags.NONE if last else seg
            pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
            if last:
                loops = 0  # no more SEGMENT_DONE expected
        else:
            raise RuntimeError(f"no EOS within {timeout_s} s ({len(stamps)} buffers reached the sink)")
    finally:
        pipeline.set_state(Gst.State.NULL)
    return {
        "frames_per_s": round(_rate(stamps, skip), 1),
        "frames": len(stamps),
        "timed_from_frame": skip,
        "detections_per_frame": round(sum(counts) / max(1, len(counts)), 2),
        "pipeline": desc,
    }


def decode_cuda_frames(video: str, n: int) -> tuple[list, object]:
    """The first ``n`` frames of the file as NVDEC left them: NV12 buffers in CUDA memory, and their caps."""
    Gst = tp_gst()
    pipeline = Gst.parse_launch(
        f"filesrc location={video} ! qtdemux ! h264parse ! nvh264dec ! video/x-raw(memory:CUDAMemory),format=NV12 "
        f"! appsink name=sink sync=false max-buffers={n + 4}"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    bufs, caps = [], None
    try:
        for _ in range(n):
            sample = sink.emit("try-pull-sample", 20 * Gst.SECOND)
            if sample is None:
                break
            bufs.append(sample.get_buffer())
            caps = sample.get_caps()
    finally:
        pipeline.set_state(Gst.State.NULL)
    return bufs, caps


def run_appsrc(bufs: list, caps, batch: int, knobs: str, n_push: int, skip: int) -> dict:
    """appsrc (the buffers, queued before PLAYING, shallow copies with fresh timestamps) ! pyinfer ! fakesink."""
    from pyinfer._gi import copy_buffer
    from pyinfer.frames import pinning

    Gst = tp_gst()
    pin = pinning._PINNING
    registered = pin.registered if pin is not None else 0
    desc = (
        "appsrc name=src ! pyinfer model-engine=throughput:element_model decoder=yolov8 device=cuda "
        f"batch-size={batch} {knobs} ! fakesink name=sink sync=false"
    )
    pipeline = Gst.parse_launch(desc)
    src = pipeline.get_by_name("src")
    src.set_property("caps", caps)
    src.set_property("format", Gst.Format.TIME)
    for prop in ("max-bytes", "max-buffers", "max-time"):
        if src.find_property(prop) is not None:
            src.set_property(prop, 0)
    stamps: list[float] = []
    counts: list[int] = []
    _probe(pipeline, stamps, counts, skip)
    bus = pipeline.get_bus()
    try:
        if pipeline.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            msg = bus.timed_pop_filtered(0, Gst.MessageType.ERROR)
            raise RuntimeError(f"could not start: {msg.parse_error() if msg else '?'}")
        dur = Gst.SECOND // 30
        for i in range(n_push):
            b = copy_buffer(bufs[i % len(bufs)])
            b.pts, b.duration = i * dur, dur
            src.emit("push-buffer", b)
        src.emit("end-of-stream")
        pipeline.set_state(Gst.State.PLAYING)
        msg = bus.timed_pop_filtered(90 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(f"pipeline: {msg.parse_error() if msg is not None else 'timeout'}")
    if len(stamps) != n_push:
        raise RuntimeError(f"{len(stamps)} of {n_push} buffers reached the sink")
    pin = pinning._PINNING
    return {"frames_per_s": round(_rate(stamps, skip), 1), "frames": n_push, "timed_from_frame": skip,
            "detections_per_frame": round(sum(counts) / n_push, 2), "pipeline": desc,
            "memories_page_locked": (pin.registered - registered) if pin is not None else 0}  # fmt: skip


def staged(fn, *a):
    """``fn(*a)`` with host-frame page-locking off: every host frame is copied into pinned staging by the CPU."""
    from pyinfer.frames import pinning

    saved = pinning._PINNING, pinning._PINNING_TRIED
    pinning._PINNING, pinning._PINNING_TRIED = None, True
    try:
        return fn(*a)
    finally:
        pinning._PINNING, pinning._PINNING_TRIED = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="1080p H.264 MP4 (pyinfer scene --width 1920 --height 1080)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--loops", type=int, default=4, help="times the file is played per NVDEC run")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--only", default="", help="prefixes of the runs' names, dashed")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes of the pyinfer rows")
    parser.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval (0: Python's)")
    parser.add_argument("--push-scale", type=float, default=1.0, help="frames pushed by the appsrc rows, times")
    parser.add_argument("--profile", action="store_true", help="sample the threads' Python stacks (bench/sampler.py)")
    args = parser.parse_args(argv)
    t_start = time.monotonic()
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    import torch

    tp.register_pyinfer()
    from pyinfer._gi import Gst

    dtype = torch.float16
    date = time.strftime("%Y-%m-%d", time.gmtime())
    out = (args.out or common.RESULTS_DIR) / f"element-gpu-{date}.json"
    data = {
        "benchmark": "element at the model's speed (issue #12)",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(),
        "gpu": tp.gpu_info(),
        "versions": {**tp.versions(), "gstreamer": Gst.version_string()},
        "precision": "fp16",
        "switch_interval_s": sys.getswitchinterval(),
        "video": f"{args.video}: 1080p H.264 from pyinfer scene",
        "results": [],
        "errors": [],
        "targets": {},
    }

    def save() -> None:
        common.write_json(out, data)

    def add(variant: str, batch: int, knobs: str, r: dict | None) -> None:
        if r is not None:
            data["results"].append({"variant": variant, "batch": batch, "knobs": knobs, **r})
            print(f"  {variant:24s} b{batch:<3d} {knobs:9s} {r['frames_per_s']:10.1f} frames/s", flush=True)
            save()

    only = {v for v in args.only.split(",") if v}
    batches = [int(b) for b in args.batches.split(",")]

    def attempt(name: str, fn, *a):
        # --only takes the names printed below with dashes ("cuda-appsrc-pyinfer-b16", "host-appsrc-pyinfer",
        # "raw"); the frames the cuda-appsrc rows push are decoded when any of them is asked for
        key = name.replace(" ", "-")
        keep = any(key.startswith(o) for o in only) or (key.startswith("decode-") and any(o.startswith("cuda-appsrc")
                                                                                          for o in only))  # fmt: skip
        if only and not keep:
            return None
        if time.monotonic() - t_start > args.budget_s:
            data["errors"].append({"what": name, "error": "skipped: budget"})
            return None
        print(f"[{time.monotonic() - t_start:6.1f} s] {name}", flush=True)
        try:
            if args.profile and "pyinfer" in name:
                from sampler import Sampler

                global SAMPLER
                with Sampler() as sampler:
                    SAMPLER = sampler
                    try:
                        r = fn(*a)
                    finally:
                        SAMPLER = None
                print(sampler.text(18), flush=True)
                return {**r, "profile": sampler.report(18)} if r is not None else None
            return fn(*a)
        except Exception as exc:
            data["errors"].append({"what": name, "error": f"{type(exc).__name__}: {exc}"[:1500],
                                   "trace": traceback.format_exc()[-2500:]})  # fmt: skip
            print(f"  ERROR {name}: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
            save()
            return None

    bundle = tp.build_model("n", "cuda", dtype)
    data["model"] = bundle.source
    tp.set_element_model(bundle.module)
    timer = tp.Timer(True, min_time=0.5, reps=3)
    frames = tp.render_frames(16)
    frames_dev = torch.from_numpy(np.stack(frames)).to("cuda")
    lbs = {b: tp.letterboxed(tp.frame_batches(frames_dev, b), dtype) for b in (1, 16)}
    del frames_dev
    for b in (1, 16):
        module = copy.deepcopy(bundle.module).to(memory_format=torch.channels_last)
        add(
            "raw",
            b,
            "graphs",
            attempt(f"raw b{b}", lambda m=module, bb=b: tp.raw_graph(m, lbs[bb], bb, timer, channels_last=True)),
        )
    loops = args.loops
    add("nvdec-decode", 1, "-", attempt("nvdec decode only", run_file, args.video,
                                         "video/x-raw(memory:CUDAMemory),format=NV12", loops, 30))  # fmt: skip
    cuda_bufs, cuda_caps = attempt("decode 48 frames to keep", decode_cuda_frames, args.video, 48) or ([], None)
    host_bufs = [Gst.Buffer.new_wrapped(f[..., :3].tobytes()) for f in frames]
    host_caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={tp.FRAME_W},height={tp.FRAME_H},framerate=30/1")
    for knob in ("graphs", "compiled"):
        if knob == "compiled" and args.no_compile:
            continue
        k = KNOBS[knob]
        for b in batches:
            skip = 4 * b
            pinf = f"pyinfer model-engine=throughput:element_model decoder=yolov8 device=cuda batch-size={b} {k}"
            add("nvdec-pyinfer-cuda", b, knob, attempt(f"nvdec cuda pyinfer b{b} {knob}", run_file, args.video,
                f"video/x-raw(memory:CUDAMemory),format=NV12 ! {pinf}", loops, skip))  # fmt: skip
            if cuda_bufs:
                add("cuda-appsrc-pyinfer", b, knob, attempt(f"cuda appsrc pyinfer b{b} {knob}", run_appsrc,
                    cuda_bufs, cuda_caps, b, k, int(args.push_scale * max(600, 60 * b)), skip))  # fmt: skip
            add("host-appsrc-pyinfer", b, knob, attempt(f"host appsrc pyinfer b{b} {knob}", run_appsrc,
                host_bufs, host_caps, b, k, int(args.push_scale * max(400, 40 * b)), skip))  # fmt: skip
            add("host-appsrc-pyinfer-staged", b, knob, attempt(f"host appsrc pyinfer staged b{b} {knob}", staged,
                run_appsrc, host_bufs, host_caps, b, k, int(args.push_scale * max(400, 40 * b)), skip))  # fmt: skip
        for b in batches:  # last: a decode-only run into system memory did not finish in a first run
            pinf = f"pyinfer model-engine=throughput:element_model decoder=yolov8 device=cuda batch-size={b} {k}"
            add("nvdec-pyinfer-system", b, knob, attempt(f"nvdec system pyinfer b{b} {knob}", run_file, args.video,
                f"video/x-raw,format=NV12 ! {pinf}", 1, 4 * b, 40))  # fmt: skip
        if knob == "compiled":
            from pyinfer.accel import AccelSettings, model_function

            settings = AccelSettings(cuda_graphs=True, compile="default", channels_last=True)
            model = tp.loaded(copy.deepcopy(bundle.module), "cuda", "fp16", "raw-compiled")
            fn = model_function(model, settings, native_outputs=True)
            for b in (1, 16):
                add(
                    "raw",
                    b,
                    knob,
                    attempt(
                        f"raw compiled b{b}", lambda bb=b, f=fn: tp.raw_graph(f, lbs[bb], bb, timer, channels_last=True)
                    ),
                )
    evaluate(data)
    save()
    print(json_summary(data), flush=True)
    return 0


def _fps(data: dict, variant: str, batch: int, knob: str) -> float | None:
    for r in data["results"]:
        if r["variant"] == variant and r["batch"] == batch and r["knobs"] == knob:
            return r["frames_per_s"]
    return None


def evaluate(data: dict) -> None:
    t = data["targets"]
    for knob in ("graphs", "compiled"):
        for b, need in ((16, 0.85), (1, 0.7)):
            raw, got = _fps(data, "raw", b, knob), _fps(data, "cuda-appsrc-pyinfer", b, knob)
            if raw and got:
                t[f"gpu-frames/raw b{b} {knob}"] = {
                    "ratio": round(got / raw, 3),
                    "target": need,
                    "met": got / raw >= need,
                }
        dec = _fps(data, "nvdec-decode", 1, "-")
        for b in (1, 16):
            got = _fps(data, "nvdec-pyinfer-cuda", b, knob)
            if dec and got:
                t[f"nvdec stream/decode-only b{b} {knob}"] = {"ratio": round(got / dec, 3), "target": 0.9,
                                                               "met": got / dec >= 0.9}  # fmt: skip
        staged_host = _fps(data, "host-appsrc-pyinfer-staged", 16, knob)
        if staged_host:
            t[f"host frames staged b16 {knob} vs 1527 fps (issue #12's 'today')"] = {
                "ratio": round(staged_host / 1527, 2),
                "target": 3.0,
                "met": staged_host / 1527 >= 3,
            }
        host = _fps(data, "host-appsrc-pyinfer", 16, knob)
        if host:
            t[f"host frames b16 {knob} vs 1527 fps (issue #12's 'today')"] = {
                "ratio": round(host / 1527, 2),
                "target": 3.0,
                "met": host / 1527 >= 3,
            }


def json_summary(data: dict) -> str:
    lines = [f"{r['variant']:24s} b{r['batch']:<3d} {r['knobs']:9s} {r['frames_per_s']:10.1f}" for r in data["results"]]
    lines += [f"TARGET {k}: {v}" for k, v in data["targets"].items()]
    lines += [f"ERROR {e['what']}: {e['error'][:300]}" for e in data["errors"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
