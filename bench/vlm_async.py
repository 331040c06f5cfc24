#!/usr/bin/env python
"""A slow text model beside the video (issue #16): pyvlm's asynchronous mode against a synchronous call.

``appsrc ! pyvlm mode=async|sync text-model=... ! fakesink``, 640x360 RGB frames of ``pyinfer scene`` (rendered
before the run), side by side in one process:

- models: ``counter`` (the embedded trained counter, ``pyinfer.text.counter:load``) and ``counter+Ns`` (the same
  model with N seconds added to each call: a stand-in for a vision-language model, 10-1000x slower than a detector);
- ``flat-out``: frames pushed as fast as the pipeline takes them (a file): video frames/s and answers/s;
- ``paced``: frames pushed at ``--fps`` (a camera) with their timestamps: the share of frames that left pyvlm
  later than one frame interval after they entered it (what a display or a recorder sees as a stall).

Per run: video frames/s (frames through pyvlm over the time from the first frame in to the last out), answers/s
(model answers over the same time), the latency of each buffer through pyvlm (median, 99th percentile, max), and
how many answers equal the truth caption of the frame they name (an asynchronous answer names the frame the model
read, not the frame it is attached to, so it can be checked the same way).

Writes bench/results/vlm-async-<machine>-<UTC date>.json (or ``--out``) with the command, machine and date.

    .venv/bin/python bench/vlm_async.py
    # GPU machine: PYTHONPATH=src:bench:$PYTHONPATH python3 bench/vlm_async.py --device cuda --out $OUT/vlm.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

W, H = 640, 360
DEVICE = "cpu"


def slow_counter(config: str = "0.2"):
    """text-model factory: the embedded counter with ``config`` seconds added to every call (a slow model)."""
    from pyinfer.text.counter import load

    delay = float(config)
    inner = load("")
    if DEVICE != "cpu":  # the counter's factory loads on the CPU; the GPU run moves its net
        inner = _on_device(DEVICE)
    inner([np.zeros((H, W, 3), np.uint8)] * 2, "")  # warm up (first calls allocate), as a deployment would

    def model(images, prompt):
        out = inner(images, prompt)
        if delay:
            time.sleep(delay)
        return out

    return model


def _on_device(device: str):
    import json

    import torch
    import torch.nn.functional as F

    from pyinfer.text.counter import INPUT_HW, MODEL_PATH, caption

    files = {"config.txt": ""}
    net = torch.jit.load(str(MODEL_PATH), map_location=device, _extra_files=files).eval()
    hw = tuple(json.loads(files["config.txt"] or "{}").get("input_hw", INPUT_HW))

    def model(images, prompt):
        x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)
        with torch.inference_mode():
            counts = net(x.to(torch.uint8)).argmax(-1).tolist()
        return [caption(c, prompt) for c in counts]

    return model


def run(frames: list[np.ndarray], truth: list[str], mode: str, delay: float, pace_fps: float) -> dict:
    from pyinfer._gi import Gst
    from pyinfer.meta.text import read_texts

    desc = (
        f"appsrc name=src format=time ! pyvlm name=v mode={mode} text-model=vlm_async:slow_counter "
        f"model-config={delay} queue-size=1 ! fakesink name=sink sync=false"
    )
    pipeline = Gst.parse_launch(desc)
    src, element = pipeline.get_by_name("src"), pipeline.get_by_name("v")
    caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={W},height={H},framerate=30/1")
    src.set_property("caps", caps)
    src.set_property("max-buffers", 4)  # a camera's appsrc: no deep queue in front of pyvlm
    src.set_property("block", True)
    entered: dict[int, float] = {}
    latency: list[float] = []
    out_times: list[float] = []
    answers: dict[int, str] = {}
    lock = threading.Lock()

    def on_in(pad, info):
        with lock:
            entered[info.get_buffer().pts] = time.perf_counter()
        return Gst.PadProbeReturn.OK

    def on_out(pad, info):
        now = time.perf_counter()
        buf = info.get_buffer()
        with lock:
            latency.append(now - entered.pop(buf.pts, now))
            out_times.append(now)
        for t in read_texts(buf):
            answers[t.source_frame] = t.text
        return Gst.PadProbeReturn.OK

    element.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_in)
    element.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_out)
    bufs = [Gst.Buffer.new_wrapped(f.tobytes()) for f in frames]
    dur = Gst.SECOND // 30
    pipeline.set_state(Gst.State.PLAYING)
    t0 = time.perf_counter()
    try:
        for i, b in enumerate(bufs):
            if pace_fps:
                wait = t0 + i / pace_fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            b.pts, b.duration = i * dur, dur
            if src.emit("push-buffer", b) != Gst.FlowReturn.OK:
                break
        src.emit("end-of-stream")
        msg = pipeline.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        answered = element.get_property("answered")
        dropped = element.get_property("dropped")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type != Gst.MessageType.EOS:
        raise RuntimeError(f"pipeline: {msg.parse_error() if msg is not None else 'timeout'}")
    if len(latency) != len(frames):
        raise RuntimeError(f"{len(latency)} of {len(frames)} frames left pyvlm")
    first_in = t0
    span = max(out_times) - first_in
    ms = sorted(x * 1000 for x in latency)
    interval_ms = 1000 / pace_fps if pace_fps else None
    correct = sum(1 for f, text in answers.items() if truth[f] == text)
    return {
        "mode": mode,
        "model_delay_s": delay,
        "paced_fps": pace_fps or None,
        "frames": len(frames),
        "video_frames_per_s": round(len(frames) / span, 1),
        "answers": answered,
        "answers_per_s": round(answered / span, 2),
        "dropped_requests": dropped,
        "latency_ms": {
            "median": round(statistics.median(ms), 2),
            "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            "max": round(ms[-1], 2),
        },
        "frames_later_than_one_interval": (sum(1 for x in ms if x > interval_ms) if interval_ms else None),
        "distinct_answered_frames_seen": len(answers),
        "answers_equal_truth_caption": round(correct / max(1, len(answers)), 3),
        "pipeline": desc,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--delays", default="0,0.2", help="seconds added to each model call, comma-separated")
    parser.add_argument("--fps", type=float, default=30.0, help="the paced runs' frame rate")
    parser.add_argument("--seed", type=int, default=1_000_000, help="scene seed (held out from the counter's training)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device

    import pyinfer

    pyinfer.register()
    from pyinfer.scene.generator import CLASSES
    from pyinfer.scene.video import render_frames
    from pyinfer.text.counter import MAX_COUNT, caption

    frames, truth = [], []
    for image, objects in render_frames(args.seed, W, H, args.frames):
        frames.append(np.ascontiguousarray(image[..., :3]))
        counts = np.bincount([o.class_id for o in objects], minlength=len(CLASSES))[: len(CLASSES)]
        truth.append(caption(np.minimum(counts, MAX_COUNT).tolist()))
    date = time.strftime("%Y-%m-%d", time.gmtime())
    where = "cpu" if args.device == "cpu" else "gpu"
    out = args.out or common.RESULTS_DIR / f"vlm-async-{where}-{date}.json"
    data = {
        "benchmark": "pyvlm: a slow model beside the video, async vs sync (issue #16)",
        "command": common.command_line(),
        "date": common.utc_now(),
        "machine": common.machine_info(),
        "device": args.device,
        "frames": f"{args.frames} frames {W}x{H} RGB of pyinfer scene seed {args.seed}",
        "results": [],
    }
    for delay in (float(d) for d in args.delays.split(",")):
        for pace in (0.0, args.fps):
            for mode in ("async", "sync"):
                r = run(frames, truth, mode, delay, pace)
                data["results"].append(r)
                kind = "paced" if pace else "flat-out"
                lat = r["latency_ms"]
                print(f"{kind:8s} +{delay:.2f}s {mode:5s} video {r['video_frames_per_s']:8.1f} frames/s  answers "
                      f"{r['answers_per_s']:7.2f}/s  latency median {lat['median']:7.2f} p99 {lat['p99']:8.2f} ms  "
                      f"late {r['frames_later_than_one_interval']}", flush=True)  # fmt: skip
                common.write_json(out, data)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
