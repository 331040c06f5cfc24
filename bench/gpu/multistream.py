#!/usr/bin/env python
"""Many cameras, one model (issue #13): N NVDEC streams through one batch-group, side by side.

    # GPU machine (as bench/gpu/element.py; see bench/README.md):
    PYTHONPATH=src:bench/gpu:bench:$PYTHONPATH python3 bench/gpu/multistream.py --video .gpu-data/scene/video.mp4 \\
        --streams 1,4,8,16 --out $OUT
    # CPU smoke run of the same code (software decoder, system memory, the embedded model):
    .venv/bin/python bench/gpu/multistream.py --video out/demo/video.mp4 --streams 2 --decoder avdec_h264 \\
        --memory system --device cpu --model shapes --frames 20 --out /tmp

For each stream count N, in one process, all on the same 1080p H.264 file (each stream its own filesrc and
decoder, the file played from the start), total frames/s over every sink:

- ``decode``: ``filesrc ! qtdemux ! h264parse ! DECODER ! CAPS ! fakesink`` x N (the decode ceiling);
- ``group``: ``... ! pyinfer batch-group=g batch-size=N ! fakesink`` x N (one model, one batch);
- ``groupq``: as ``group`` with a ``queue`` before each pyinfer (the decoder's thread does not run pyinfer's code);
- ``groupb2``: as ``group`` with ``batch-size=2N`` (two frames of each stream per model call);
- ``pyid``: a Python passthrough element per stream (``do_transform_ip`` returns at once): the floor that any
  element written in Python puts on N streams sharing one interpreter (the GIL), no model;
- ``separate``: ``... ! pyinfer batch-size=1 ! fakesink`` x N (N models, N calls);
- ``raw`` (GPU only): the model alone on letterboxed input in a CUDA graph at batch N (bench/gpu/throughput.py);
- ``rawdec`` (GPU only): ``decode`` x N and, beside it in a thread of the same process, the raw model at batch N
  (``--raw-batch``) replayed back to back (each batch synchronised, as pyinfer's worker does): both rates while
  they share the GPU, the driver and the interpreter;
- ``rawpaced`` (GPU only): as ``rawdec``, but the model replays one batch each time the decoders have given that
  many more frames (what a batch-group without any Python cost would run): the decode rate this load leaves is
  the ceiling of the group at that batch size.

Every sink's probe reads the frame's detections. Timed from the moment every stream has passed its first
``--skip`` frames to the last buffer. Target (issue #13): 8 streams, ``group`` >= 0.85 of ``decode``.
Results: multistream-gpu-DATE.json (or -cpu- for a CPU run) under --out.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import common  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", required=True, help="H.264 MP4 (pyinfer scene)")
    p.add_argument("--streams", default="1,4,8,16", help="comma-separated stream counts")
    p.add_argument("--variants", default="decode,group,separate,raw")
    p.add_argument("--decoder", default="nvh264dec")
    p.add_argument("--memory", default="cuda", choices=["cuda", "system"])
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--cuda-context",
        default="shared",
        choices=["shared", "own"],
        help="shared: the decoders get torch's primary context (pyinfer answers their context query; a bus "
        "handler answers where no pyinfer is); own: share-cuda-context=false, each makes its own",
    )
    p.add_argument("--model", default="yolov8n", help="yolov8n (ultralytics yaml, as element.py) or shapes")
    p.add_argument("--knobs", default="cuda-graphs=true channels-last=true", help="pyinfer speed knobs (GPU)")
    p.add_argument("--frames", type=int, default=0, help="frames per stream (0: the whole file)")
    p.add_argument("--raw-batch", type=int, default=0, help="rawdec/rawpaced: the model's batch (0: N)")
    p.add_argument("--skip", type=int, default=16, help="warm-up frames per stream, not timed")
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--tag", default="", help="suffix of the result file's name (several runs in one call)")
    p.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval (0: Python's)")
    p.add_argument("--profile", action="store_true", help="sample the threads' Python stacks (bench/sampler.py)")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once every stream passed its warm-up")
    p.add_argument("--pyspy", default="", help="py-spy binary: attach it (--threads --gil) over the timed window of "
                   "every pyinfer variant; raw stacks in OUT/pyspy-VARIANT-xN.txt")  # fmt: skip
    p.add_argument("--diag", action="store_true", help="count buffers pyinfer copies on arrival (shared) and plane-"
                   "view cache misses (new frame addresses) per run")  # fmt: skip
    p.add_argument("--pyspy-args", default="--gil --nonblocking", help="py-spy record's sampling flags")
    p.add_argument("--count-calls", action="store_true", help="count the C calls (torch's, ctypes', ...) each "
                   "pyinfer thread makes in the timed window (sys.setprofile: counts, not speed)")  # fmt: skip
    p.add_argument("--pyspy-s", type=int, default=2, help="seconds py-spy samples (from the timed window's start)")
    return p.parse_args(argv)


_COUNT: dict = {"calls": None}
_DECODED = [0]  # frames every sink has seen (rawpaced: the model replays one batch per that many)
_HOOKED = threading.local()


def _count_hook(frame, event, arg):
    calls = _COUNT["calls"]
    if calls is None or event != "c_call":
        return
    import re

    name = re.sub(r"\d+", "#", threading.current_thread().name)
    owner = getattr(arg, "__module__", None) or type(getattr(arg, "__self__", None)).__name__
    key = (name, f"{owner}.{getattr(arg, '__qualname__', getattr(arg, '__name__', '?'))}")
    calls[key] = calls.get(key, 0) + 1


def _install_counting() -> None:
    """Wrap the functions each pyinfer thread runs per frame or batch so that the thread installs the profile
    hook on itself (a hook is per thread; the threads exist before the timed window)."""
    from pyinfer.elements import _group, infer
    from pyinfer.pipeline import InferPipeline

    def hooking(fn, static=False):
        def wrapper(*a, **k):
            if not getattr(_HOOKED, "on", False):
                _HOOKED.on = True
                sys.setprofile(_count_hook)
            return fn(*a, **k)

        return staticmethod(wrapper) if static else wrapper

    InferPipeline._submit = hooking(InferPipeline.__dict__["_submit"].__func__, static=True)
    InferPipeline._collect = hooking(InferPipeline.__dict__["_collect"].__func__, static=True)
    _group.BatchGroup.submit = hooking(_group.BatchGroup.submit)
    infer._Pusher.__call__ = hooking(infer._Pusher.__call__)


def _start_counting(calls: dict) -> None:
    _COUNT["calls"] = calls


def _stop_counting() -> None:
    _COUNT["calls"] = None


def _summarise_calls(calls: dict, frames: int) -> dict:
    """Per thread kind: C calls per frame in total and the 60 most frequent."""
    out: dict = {}
    for (thread, fn), n in calls.items():
        t = out.setdefault(thread, {"per_frame": 0.0, "top": {}})
        t["per_frame"] += n / max(1, frames)
        t["top"][fn] = round(n / max(1, frames), 3)
    for t in out.values():
        t["per_frame"] = round(t["per_frame"], 2)
        t["top"] = dict(sorted(t["top"].items(), key=lambda kv: -kv[1])[:60])
    return out


def _install_diag() -> dict:
    """Counters around pyinfer's internals (--diag): buffers shared on arrival (copied by ``_owned``), plane-view
    cache misses and the distinct frame addresses behind them."""
    import pyinfer.elements.infer as inf
    import pyinfer.frames.video as video

    state = {"arrived": 0, "shared": 0, "misses": 0, "bases": set()}
    owned, put = inf._owned, video._views_put

    def counting_owned(buf):
        state["arrived"] += 1
        if inf._refcount(buf) > 1:
            state["shared"] += 1
        return owned(buf)

    def counting_put(key, planes):
        state["misses"] += 1
        state["bases"].add(key[0])
        return put(key, planes)

    inf._owned, video._views_put = counting_owned, counting_put

    def reset() -> None:
        state.update(arrived=0, shared=0, misses=0, bases=set())

    def report() -> dict:
        return {"arrived": state["arrived"], "shared_on_arrival": state["shared"], "view_misses": state["misses"],
                "distinct_addresses": len(state["bases"])}  # fmt: skip

    return {"reset": reset, "report": report}


def _register_pyid() -> None:
    """``benchpyid``: a passthrough element in Python (the floor of a Python element per frame)."""
    from pyinfer._gi import GObject, Gst, GstBase

    class PyIdentity(GstBase.BaseTransform):
        __gstmetadata__ = ("benchpyid", "Filter", "Python passthrough (bench)", "pyinfer")
        __gsttemplates__ = (
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, Gst.Caps.new_any()),
            Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, Gst.Caps.new_any()),
        )

        def __init__(self) -> None:
            super().__init__()
            self.set_passthrough(False)
            self.set_in_place(True)

        def do_transform_ip(self, buf):
            return Gst.FlowReturn.OK

    if Gst.ElementFactory.find("benchpyid") is None:
        GObject.type_register(PyIdentity)
        Gst.Element.register(None, "benchpyid", Gst.Rank.NONE, PyIdentity)


def run_streams(args: argparse.Namespace, n: int, middle: str, timeout_s: float = 180, spy_out: str = "") -> dict:
    """N branches ``filesrc ! qtdemux ! h264parse ! DECODER ! CAPS ! MIDDLE ! fakesink``; frames/s over all."""
    from pyinfer._gi import Gst
    from pyinfer.meta import read_detections

    # System memory: videoconvert (passthrough for NVDEC's NV12) lets a software decoder's I420 in too.
    caps = (
        "video/x-raw(memory:CUDAMemory),format=NV12"
        if args.memory == "cuda"
        else "videoconvert ! video/x-raw,format=NV12"
    )
    limit = f" ! identity eos-after={args.frames}" if args.frames else ""
    branches = []
    for i in range(n):
        mid = middle.format(i=i)
        branches.append(
            f"filesrc location={args.video} ! qtdemux ! h264parse ! {args.decoder} ! {caps}{limit} ! "
            f"{mid + ' ! ' if mid else ''}fakesink name=sink{i} sync=false"
        )
    pipeline = Gst.parse_launch(" ".join(branches))
    if args.cuda_context == "shared" and args.memory == "cuda":
        from pyinfer.frames.cuda_context import share_on_bus

        share_on_bus(pipeline.get_bus())
    lock = threading.Lock()
    stamps: list[float] = []
    per_stream = [0] * n
    ready = [False] * n
    start = [0.0, 0]  # time at which every stream passed its warm-up, frames at that time
    counts = [0]
    gc_pause = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "t": 0.0}
    spy: list = []
    calls: dict = {}

    def on_gc(phase: str, info: dict) -> None:  # garbage collections in the timed window: how long the GIL stopped
        if phase == "start":
            gc_pause["t"] = time.perf_counter()
        elif start[0]:
            g = info["generation"]
            gc_pause["collections"][g] += 1
            gc_pause["seconds"][g] += time.perf_counter() - gc_pause["t"]

    def probe(pad, info, i):
        now = time.perf_counter()
        dets = len(read_detections(info.get_buffer())) if middle else 0
        with lock:
            stamps.append(now)
            _DECODED[0] += 1
            per_stream[i] += 1
            counts[0] += dets
            if not ready[i] and per_stream[i] >= args.skip:
                ready[i] = True
                if all(ready):
                    start[0], start[1] = now, len(stamps)
                    if args.gc_freeze:
                        gc.freeze()
                    if args.count_calls and middle:
                        _start_counting(calls)
                    if args.pyspy and middle and spy_out:
                        import os
                        import subprocess

                        spy.append(subprocess.Popen(
                            [args.pyspy, "record", "--pid", str(os.getpid()), "--threads", *args.pyspy_args.split(),
                             "-r", "500", "-d", str(max(1, round(args.pyspy_s))), "-f", "raw", "-o", spy_out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))  # fmt: skip
        return Gst.PadProbeReturn.OK

    for i in range(n):
        pipeline.get_by_name(f"sink{i}").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe, i)
    bus = pipeline.get_bus()
    gc.callbacks.append(on_gc)
    try:
        pipeline.set_state(Gst.State.PLAYING)
        msg = bus.timed_pop_filtered(int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR)
        if msg is None:
            raise RuntimeError(f"no EOS within {timeout_s} s ({len(stamps)} buffers)")
        if msg.type == Gst.MessageType.ERROR:
            raise RuntimeError(str(msg.parse_error()))
    finally:
        gc.callbacks.remove(on_gc)
        pipeline.set_state(Gst.State.NULL)
        if args.gc_freeze:
            gc.unfreeze()
    if args.count_calls:
        _stop_counting()
    spy_info = {}
    for proc in spy:
        try:
            _, err = proc.communicate(timeout=args.pyspy_s + 30)
            spy_info = {"file": spy_out, "stderr": err.decode(errors="replace")[-300:]}
        except Exception as exc:
            proc.kill()
            spy_info = {"file": spy_out, "error": str(exc)}
    if not start[0] or len(stamps) <= start[1]:
        raise RuntimeError(f"too few frames after the warm-up: {per_stream}")
    fps = (len(stamps) - start[1]) / (stamps[-1] - start[0])
    return {"frames_per_s": round(fps, 1), "frames": per_stream, "detections_per_frame":
            round(counts[0] / max(1, len(stamps)), 2), "pipeline": branches[0],
            "gc_in_timed_window": {"collections": gc_pause["collections"],
                                   "seconds": [round(v, 4) for v in gc_pause["seconds"]]},
            "timed_s": round(stamps[-1] - start[0], 3), "cuda_context": args.cuda_context,
            "cuda_context_answers": _answers(),
            **({"c_calls": _summarise_calls(calls, len(stamps) - start[1])} if calls else {}),
            **({"pyspy": spy_info} if spy_info else {})}  # fmt: skip


def _answers() -> dict:
    """How many times the decoders were given torch's primary context so far (pyinfer.frames.cuda_context)."""
    from pyinfer.frames import cuda_context

    return dict(cuda_context.ANSWERED)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.switch_interval > 0:
        sys.setswitchinterval(args.switch_interval)
    t0 = time.monotonic()
    import pyinfer

    pyinfer.register()
    from pyinfer._gi import Gst

    _register_pyid()

    model = "shapes"
    extra = "" if args.device == "cpu" else args.knobs
    if args.cuda_context == "own":
        extra += " share-cuda-context=false"
    raw = None
    if args.model == "shapes":
        from pyinfer.zoo import get_model

        engine = f"model-engine={get_model().path} device={args.device}"
    else:
        import throughput as tp

        tp.register_pyinfer()
        import torch

        bundle = tp.build_model("n", "cuda", torch.float16)
        tp.set_element_model(bundle.module)
        model = bundle.source
        engine = "model-engine=throughput:element_model decoder=yolov8 device=cuda"
        raw = (tp, bundle)
    cpu = args.device == "cpu"
    data = {
        "benchmark": "many cameras, one model (issue #13)",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(),
        "gstreamer": Gst.version_string(),
        "model": model,
        "video": args.video,
        "decoder": args.decoder,
        "memory": args.memory,
        "knobs": extra,
        "switch_interval_s": sys.getswitchinterval(),
        "results": [],
        "errors": [],
    }
    date = time.strftime("%Y-%m-%d", time.gmtime())
    out = (args.out or common.RESULTS_DIR) / f"multistream-{'cpu' if cpu else 'gpu'}-{date}{args.tag}.json"
    variants = [v for v in args.variants.split(",") if v]
    diag = _install_diag() if args.diag else None
    if args.count_calls:
        _install_counting()
    for n in (int(s) for s in args.streams.split(",")):
        for variant in variants:
            if time.monotonic() - t0 > args.budget_s:
                data["errors"].append({"what": f"{variant} x{n}", "error": "skipped: budget"})
                continue
            try:
                if variant == "raw":
                    if raw is None:
                        continue
                    tp, bundle = raw
                    r = _raw(tp, bundle, n)
                elif variant in ("rawdec", "rawpaced"):
                    if raw is None:
                        continue
                    r = _raw_beside_decode(args, raw, n, paced=variant == "rawpaced")
                else:
                    middle = {
                        "decode": "",
                        "group": f"pyinfer {engine} {extra} batch-group=streams batch-size={n} name=inf{{i}}",
                        # a queue between decoder and pyinfer: the decoder's thread never waits on pyinfer's
                        "groupb2": f"pyinfer {engine} {extra} batch-group=streams batch-size={2 * n} name=inf{{i}}",
                        "pyid": "benchpyid",
                        "groupq": f"queue max-size-buffers=8 max-size-bytes=0 max-size-time=0 ! pyinfer {engine} "
                        f"{extra} batch-group=streams batch-size={n} name=inf{{i}}",
                        "separate": f"pyinfer {engine} {extra} batch-size=1 name=inf{{i}}",
                    }[variant]
                    if args.profile and variant != "decode":
                        from sampler import Sampler

                        with Sampler() as sampler:
                            sampler.enabled.set()
                            r = run_streams(args, n, middle)
                        print(sampler.text(12), flush=True)
                        r["profile"] = sampler.report(12)
                    else:
                        spy_out = ""
                        if args.pyspy and variant != "decode":
                            spy_out = str((args.out or common.RESULTS_DIR) / f"pyspy-{variant}-x{n}{args.tag}.txt")
                        if diag is not None:
                            diag["reset"]()
                        r = run_streams(args, n, middle, spy_out=spy_out)
                        if diag is not None:
                            r["diag"] = diag["report"]()
                            print(f"  diag {variant} x{n}: {r['diag']}", flush=True)
            except Exception as exc:
                data["errors"].append({"what": f"{variant} x{n}", "error": f"{type(exc).__name__}: {exc}"[:1500],
                                       "trace": traceback.format_exc()[-2000:]})  # fmt: skip
                print(f"  ERROR {variant} x{n}: {exc}", flush=True)
                continue
            data["results"].append({"variant": variant, "streams": n, **r})
            print(
                f"{variant:9s} x{n:<3d} {r['frames_per_s']:10.1f} frames/s  "
                f"{_raw_note(r)}"
                f"gc {r.get('gc_in_timed_window')} in {r.get('timed_s')} s ctx {r.get('cuda_context_answers')}",
                flush=True,
            )
            common.write_json(out, data)
    ratios = {}
    for n in {r["streams"] for r in data["results"]}:
        fps = {r["variant"]: r["frames_per_s"] for r in data["results"] if r["streams"] == n}
        for g in ("group", "groupq"):
            if "decode" in fps and g in fps:
                ratios[f"{g}/decode x{n}"] = round(fps[g] / fps["decode"], 3)
        if "separate" in fps and "group" in fps:
            ratios[f"group/separate x{n}"] = round(fps["group"] / fps["separate"], 3)
    data["ratios"] = ratios
    common.write_json(out, data)
    print(ratios, f"\nwrote {out}")
    return 0


