"""backend=triton against a real Triton Inference Server (the nvidia-pytriton wheel's tritonserver, CPU, python
backend running the embedded TorchScript detector), started here on 127.0.0.1: detections against the local
backend's, shared memory, metadata from the server's model config, and the faults (absent, slow, erroring,
killed and restarted mid-stream)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pyinfer._gi import Gst
from pyinfer.backends import load_model, resolve_backend
from pyinfer.backends.triton import parse_url
from pyinfer.errors import ConfigError, ModelError
from pyinfer.meta import read_detections
from support import push_frames, run
from triton_support import TritonServer, free_port, write_repository

MODELS = {
    "shapes": {},
    "shapes_u8": {"dtype": "TYPE_UINT8"},
    "shared": {"queue_delay_us": 200_000},  # a long batching window: two clients' requests meet in one execute
    "slow": {"delay_s": 3.0},
    "slows_down": {"delay_s": 3.0, "delay_after": 1},  # answers its first call (the warm-up), then takes 3 s
    "broken": {"fail": "model refuses: test fault"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedded_model):
    work = tmp_path_factory.mktemp("triton")
    repo = write_repository(work / "repo", embedded_model.path, MODELS)
    srv = TritonServer(repo, work, env={"PYINFER_TRITON_BATCH_LOG": str(work / "batches.jsonl")})
    srv.start()
    yield srv
    srv.stop()


def batches(server: TritonServer, model: str) -> list[dict]:
    path = server.work / "batches.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [b for b in map(json.loads, lines) if b["model"] == model]


# -- detections: the same as the local TorchScript backend's --------------------------------------------------------
@pytest.mark.parametrize(
    ("protocol", "props"),
    [("grpc", "batch-size=1"), ("grpc", "batch-size=4 in-flight=3"), ("http", "batch-size=4")],
)
def test_detections_equal_the_local_backends(server, protocol, props, scene_frames, reference, detect, assert_same):
    got = detect(server.url("shapes", protocol), scene_frames, props)
    assert_same(got, reference)
    names = {got[f].label(i) for f in range(len(got)) for i in range(len(got[f]))}
    assert names and names <= {"circle", "square", "triangle"}  # labels from the server's model config


def test_without_shared_memory_the_same_detections(server, scene_frames, reference, detect, assert_same):
    assert_same(detect(server.url("shapes", shm="off"), scene_frames, "batch-size=2"), reference)


def test_uint8_model_gets_uint8_frames(server, scene_frames, reference, detect, assert_same):
    """A model declaring TYPE_UINT8 input gets the letterboxed pixels as bytes (rounded: boxes move a little)."""
    before = len(batches(server, "shapes_u8"))
    model = load_model(server.url("shapes_u8"), "cpu")
    import torch

    assert model.dtype == torch.float32  # pyinfer letterboxes as for any model; the wire carries bytes
    assert_same(detect(server.url("shapes_u8"), scene_frames), reference, min_iou=0.9)
    assert len(batches(server, "shapes_u8")) > before


def test_metadata_comes_from_the_server_model_config(server):
    model = load_model(server.url("shapes"), "cpu", max_batch=4)
    assert (model.backend, model.input_size, model.names) == ("triton", (384, 384), ("circle", "square", "triangle"))
    assert model.output_names == ("output0",)
    assert model.metadata["task"] == "detect"
    assert model.metadata["triton"]["max_batch_size"] == 8
    assert model.remote.handles, "loopback server: the input should go through system shared memory"
    import tritonclient.grpc as grpcclient

    status = grpcclient.InferenceServerClient(server.grpc).get_system_shared_memory_status(as_json=True)
    registered = set(status.get("regions", {}))
    assert set(model.remote.handles) <= registered
    assert model.metadata["triton"]["shm"] == "system"  # the element runs on the CPU here: no CUDA shared memory


def test_shm_cuda_needs_the_element_on_a_gpu(server):
    with pytest.raises(ConfigError, match="shm=cuda needs the element on a GPU"):
        load_model(server.url("shapes", shm="cuda"), "cpu")


def test_shm_system_and_off_say_where_the_input_travels(server, embedded_model):
    import torch

    x = torch.rand(2, 3, 384, 384)
    want = torch.jit.load(str(embedded_model.path))(x)
    for shm, kind in (("system", "system"), ("off", "off")):
        model = load_model(server.url("shapes", shm=shm), "cpu", max_batch=2)
        assert model.metadata["triton"]["shm"] == kind
        assert bool(model.remote.handles) == (kind == "system") and model.remote.cuda is None
        torch.testing.assert_close(model.forward(x)[0], want, atol=1e-3, rtol=1e-4)


def test_a_batch_above_the_server_max_is_sent_in_chunks(server, embedded_model):
    import torch

    model = load_model(server.url("shapes", "http"), "cpu")
    x = torch.rand(11, 3, 384, 384)  # max_batch_size 8: 8 + 3
    out = model.forward(x)[0]
    want = torch.jit.load(str(embedded_model.path))(x)
    assert out.shape == want.shape
    torch.testing.assert_close(out, want, atol=1e-3, rtol=1e-4)


def test_requests_overlap_in_flight(server):
    """submit returns before the answer: three batches sent, then collected, take about one model call's time
    more than one (the server batches them), not three round trips one after another."""
    import torch

    model = load_model(server.url("shapes"), "cpu", max_batch=2)
    x = torch.rand(2, 3, 384, 384)
    handles = [model.submit(x) for _ in range(3)]
    outs = [model.wait(h) for h in handles]
    ref = model.forward(x)[0]
    for out in outs:
        torch.testing.assert_close(out[0], ref, atol=1e-3, rtol=1e-4)


# -- two pipelines in two processes share one server-side model and its dynamic batcher ----------------------------
CLIENT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import pyinfer
    from pyinfer._gi import Gst
    pyinfer.register()
    from pyinfer.scene.video import render_frames
    from support import push_frames, run
    frames = [img for img, _ in render_frames(4242, 640, 480, 4)] * 3
    p = Gst.parse_launch("appsrc name=src ! pyinfer model-engine={url} device=cpu in-flight=1 ! appsink name=sink")
    res = run(p, timeout_s=120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    print(json.dumps({{"ok": res.ok, "counts": [len(d) for d in res.detections],
                      "error": res.error.message if res.error else ""}}))
""")


