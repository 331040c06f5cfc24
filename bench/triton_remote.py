#!/usr/bin/env python
"""backend=triton against the local backend (issue #17): what a Triton Inference Server in the path costs.

The benchmark starts a real ``tritonserver`` (the nvidia-pytriton wheel's, python backend, as the tests do:
``tests/triton_support.py``) on 127.0.0.1 with one model, the embedded ``shapes`` TorchScript detector run by a
python-backend ``model.py`` (dynamic batching, one instance, torch with ``--threads`` threads on ``--device``),
and runs, side by side in one process and interleaved (A B C D ... A B C D ...), on the same 640x480 scene frames:

- ``local``: ``appsrc ! pyinfer model-engine=<shapes.torchscript> ! fakesink`` (the model in the element);
- ``grpc``, ``http``: ``model-engine=triton://...`` / ``http://...`` with ``shm=off`` (the tensor on the wire);
- ``shm``: gRPC with the input tensor in system shared memory (``shm=system``; what ``shm=auto`` picks on
  loopback for an element on the CPU);
- ``cudashm`` (``--device cuda``): gRPC with the input in CUDA shared memory (``shm=cuda``; what ``shm=auto``
  picks for an element on a GPU);

each at ``--batches`` (batch-size 1 and 8), default ``in-flight`` (2). Per run of one pipeline:

- latency: ``--latency-batches`` batches pushed one at a time, the next only once the previous batch is out
  (nothing queued): each frame's time from ``push-buffer`` to the element's src pad (median, p90), and per batch
  (its first push to its last frame out);
- throughput: then ``--frames`` frames pushed at once: frames/s from the first push to the last frame out, and
  ``saturated`` latency (each frame's time from the element's sink pad to its src pad while the queue is full).

``call``: the model call alone, outside GStreamer: ``LoadedModel.forward`` on a (B, 3, 384, 384) tensor, local
vs each Triton variant, interleaved. ``overhead_ms``: triton minus local, per batch, from the element's closed-loop
batch latency and from the calls.

``processes``: one pipeline in a child process alone, then two child processes at once (started together after
their warm-up), each ``appsrc ! pyinfer batch-size=1`` on ``--process-frames`` frames: for ``local`` (each
process its own model) and ``shm`` (both sharing the server's model and its dynamic batcher; the server's batch
log tells how many model calls had requests of both processes).

Writes bench/results/triton-<device>-<UTC date>.json (or ``--out``) with the command, machine and date.

    .venv/bin/python bench/triton_remote.py --quick --torch-threads 1   # ~1-3 min on 2 cores
    .venv/bin/python bench/triton_remote.py                  # ~5 min
    .venv/bin/python bench/triton_remote.py --device cuda    # GPU machine: model on the GPU in the server and locally

With ``--device cuda`` the client letterboxes on the GPU; ``grpc``/``http``/``shm`` copy the tensor to host memory
(for the wire or system shared memory) and the server's model.py moves it back to its GPU; ``cudashm`` (added
with ``--device cuda``) copies it device to device into a region the server reads in place (CUDA shared memory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Not named triton.py: with bench/ first on sys.path (a script's folder), ``import triton`` (OpenAI Triton, which
# torch and pyinfer's kernels import) would find it, there and in every other script of bench/.
# tests/ gives triton_support (the server, as the tests start it).
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import numpy as np  # noqa: E402

WIDTH, HEIGHT = 640, 480
VARIANTS = ("local", "grpc", "http", "shm")
#: Added with --device cuda: gRPC with the input in CUDA shared memory (device to device, no host copy).
CUDA_VARIANTS = ("cudashm",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames and runs (~2-3 min on 2 idle cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: the element's and the server model's device")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--frames", type=int, default=None, help="frames per throughput run (default 96; quick 32)")
    p.add_argument("--latency-batches", type=int, default=None, help="closed-loop batches (default 12; quick 6)")
    p.add_argument("--reps", type=int, default=None, help="runs of each variant (default 3; quick 2)")
    p.add_argument("--process-frames", type=int, default=None, help="frames per child process (default 120)")
    p.add_argument("--process-reps", type=int, default=None, help="default 2; quick 1")
    p.add_argument("--calls", type=int, default=None, help="model calls per variant and rep (default 10; quick 5)")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS for this process and its children, set before torch loads (0: as set)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads of the server's model (0: as local)")
    p.add_argument("--queue-delay-us", type=int, default=1000, help="the server's dynamic batching window")
    p.add_argument("--variants", default="", help=f"comma-separated (default {','.join(VARIANTS)}, and "
                   f"{','.join(CUDA_VARIANTS)} with --device cuda)")  # fmt: skip
    p.add_argument("--no-processes", action="store_true")
    p.add_argument("--calls-only", action="store_true", help="only the model-call table (no GStreamer needed)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", default="", help=argparse.SUPPRESS)  # a child process's settings (JSON)
    args = p.parse_args(argv)
    quick = args.quick
    if not args.variants:
        args.variants = ",".join(VARIANTS + (CUDA_VARIANTS if args.device.startswith("cuda") else ()))
    for name, full, short in (("frames", 96, 32), ("latency_batches", 12, 6), ("reps", 3, 2),
                              ("process_frames", 120, 32), ("process_reps", 2, 1), ("calls", 10, 5)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args


def scene_frames(n: int = 8) -> list[np.ndarray]:
    from pyinfer.scene.video import render_frames

    return [img for img, _ in render_frames(4242, WIDTH, HEIGHT, n)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def model_url(server, variant: str) -> str:
    """The model-engine of a variant (the server's shapes model, or the local TorchScript file)."""
    from pyinfer.zoo import get_model

    if variant == "local":
        return str(get_model().path)
    if variant == "grpc":
        return server.url("shapes", "grpc", shm="off")
    if variant == "http":
        return server.url("shapes", "http", shm="off")
    if variant == "shm":
        return server.url("shapes", "grpc", shm="system")
    if variant == "cudashm":
        return server.url("shapes", "grpc", shm="cuda")
    raise ValueError(variant)


class ElementRun:
    """``appsrc ! pyinfer ! fakesink`` with timestamps: pushes (by PTS), in at the element's sink, out at its src."""

    def __init__(self, model: str, device: str, batch: int, frames: list[np.ndarray]):
        from pyinfer._gi import Gst, GstVideo, copy_buffer

        self.Gst = Gst
        self.copy_buffer = copy_buffer
        caps = f"video/x-raw,format=RGB,width={WIDTH},height={HEIGHT},framerate=30/1"
        self.pipeline = Gst.parse_launch(
            f"appsrc name=src format=time caps={caps} ! pyinfer name=infer device={device} batch-size={batch} "
            "meta=roi ! fakesink sync=false"  # ROI metas on every GStreamer version: counted at the src pad
        )
        infer = self.pipeline.get_by_name("infer")
        infer.set_property("model-engine", model)  # set, not parsed: a URL's ?a=b&c=d stays whole
        self.infer = infer
        self.src = self.pipeline.get_by_name("src")
        self.batch = batch
        self.bufs = [Gst.Buffer.new_wrapped(np.ascontiguousarray(f).tobytes()) for f in frames]
        self.pushed: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.out: dict[int, float] = {}
        self.objects: dict[int, int] = {}
        self.count = 0
        self.cond = threading.Condition()
        self.next_pts = 0
        self.roi_api = GstVideo.VideoRegionOfInterestMeta.get_info().api
        infer.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._on_in)
        infer.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_out)

    def _on_in(self, pad, info):
        self.arrived[info.get_buffer().pts] = time.perf_counter()
        return self.Gst.PadProbeReturn.OK

    def _on_out(self, pad, info):
        now = time.perf_counter()
        buf = info.get_buffer()
        self.out[buf.pts] = now
        self.objects[buf.pts] = buf.get_n_meta(self.roi_api)
        with self.cond:
            self.count += 1
            self.cond.notify_all()
        return self.Gst.PadProbeReturn.OK

    def start(self) -> None:
        # ASYNC until the sink prerolls on the first frame; FAILURE when the element did not start
        if self.pipeline.set_state(self.Gst.State.PLAYING) == self.Gst.StateChangeReturn.FAILURE:
            raise RuntimeError(self.error() or "the pipeline did not start")

    def error(self) -> str:
        msg = self.pipeline.get_bus().pop_filtered(self.Gst.MessageType.ERROR)
        return msg.parse_error()[0].message if msg is not None else ""

    def push(self, n: int) -> list[int]:
        """Push ``n`` frames (shallow copies of the scene frames, own timestamps); their PTS."""
        Gst = self.Gst
        out = []
        for _ in range(n):
            i = self.next_pts
            buf = self.copy_buffer(self.bufs[i % len(self.bufs)])  # shallow: shares the frame, own PTS
            buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
            self.pushed[buf.pts] = time.perf_counter()
            self.src.emit("push-buffer", buf)
            out.append(buf.pts)
            self.next_pts += 1
        return out

    def wait_out(self, total: int, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self.count < total:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.count} of {total} frames out after {timeout_s} s: {self.error()}")
                self.cond.wait(min(left, 1.0))

    def closed_loop(self, batches: int) -> tuple[list[float], list[float]]:
        """``batches`` batches, each pushed once the one before is out: per-frame and per-batch latency (s)."""
        frames, per_batch = [], []
        for _ in range(batches):
            target = self.count + self.batch
            pts = self.push(self.batch)
            self.wait_out(target)
            frames += [self.out[p] - self.pushed[p] for p in pts]
            per_batch.append(max(self.out[p] for p in pts) - self.pushed[pts[0]])
        return frames, per_batch

    def burst(self, n: int) -> tuple[float, list[float]]:
        """``n`` frames pushed at once: seconds from the first push to the last frame out; each frame's time in
        the element (sink pad to src pad)."""
        start = self.count
        pts = self.push(n)
        self.wait_out(start + n)
        missing = [p for p in pts if p not in self.out]
        if missing:
            raise RuntimeError(f"{len(missing)} frames counted out but not seen: {missing[:4]} ({start}, {self.count})")
        seconds = max(self.out[p] for p in pts) - self.pushed[pts[0]]
        return seconds, [self.out[p] - self.arrived[p] for p in pts]

    def stop(self) -> None:
        Gst = self.Gst
        self.src.emit("end-of-stream")
        self.pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        self.pipeline.set_state(Gst.State.NULL)