def _raw_note(r: dict) -> str:
    if "raw_alone_frames_per_s" not in r:
        return ""
    return f"raw beside {r['raw_beside_decode_frames_per_s']} alone {r['raw_alone_frames_per_s']} "


def _raw_beside_decode(args: argparse.Namespace, raw: tuple, n: int, paced: bool = False) -> dict:
    """``decode`` x n while the raw model replays its batch graph (``--raw-batch``, else n) in another thread: back
    to back, or (``paced``) once per that many newly decoded frames."""
    import copy

    import numpy as np
    import torch
    from throughput import capture

    tp, bundle = raw
    b = args.raw_batch or n
    frames = torch.from_numpy(np.stack(tp.render_frames(16))).to("cuda")
    lb = tp.letterboxed(tp.frame_batches(frames, b), torch.float16)
    module = copy.deepcopy(bundle.module).to(memory_format=torch.channels_last)
    stamps: list[float] = []
    stop = threading.Event()
    pacing = threading.Event()
    with torch.inference_mode():
        static = lb[0].clone().contiguous(memory_format=torch.channels_last)
        graph = capture(module, static)

        def loop() -> None:
            with torch.inference_mode():
                i = done = 0
                while not stop.is_set():
                    if paced and pacing.is_set():  # after the model's second alone: a batch per b decoded frames
                        if _DECODED[0] < (done + 1) * b:
                            time.sleep(0.0002)
                            continue
                        done += 1
                    static.copy_(lb[i % len(lb)])
                    graph.replay()
                    torch.cuda.current_stream().synchronize()
                    stamps.append(time.perf_counter())
                    i += 1

        alone_t0 = time.perf_counter()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        time.sleep(1.0)
        alone = sum(1 for t in stamps if t > alone_t0 + 0.2) * b / 0.8
        _DECODED[0] = 0
        pacing.set()
        t0 = time.perf_counter()
        dec = run_streams(args, n, "")
        t1 = time.perf_counter()
        stop.set()
        thread.join()
    # the decode's timed window is its last dec["timed_s"] seconds before t1 (less the EOS handling)
    w0 = t1 - dec["timed_s"] - 0.05
    during = [t for t in stamps if w0 <= t <= t1 - 0.05]
    raw_fps = (len(during) - 1) * b / (during[-1] - during[0]) if len(during) > 1 else 0.0
    return {"frames_per_s": dec["frames_per_s"], "raw_beside_decode_frames_per_s": round(raw_fps, 1),
            "raw_alone_frames_per_s": round(alone, 1), "run_s": round(t1 - t0, 2), "frames": dec["frames"],
            "raw_batch": b, "paced": paced, "cuda_context_answers": dec.get("cuda_context_answers")}  # fmt: skip


def _raw(tp, bundle, n: int) -> dict:
    """The model alone at batch n, in a CUDA graph, on letterboxed frames already on the GPU."""
    import copy

    import numpy as np
    import torch

    frames = torch.from_numpy(np.stack(tp.render_frames(16))).to("cuda")
    lb = tp.letterboxed(tp.frame_batches(frames, n), torch.float16)
    module = copy.deepcopy(bundle.module).to(memory_format=torch.channels_last)
    timer = tp.Timer(True, min_time=0.5, reps=3)
    return tp.raw_graph(module, lb, n, timer, channels_last=True)


if __name__ == "__main__":
    sys.exit(main())