def test_two_processes_share_the_server_model_and_its_batcher(server, reference):
    url = server.url("shared")
    code = CLIENT.format(tests=str(Path(__file__).resolve().parent.parent), url=url)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    want = [len(d) for d in reference] * 3
    for r in results:
        assert r["ok"], r["error"]
        assert r["counts"] == want
    pids = [{i.split("-")[1] for i in b["ids"]} for b in batches(server, "shared")]
    assert sum(len(b["ids"]) for b in batches(server, "shared")) >= 2 * 12  # warm-ups and every frame
    assert any(len(p) == 2 for p in pids), f"no execute had requests of both processes: {pids}"


# -- faults ------------------------------------------------------------------------------------------------------
SRC = "videotestsrc num-buffers=6 ! video/x-raw,format=RGB,width=64,height=48"


def test_no_server_at_start_is_an_error_within_the_connect_timeout(run_pipeline):
    url = f"triton://127.0.0.1:{free_port()}/shapes?connect-timeout=1"
    t0 = time.monotonic()
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={url} ! fakesink")
    assert time.monotonic() - t0 < 10
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.OPEN_READ), res.error.message
    assert "not ready after 1 s" in res.error.message and url.split("?")[0].split("//")[1].split("/")[0] in (
        res.error.message
    )


def test_a_server_that_comes_up_within_the_connect_timeout_is_waited_for(tmp_path, embedded_model, scene_frames,
                                                                         reference):  # fmt: skip
    """The pipeline starts before its server: start waits (connect-timeout=60) and the frames get detections."""
    repo = write_repository(tmp_path / "repo", embedded_model.path, {"shapes": {}})
    srv = TritonServer(repo, tmp_path)  # its ports are fixed now; it starts a second after the pipeline
    starter = threading.Timer(1.0, srv.start)
    url = srv.url("shapes", **{"connect-timeout": "60"})
    pipeline = Gst.parse_launch(f"appsrc name=src ! pyinfer model-engine={url} device=cpu ! appsink name=sink")
    starter.start()
    try:
        t0 = time.monotonic()
        res = run(pipeline, timeout_s=120, feed=lambda p: push_frames(p.get_by_name("src"), scene_frames))
        assert res.ok, res.error
        assert time.monotonic() - t0 > 1.0  # it did wait for the server
        assert [len(d) for d in res.detections] == [len(d) for d in reference]
    finally:
        starter.join()
        srv.stop()