def run_variant(model: str, device: str, batch: int, frames: list[np.ndarray], args) -> dict:
    """One pipeline: warm-up, closed-loop latency, then a burst for frames/s."""
    run = ElementRun(model, device, batch, frames)
    run.start()
    try:
        run.closed_loop(2)  # warm-up: the first batches build what the model and the connection need
        lat_frames, lat_batches = run.closed_loop(args.latency_batches)
        n = max(batch, args.frames // batch * batch)
        seconds, saturated = run.burst(n)
        objects = statistics.mean(run.objects.values())
    finally:
        run.stop()
    return {"seconds": seconds, "frames": n, "latency": lat_frames, "batch_latency": lat_batches,
            "saturated": saturated, "objects_per_frame": objects}  # fmt: skip


def ms(values: list[float]) -> dict:
    return {"median": round(1e3 * statistics.median(values), 2), "p90": round(1e3 * percentile(values, 90), 2)}


def element_table(server, args, frames: list[np.ndarray]) -> dict:
    batches = [int(b) for b in args.batches.split(",")]
    variants = args.variants.split(",")
    raw: dict[str, dict[str, list[dict]]] = {f"b{b}": {v: [] for v in variants} for b in batches}
    for rep in range(args.reps):
        for b in batches:
            for v in variants:
                r = run_variant(model_url(server, v), args.device, b, frames, args)
                raw[f"b{b}"][v].append(r)
                print(f"rep {rep} b{b} {v:6s} {r['frames'] / r['seconds']:7.2f} frames/s  latency "
                      f"{1e3 * statistics.median(r['latency']):7.2f} ms", flush=True)  # fmt: skip
    table: dict = {}
    for key, per_variant in raw.items():
        rows = {}
        for v, runs in per_variant.items():
            fps = [r["frames"] / r["seconds"] for r in runs]
            rows[v] = {
                "frames_per_s": round(statistics.median(fps), 2),
                "frames_per_s_runs": [round(x, 2) for x in fps],
                "latency_ms": ms([x for r in runs for x in r["latency"]]),
                "batch_latency_ms": ms([x for r in runs for x in r["batch_latency"]]),
                "saturated_latency_ms": ms([x for r in runs for x in r["saturated"]]),
                "objects_per_frame": round(statistics.mean(r["objects_per_frame"] for r in runs), 2),
            }
        if "local" in rows:
            local = rows["local"]
            for v, row in rows.items():
                if v == "local":
                    continue
                row["frames_per_s_vs_local"] = round(row["frames_per_s"] / local["frames_per_s"], 3)
                row["overhead_ms_per_batch"] = round(
                    row["batch_latency_ms"]["median"] - local["batch_latency_ms"]["median"], 2
                )
        table[key] = rows
    return table


def call_table(server, args) -> dict:
    """The model call alone (``LoadedModel.forward``), local vs Triton, interleaved; on a short-lived thread."""
    result: dict = {}

    def work() -> None:
        import torch

        from pyinfer.backends import load_model

        for b in (int(x) for x in args.batches.split(",")):
            x = torch.rand(b, 3, 384, 384, generator=torch.Generator().manual_seed(b)).to(args.device)
            models = {v: load_model(model_url(server, v), args.device, max_batch=b) for v in args.variants.split(",")}
            times: dict[str, list[float]] = {v: [] for v in models}
            for m in models.values():
                m.forward(x)  # warm-up
            for _ in range(args.reps):
                for v, m in models.items():
                    for _ in range(args.calls):
                        t0 = time.perf_counter()
                        m.forward(x)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        times[v].append(time.perf_counter() - t0)
            rows = {v: {"ms_per_call": ms(t)} for v, t in times.items()}
            if "local" in models:  # the same numbers whichever way the tensor travelled
                want = models["local"].forward(x)[0].float().cpu()
                for v, m in models.items():
                    got = m.forward(x)[0].float().cpu()
                    rows[v]["max_abs_diff_vs_local"] = round(float((got - want).abs().max()), 6)
                    rows[v]["shm"] = m.metadata.get("triton", {}).get("shm", "-")
            if "local" in rows:
                for v, row in rows.items():
                    if v != "local":
                        local_ms = rows["local"]["ms_per_call"]["median"]
                        row["overhead_ms"] = round(row["ms_per_call"]["median"] - local_ms, 2)
            result[f"b{b}"] = rows
            print(f"call b{b}: " + ", ".join(f"{v} {r['ms_per_call']['median']} ms" for v, r in rows.items()),
                  flush=True)  # fmt: skip

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return result


# -- child processes -------------------------------------------------------------------------------------------------
def child(settings: dict) -> int:
    """One pipeline: warm up, say ready, wait for 'go' on stdin, push the frames, print the result as JSON."""
    import pyinfer

    pyinfer.register()
    run = ElementRun(settings["model"], settings["device"], 1, scene_frames())
    run.start()
    try:
        run.closed_loop(3)
        print("ready", flush=True)
        sys.stdin.readline()
        began = time.time()
        seconds, saturated = run.burst(settings["frames"])
    finally:
        run.stop()
    print(json.dumps({"pid": os.getpid(), "seconds": seconds, "frames": settings["frames"], "began": began,
                      "saturated": saturated}), flush=True)  # fmt: skip
    return 0


def run_children(n: int, settings: dict) -> list[dict]:
    """``n`` child processes, released together once all have warmed up."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(settings)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for p in procs:
            line = p.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "ready":
                raise RuntimeError(f"child process not ready: {line!r}")
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        out = []
        for p in procs:
            text, _ = p.communicate(timeout=600)
            if p.returncode:
                raise RuntimeError(f"child process failed ({p.returncode})")
            out.append(json.loads(text.strip().splitlines()[-1]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def read_batch_log(path: Path, start: int) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(x) for x in lines[start:]]


def process_table(server, args, batch_log: Path) -> dict:
    out: dict = {}
    for v in ("local", "shm"):
        try:
            out[v] = process_row(server, args, batch_log, v)
        except Exception as exc:  # keep the element and call tables of a run whose children failed
            print(f"processes {v} failed: {exc}", flush=True)
            out[v] = {"error": str(exc)}
    return out


def process_row(server, args, batch_log: Path, v: str) -> dict:
    """One variant of the two-process table: a child alone, then two children at once (``--process-reps``)."""
    settings = {"model": model_url(server, v), "device": args.device, "frames": args.process_frames}
    alone, both, mixed = [], [], []
    for _ in range(args.process_reps):
        r = run_children(1, settings)[0]
        alone.append(r["frames"] / r["seconds"])
        logged = len(read_batch_log(batch_log, 0))
        rs = run_children(2, settings)
        both.append([x["frames"] / x["seconds"] for x in rs])
        if v == "shm":
            pids = {str(x["pid"]) for x in rs}
            calls = [b for b in read_batch_log(batch_log, logged)
                     if {i.split("-")[1] for i in b["ids"]} <= pids]  # fmt: skip
            mixed.append({
                "model_calls": len(calls),
                "rows_per_call": round(statistics.mean(b["rows"] for b in calls), 2) if calls else 0,
                "calls_with_both_processes": sum(len({i.split("-")[1] for i in b["ids"]}) == 2 for b in calls),
            })  # fmt: skip
        print(f"processes {v}: alone {alone[-1]:.2f} frames/s, two at once {both[-1]}", flush=True)
    each = [x for pair in both for x in pair]
    totals = [sum(pair) for pair in both]
    row = {
        "alone_frames_per_s": round(statistics.median(alone), 2),
        "two_processes_frames_per_s_each": round(statistics.median(each), 2),
        "two_processes_frames_per_s_total": round(statistics.median(totals), 2),
        "total_vs_alone": round(statistics.median(totals) / statistics.median(alone), 3),
        "runs": {"alone": [round(x, 2) for x in alone], "two": [[round(x, 2) for x in p] for p in both]},
    }
    if mixed:
        row["server_batches"] = mixed
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torch_threads:
        # Before torch loads. On a busy 2-core machine 2 OpenMP threads per process made a 384x384 forward take
        # 4 s instead of 70 ms (threads spinning at barriers while others hold the cores): use 1 there.
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    if args.child:
        return child(json.loads(args.child))
    import torch

    import pyinfer
    from pyinfer.zoo import get_model
    from triton_support import TritonServer, write_repository

    if not args.calls_only:
        pyinfer.register()
    threads = args.threads or torch.get_num_threads()
    t_start = time.monotonic()
    load_start = os.getloadavg()
    frames = [] if args.calls_only else scene_frames()
    with tempfile.TemporaryDirectory(prefix="pyinfer-triton-bench-") as tmp:
        work = Path(tmp)
        batch_log = work / "batches.jsonl"
        model_options = {"max_batch": 8, "queue_delay_us": args.queue_delay_us, "threads": threads,
                         "device": args.device}  # fmt: skip
        repo = write_repository(work / "repo", get_model().path, {"shapes": model_options})
        server = TritonServer(repo, work, env={"PYINFER_TRITON_BATCH_LOG": str(batch_log)})
        t0 = time.monotonic()
        server.start()
        ready_s = time.monotonic() - t0
        try:
            element = {} if args.calls_only else element_table(server, args, frames)
            calls = call_table(server, args)
            processes = {} if args.no_processes or args.calls_only else process_table(server, args, batch_log)
        except BaseException:
            print(server.tail(), file=sys.stderr)
            raise
        finally:
            server.stop()
    import importlib.metadata

    result = {
        "benchmark": "backend=triton (gRPC, HTTP, system shared memory) vs the local backend (issue #17)",
        "command": common.command_line(),
        "machine": dict(common.machine_info(), tritonclient=importlib.metadata.version("tritonclient")),
        "date_utc": common.utc_now(),
        "setup": {
            "model": "embedded shapes detector (TorchScript), 384x384 input; server: python backend running the "
            "same file with torch",
            "server": "tritonserver 2.51 of the nvidia-pytriton 0.7.0 wheel on 127.0.0.1, one model instance, "
            f"dynamic batching (max_batch_size 8, max_queue_delay {args.queue_delay_us} us), {threads} torch "
            f"threads, device {args.device}",
            "server_ready_s": round(ready_s, 2),
            "frames": f"{WIDTH}x{HEIGHT} RGB scene frames (8, cycled)",
            "element": "appsrc ! pyinfer batch-size=B in-flight=2 (default) ! fakesink sync=false",
            "variants": {
                "local": "model-engine=<shapes.torchscript>",
                "grpc": "triton://...?shm=off",
                "http": "http://...?shm=off",
                "shm": "triton://...?shm=system (system shared memory)",
                "cudashm": "triton://...?shm=cuda (CUDA shared memory; --device cuda only)",
            },
            "device": args.device,
            "throughput_frames": args.frames,
            "latency_batches": args.latency_batches,
            "reps": args.reps,
            "process_frames": args.process_frames,
            "process_reps": args.process_reps,
            "quick": args.quick,
        },
        "element": element,
        "call": calls,
        "processes": processes,
        "wall_s": round(time.monotonic() - t_start, 1),
        # other work on the machine moves every figure: the load average (1, 5, 15 min) at start and end
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
    }
    out = args.out or common.RESULTS_DIR / f"triton-{args.device.split(':')[0]}-{common.utc_now()[:10]}.json"
    common.write_json(out, result)
    print(f"wrote {out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