def test_an_unknown_model_names_the_models_the_server_has(server, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={server.url('nope')} ! fakesink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.NOT_FOUND), res.error.message
    assert "no model 'nope'" in res.error.message and "shapes" in res.error.message


def test_an_erroring_model_fails_with_the_servers_message(server, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={server.url('broken')} ! fakesink")
    assert res.message == Gst.MessageType.ERROR
    assert "model refuses: test fault" in res.error.message


def test_a_slow_server_times_out_and_never_blocks(server, run_pipeline):
    """Warm-up at start already needs an answer: with timeout=0.5 and a 3 s model, start fails in bounded time."""
    t0 = time.monotonic()
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={server.url('slow', timeout='0.5')} ! fakesink", timeout_s=30)
    assert time.monotonic() - t0 < 10
    assert res.message == Gst.MessageType.ERROR
    text = res.error.message.lower()
    assert "deadline" in text or "timeout" in text or "timed out" in text, res.error.message


def test_a_slow_server_mid_stream_with_skip_passes_the_frames(server, scene_frames):
    """The model answers the warm-up, then takes 3 s a call: with timeout=0.5 every frame times out (or is refused
    at once during the back-off), passes without detections, and skipped-buffers counts them."""
    url = server.url("slows_down", timeout="0.5")
    pipeline = Gst.parse_launch(f"appsrc name=src ! pyinfer name=infer model-engine={url} device=cpu "
                                "on-error=skip ! appsink name=sink")  # fmt: skip
    infer = pipeline.get_by_name("infer")
    t0 = time.monotonic()
    res = run(pipeline, timeout_s=60, feed=lambda p: push_frames(p.get_by_name("src"), scene_frames))
    assert res.ok, res.error
    assert len(res.detections) == 4 and all(len(d) == 0 for d in res.detections)
    assert infer.get_property("skipped-buffers") == 4
    assert time.monotonic() - t0 < 15
    assert any("on-error=skip" in w and "127.0.0.1" in w for w in res.warnings), res.warnings


# -- the server killed and restarted mid-stream --------------------------------------------------------------------
def test_server_killed_and_restarted_mid_stream(tmp_path, embedded_model, scene_frames, reference):
    repo = write_repository(tmp_path / "repo", embedded_model.path, {"shapes": {}})
    srv = TritonServer(repo, tmp_path)
    srv.start()
    try:
        pipeline = Gst.parse_launch(f"appsrc name=src ! pyinfer name=infer model-engine={srv.url('shapes')} "
                                    "device=cpu on-error=skip ! appsink name=sink")  # fmt: skip
        infer = pipeline.get_by_name("infer")
        phases = {"before": 8, "down": 8}
        frames = [scene_frames[i % 4] for i in range(400)]
        out = [0]
        got = []  # detections per frame, as they leave

        def count(pad, info):
            out[0] += 1
            got.append(len(read_detections(info.get_buffer())))
            return Gst.PadProbeReturn.OK

        infer.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, count)
        want = [len(d) for d in reference]
        assert all(want)  # every scene frame has objects: a frame without any was skipped
        pushed_total = [0]

        def feed(p):
            src = p.get_by_name("src")
            pushed = iter(frames)

            def push(n, pause):
                for _ in range(n):
                    _push_one(src, next(pushed), pushed_total[0])
                    pushed_total[0] += 1
                    time.sleep(pause)

            def wait_out(n, timeout_s=60):
                deadline = time.monotonic() + timeout_s
                while out[0] < n and time.monotonic() < deadline:
                    time.sleep(0.02)

            push(phases["before"], 0.05)
            wait_out(phases["before"])  # all inferred before the kill
            srv.stop(kill=True)  # SIGKILL: no goodbye
            push(phases["down"], 0.05)
            restart = threading.Thread(target=srv.start, daemon=True)
            restart.start()
            while restart.is_alive() and pushed_total[0] < 300:  # frames keep coming while the server restarts
                push(1, 0.1)
            # then until the element answers again (its back-off is at most 2 s), and ten more after that
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and pushed_total[0] < 380:
                push(1, 0.1)
                wait_out(pushed_total[0], 10)
                if got and got[-1]:
                    break
            push(10, 0.05)
            src.emit("end-of-stream")

        res = run(pipeline, timeout_s=180, feed=feed)
        assert res.ok, res.error
        total = pushed_total[0]
        assert len(res.detections) == total  # every frame came out
        skipped = infer.get_property("skipped-buffers")
        inferred = [i for i, d in enumerate(res.detections) if len(d)]
        assert 0 < skipped < total - 10
        assert len(inferred) + skipped == total
        assert all(len(res.detections[i]) == want[i % 4] for i in range(phases["before"]))
        assert all(len(res.detections[i]) == want[i % 4] for i in range(total - 10, total)), "no recovery"
        assert any("answers again" in w for w in res.warnings), res.warnings
        assert any("on-error=skip" in w for w in res.warnings), res.warnings
    finally:
        srv.stop()


def _push_one(src, frame, i, fps=30):
    from pyinfer._gi import GstVideo

    h, w, c = frame.shape
    if i == 0:
        caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1")
        src.set_property("caps", caps)
        src.set_property("format", Gst.Format.TIME)
    info = GstVideo.VideoInfo.new_from_caps(src.get_property("caps"))
    import numpy as np

    padded = np.zeros((h, info.stride[0]), np.uint8)
    padded[:, : w * c] = frame.reshape(h, w * c)
    buf = Gst.Buffer.new_wrapped(padded.tobytes())
    buf.pts = i * Gst.SECOND // fps
    buf.duration = Gst.SECOND // fps
    src.emit("push-buffer", buf)


# -- model-engine URLs -----------------------------------------------------------------------------------------------
def test_urls_name_the_protocol_model_version_and_options():
    t = parse_url("triton://gpu-box:9001/det/3?timeout=2.5&shm=off")
    assert (t.protocol, t.host, t.port, t.model, t.version, t.timeout_s, t.shm) == (
        "grpc", "gpu-box", 9001, "det", "3", 2.5, "off",
    )  # fmt: skip
    assert (parse_url("http://h/m").port, parse_url("grpc://h/m").port) == (8000, 8001)
    assert not parse_url("triton://10.0.0.5:8001/m").use_shm and parse_url("triton://127.0.0.1/m").use_shm
    # which shared memory is tried, in order, for an element on a GPU / on the CPU
    kinds = {shm: (parse_url(f"triton://127.0.0.1/m?shm={shm}").shm_kinds("cuda"),
                   parse_url(f"triton://127.0.0.1/m?shm={shm}").shm_kinds("cpu"))
             for shm in ("auto", "on", "off", "cuda", "system")}  # fmt: skip
    assert kinds == {
        "auto": (["cuda", "system"], ["system"]), "on": (["cuda", "system"], ["system"]), "off": ([], []),
        "cuda": (["cuda"], ["cuda"]), "system": (["system"], ["system"]),
    }  # fmt: skip
    assert parse_url("triton://10.0.0.5/m").shm_kinds("cuda") == []  # another host: over the wire
    assert parse_url("triton://10.0.0.5/m?shm=cuda").shm_kinds("cuda") == ["cuda"]  # the user says it is this host
    assert resolve_backend("triton://h:8001/m") == "triton"
    assert resolve_backend("model.onnx") == "onnx"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("triton://h:8001", "path must be /model"),
        ("triton://h:8001/m/latest", "not a number"),
        ("triton://h:8001/m?timeout=0", "positive number"),
        ("triton://h:8001/m?shm=maybe", "shm='maybe'"),
        ("triton://h:8001/m?colour=red", "unknown option"),
        ("triton:///m", "no server host"),
    ],
)
def test_bad_urls_are_config_errors(url, match):
    with pytest.raises(ConfigError, match=match):
        load_model(url, "cpu", backend="triton")


def test_backend_triton_with_a_file_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a URL"):
        load_model("/tmp/model.onnx", "cpu", backend="triton")


def test_absent_server_is_a_model_error_in_bounded_time():
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=r"not ready after 0\.5 s"):
        load_model(f"http://127.0.0.1:{free_port()}/m?connect-timeout=0.5", "cpu")
    assert time.monotonic() - t0 < 5
