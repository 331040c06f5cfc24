"""The speed knobs (pyinfer.accel) give the plain path's detections; the GPU cases run on the device machine."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pyinfer.accel import AccelSettings, FastPath, build_fast_path, decode_fixed, unpack_fixed
from pyinfer.backends._torch import wrap_module
from pyinfer.decoders.base import DecodedBatch
from pyinfer.decoders.yolo import YoloV8Decoder
from pyinfer.engine import Engine, EngineConfig
from pyinfer.errors import ConfigError
from pyinfer.ops.letterbox import LetterboxGeometry

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def clustered_outputs(seed: int, b: int, nc: int, n: int = 2100, size: int = 640, objects: int = 12) -> torch.Tensor:
    """(B, 4 + nc, N) outputs like a trained detector's: a few well-separated objects, each seen by ~6 anchors
    with jittered boxes (IoU > 0.8 between them) and distinct scores; every other anchor is background."""
    rng = np.random.default_rng(seed)
    out = np.zeros((b, 4 + nc, n), np.float32)
    out[:, 0:2] = rng.uniform(0, size, (b, 2, n))
    out[:, 2:4] = rng.uniform(4, 30, (b, 2, n))
    out[:, 4:] = rng.uniform(0, 0.05, (b, nc, n))
    side = int(np.ceil(np.sqrt(objects)))
    cell = size / side
    for f in range(b):
        anchors = rng.permutation(n)
        at = 0
        for k in range(objects):
            cx, cy = (k % side + 0.5) * cell, (k // side + 0.5) * cell
            w, h = rng.uniform(0.3, 0.7, 2) * cell
            cls = rng.integers(nc)
            for _ in range(6):
                a = anchors[at]
                at += 1
                out[f, 0:4, a] = (cx + rng.normal(0, 1.5), cy + rng.normal(0, 1.5), w + rng.normal(0, 2), h)
                out[f, 4 + cls, a] = rng.uniform(0.2, 0.99)
    return torch.from_numpy(out)


def sorted_rows(batch: DecodedBatch) -> list[np.ndarray]:
    """Per frame, rows (x1, y1, x2, y2, score, class) sorted by score (order of equal scores is not defined)."""
    rows = np.column_stack([batch.xyxy, batch.confidence, batch.class_id])
    out = []
    for s in batch.split():
        r = rows[s]
        out.append(r[np.lexsort((r[:, 0], -r[:, 4]))])
    return out


def assert_same(a: DecodedBatch, b: DecodedBatch, atol: float = 0.0) -> None:
    assert a.batch_size == b.batch_size
    for i, (ra, rb) in enumerate(zip(sorted_rows(a), sorted_rows(b))):
        assert ra.shape == rb.shape, f"frame {i}: {len(ra)} vs {len(rb)} detections"
        np.testing.assert_allclose(ra, rb, atol=atol, rtol=0, err_msg=f"frame {i}")


GEO = LetterboxGeometry.compute(1920, 1080, 640, 640)


@pytest.mark.parametrize(
    ("seed", "b", "nc", "conf", "iou", "max_det"),
    [
        (0, 1, 80, 0.25, 0.45, 300),
        (1, 4, 3, 0.25, 0.45, 300),
        (2, 3, 5, 0.5, 0.7, 5),  # the cap cuts frames short
        (3, 2, 1, 0.1, 0.3, 300),
        (4, 5, 80, 0.6, 0.5, 100),
    ],
)
def test_fixed_decode_gives_the_plain_decoders_detections(seed, b, nc, conf, iou, max_det):
    out = clustered_outputs(seed, b, nc)
    ref = YoloV8Decoder().decode([out], GEO, conf_threshold=conf, iou_threshold=iou, max_detections=max_det)
    packed = decode_fixed(out, torch.tensor(conf), torch.tensor(iou), geometry=GEO, candidates=512, max_det=max_det)
    got, redo = unpack_fixed(packed.numpy(), b)
    assert not redo
    assert len(ref.xyxy) > b  # the case has detections to compare
    assert_same(ref, got)


def test_fixed_decode_flags_only_the_frame_with_more_candidates_than_it_takes():
    out = clustered_outputs(5, 2, 3)
    out[1, 4:] = 0.0  # frame 1: nothing above the threshold
    packed = decode_fixed(out, torch.tensor(0.25), torch.tensor(0.45), geometry=GEO, candidates=16, max_det=300)
    assert packed[:, 0, 1].tolist() == [1.0, 0.0]
    _, redo = unpack_fixed(packed.numpy(), 2)
    assert redo
    _, redo_frame1 = unpack_fixed(packed[1:].numpy(), 1)
    assert not redo_frame1


def test_fixed_decode_takes_exactly_as_many_boxes_as_it_has_candidates_without_a_redo():
    out = torch.zeros(1, 5, 300)
    for i in range(16):  # 16 separate boxes above the threshold, scattered over the anchors
        out[0, :4, 7 + 17 * i] = torch.tensor([20.0 + 38 * i, 300.0, 30.0, 30.0])
        out[0, 4, 7 + 17 * i] = 0.3 + 0.04 * i
    packed = decode_fixed(out, torch.tensor(0.25), torch.tensor(0.45), geometry=GEO, candidates=16, max_det=300)
    got, redo = unpack_fixed(packed.numpy(), 1)
    assert not redo
    ref = YoloV8Decoder().decode([out], GEO, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    assert len(ref.xyxy) == 16
    assert_same(ref, got)
    assert np.all(np.diff(got.confidence) < 0)  # best first


@pytest.mark.parametrize(("seed", "max_det"), [(6, 300), (7, 4)])
def test_fixed_decode_with_half_precision_scores_ties_included_gives_the_plain_detections(seed, max_det):
    out = clustered_outputs(seed, 3, 4).half().float()  # fp16 model outputs: coarse scores, many equal
    out[:, 4:] = (out[:, 4:] * 8).round() / 8  # scores in steps of 1/8: ties between overlapping boxes
    conf, iou = 0.2, 0.45
    ref = YoloV8Decoder().decode([out], GEO, conf_threshold=conf, iou_threshold=iou, max_detections=max_det)
    packed = decode_fixed(out, torch.tensor(conf), torch.tensor(iou), geometry=GEO, candidates=512, max_det=max_det)
    got, redo = unpack_fixed(packed.numpy(), 3)
    assert not redo
    # Which of two equal-scoring overlapping boxes survives is not defined (torchvision's order either): compare
    # what is defined, the count per frame and the scores and classes kept.
    for a, g in zip(sorted_rows(ref), sorted_rows(got)):
        assert a.shape == g.shape
        np.testing.assert_array_equal(np.sort(a[:, 4]), np.sort(g[:, 4]))
    counts = packed[:, 0, 0].long()
    for f in range(3):
        assert torch.all(packed[f, 1 + counts[f] :] == 0)  # rows after the detections are zero


def chain_outputs(length: int) -> torch.Tensor:
    """One frame, one class: boxes along a line, each overlapping only its neighbours (IoU 0.6), scores falling.

    Greedy NMS keeps every other box; the fixed point needs about ``length`` rounds to get there.
    """
    out = torch.zeros(1, 5, 64)
    for i in range(length):
        out[0, :4, i] = torch.tensor([100.0 + 25 * i, 300.0, 100.0, 100.0])  # shift 25 of 100: IoU 0.6
        out[0, 4, i] = 0.9 - 0.01 * i
    return out


def test_fixed_decode_flags_a_suppression_chain_longer_than_its_rounds_and_follows_it_with_enough():
    out = chain_outputs(12)
    conf, iou = torch.tensor(0.25), torch.tensor(0.5)
    short = decode_fixed(out, conf, iou, geometry=GEO, candidates=64, max_det=300, iterations=2)
    assert short[0, 0, 2] == 1.0  # unconverged
    ref = YoloV8Decoder().decode([out], GEO, conf_threshold=0.25, iou_threshold=0.5, max_detections=300)
    full = decode_fixed(out, conf, iou, geometry=GEO, candidates=64, max_det=300, iterations=12)
    got, redo = unpack_fixed(full.numpy(), 1)
    assert not redo
    assert len(ref.xyxy) == 6
    assert_same(ref, got)


class TableModel(torch.nn.Module):
    """Returns a fixed (4 + nc, N) table for every frame, after a real (tiny) convolution of the input."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = self.conv(x).mean(dim=(1, 2, 3)).view(-1, 1, 1) * 0
        return self.table.unsqueeze(0) + zero


def table_model(table: torch.Tensor, size: int = 640, device: str = "cpu"):
    module = TableModel(table).to(device).eval()
    meta = {"imgsz": [size, size], "pyinfer": {"decoder": "yolov8"}}
    return wrap_module(module, path="test:table", device=torch.device(device), precision="fp32", backend="module",
                       metadata=meta)  # fmt: skip


def frames_batch(b: int, h: int = 360, w: int = 640, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (b, h, w, 3), dtype=np.uint8))


def plain_and_fast(table: torch.Tensor, settings: AccelSettings, **fast_kw) -> tuple[Engine, FastPath]:
    engine = Engine(table_model(table), "yolov8", (), (640, 640))
    engine.warm_up()
    fast = FastPath(engine.model, engine.decoder, (640, 640), settings, **fast_kw)
    return engine, fast


def test_fast_path_hands_an_overflowing_batch_to_the_plain_decoder_and_takes_more_candidates_next_time():
    table = clustered_outputs(7, 1, 3)[0]
    engine, fast = plain_and_fast(table, AccelSettings(candidates=16), fixed_decode=True)
    frames = frames_batch(2)
    ref = engine.infer(frames)
    got = fast.infer(frames).detections()
    assert [len(d) for d in got] == [len(d) for d in ref]
    assert fast.redos == 1
    assert fast.candidates == 32
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(np.sort(a.confidence), np.sort(b.confidence))


def test_a_partial_batch_is_padded_into_the_instance_of_the_larger_batch():
    table = clustered_outputs(8, 1, 3)[0]
    _, fast = plain_and_fast(table, AccelSettings(), fixed_decode=True)
    fast.infer(frames_batch(4))
    small = frames_batch(2, seed=1)
    got = fast.infer(small)
    assert len(fast._instances) == 1
    assert got.batch_size == 2
    assert_same(
        YoloV8Decoder().decode(
            [table[None].expand(2, -1, -1)],
            LetterboxGeometry.compute(640, 360, 640, 640),
            conf_threshold=0.25,
            iou_threshold=0.45,
            max_detections=300,
        ),
        got,
        atol=1e-4,
    )


def test_batches_smaller_than_max_batch_share_one_instance_captured_at_max_batch():
    """A stream's first and last batches, and a batch-group's while streams come and go, are partial: with the
    element's batch-size as max_batch they all run in the one capture of that size (one warm-up and cuDNN search per
    shape, not one per batch size)."""
    table = clustered_outputs(8, 1, 3)[0]
    engine, fast = plain_and_fast(table, AccelSettings(), fixed_decode=True, max_batch=4)
    for n in (1, 2, 3, 4, 2):
        frames = frames_batch(n, seed=n)
        got = fast.infer(frames).detections()
        ref = engine.infer(frames)
        assert [len(d) for d in got] == [len(d) for d in ref]
    assert [key[0] for key in fast._instances] == [4]
    _, unbounded = plain_and_fast(table, AccelSettings(), fixed_decode=True)  # max_batch 1: sized by the first batch
    unbounded.infer(frames_batch(1))
    unbounded.infer(frames_batch(3))
    assert sorted(key[0] for key in unbounded._instances) == [1, 3]


def test_two_batches_may_be_in_flight_and_a_third_is_refused_until_one_is_collected():
    table = clustered_outputs(9, 1, 3)[0]
    _, fast = plain_and_fast(table, AccelSettings(), fixed_decode=True)
    frames = frames_batch(2)
    first = fast.submit(frames)
    second = fast.submit(frames, conf_threshold=0.9)
    with pytest.raises(RuntimeError, match="at most 2 batches"):
        fast.submit(frames)
    a, b = fast.collect(first), fast.collect(second)
    assert len(a.xyxy) > len(b.xyxy) > 0  # each batch kept its own threshold
    assert_same(a, fast.infer(frames))


def test_thresholds_changed_between_batches_apply_to_the_next_batch():
    table = clustered_outputs(10, 1, 3)[0]
    engine, fast = plain_and_fast(table, AccelSettings(), fixed_decode=True)
    frames = frames_batch(1)
    for conf, iou in ((0.25, 0.45), (0.7, 0.45), (0.25, 0.9)):
        ref = engine.infer(frames, conf_threshold=conf, iou_threshold=iou)[0]
        got = fast.infer(frames, conf_threshold=conf, iou_threshold=iou).detections()[0]
        assert len(got) == len(ref)
        np.testing.assert_array_equal(np.sort(got.confidence), np.sort(ref.confidence))


def test_cuda_graphs_on_the_cpu_is_ignored_with_a_log_line_and_changes_nothing(embedded_model, caplog):
    frames = frames_batch(2, 480, 640, seed=3)
    plain = Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu"))
    with caplog.at_level(logging.INFO, logger="pyinfer.accel"):
        fast = Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu", cuda_graphs=True))
    assert "cuda-graphs is ignored on cpu" in caplog.text
    assert fast.fast is not None and not fast.fast.use_graphs
    for a, b in zip(plain.infer(frames), fast.infer(frames)):
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.class_id, b.class_id)


def test_channels_last_gives_the_same_detections(embedded_model):
    from pyinfer.scene.generator import Scene

    scene = Scene(11, 640, 480)
    frames = torch.from_numpy(np.stack([scene.frame(i)[0] for i in range(3)]))
    plain = Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu"))
    fast = Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu", channels_last=True))
    assert fast.fast is not None
    ref, got = plain.infer(frames), fast.infer(frames)
    assert sum(len(d) for d in ref) > 0
    for a, b in zip(ref, got):
        assert len(a) == len(b)
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)  # another convolution kernel: float rounding


def test_all_knobs_off_keep_the_plain_path():
    engine = Engine(table_model(clustered_outputs(12, 1, 3)[0]), "yolov8", (), (640, 640))
    engine.warm_up()
    assert build_fast_path(engine.model, engine.decoder, (640, 640), AccelSettings()) is None


def test_an_unknown_compile_mode_is_a_config_error_naming_the_modes(embedded_model):
    with pytest.raises(ConfigError, match="compile must be one of off, default, reduce-overhead, max-autotune"):
        Engine.build(EngineConfig(model=str(embedded_model.path), device="cpu", compile="fastest"))


@pytest.mark.slow
def test_compile_gives_the_same_detections_as_the_plain_path():
    table = clustered_outputs(13, 1, 3)[0]
    engine = Engine(table_model(table), "yolov8", (), (640, 640))
    engine.warm_up()
    fast = build_fast_path(engine.model, engine.decoder, (640, 640), AccelSettings(compile="default"))
    frames = frames_batch(2)
    ref = engine.infer(frames)
    got = fast.infer(frames).detections()
    assert sum(len(d) for d in ref) > 0
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(np.sort(a.confidence), np.sort(b.confidence))


# -- the element ---------------------------------------------------------------------------------------------
def test_the_element_exposes_the_knobs_with_their_defaults():
    from pyinfer._gi import Gst

    el = Gst.ElementFactory.make("pyinfer", None)
    assert el.get_property("cuda-graphs") is False
    assert el.get_property("compile") == "off"
    assert el.get_property("channels-last") is False


def test_the_element_with_the_knobs_on_the_cpu_attaches_the_plain_elements_detections(run_pipeline, fixed_model):
    desc = (
        "videotestsrc num-buffers=6 ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"pyinfer model-engine={fixed_model} decoder=yolov8 device=cpu batch-size=2 {{knobs}} ! appsink name=sink"
    )
    plain = run_pipeline(desc.format(knobs=""))
    fast = run_pipeline(desc.format(knobs="cuda-graphs=true channels-last=true"))
    assert plain.ok and fast.ok
    assert len(fast.detections) == 6
    for a, b in zip(plain.detections, fast.detections):
        assert len(a) == len(b) == 2
        np.testing.assert_array_equal(a.xyxy, b.xyxy)


def test_the_element_refuses_an_unknown_compile_mode_when_set(fixed_model):
    from pyinfer._gi import GLib, Gst

    with pytest.raises(GLib.Error, match='could not set property "compile"'):
        Gst.parse_launch(
            "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=320,height=240 ! "
            f"pyinfer model-engine={fixed_model} device=cpu compile=turbo ! fakesink"
        )


# -- on a GPU ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("channels", ["RGB", "BGRx"])
def test_cuda_graphs_give_the_plain_cuda_paths_detections(channels):
    table = clustered_outputs(14, 1, 80).cuda()[0]
    plain = Engine(table_model(table, device="cuda"), "yolov8", (), (640, 640))
    plain.warm_up()
    fast = build_fast_path(plain.model, plain.decoder, (640, 640), AccelSettings(cuda_graphs=True, channels_last=True))
    assert fast.use_graphs and fast.fixed_decode
    c = 3 if channels == "RGB" else 4
    host = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 1080, 1920, c), dtype=np.uint8))
    for frames in (host.cuda(), host.pin_memory(), host[:3].cuda()):  # device, pinned host, partial batch
        want = plain.infer(frames.cuda(), channels=channels)
        got = fast.infer(frames, channels=channels).detections()
        assert len(got) == len(want)
        for a, b in zip(want, got):
            assert len(a) == len(b) > 0
            np.testing.assert_allclose(np.sort(a.confidence), np.sort(b.confidence), atol=0)
    # One instance for device frames (letterboxed before the graph), one for host frames (copied into it); the
    # partial batch was padded into the device frames' one.
    assert len(fast._instances) == 2


@pytest.mark.gpu
@needs_cuda
def test_pipelined_batches_on_cuda_give_the_synchronous_results():
    table = clustered_outputs(15, 1, 80).cuda()[0]
    plain = Engine(table_model(table, device="cuda"), "yolov8", (), (640, 640))
    plain.warm_up()
    fast = build_fast_path(plain.model, plain.decoder, (640, 640), AccelSettings(cuda_graphs=True))
    batches = [frames_batch(2, 1080, 1920, seed=s).cuda() for s in range(4)]
    tickets, results = [], []
    for frames in batches:
        if len(tickets) == 2:
            results.append(fast.collect(tickets.pop(0)))
        tickets.append(fast.submit(frames))
    results += [fast.collect(t) for t in tickets]
    for frames, got in zip(batches, results):
        assert_same(fast.infer(frames), got)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("seed", [31, 32])
def test_fixed_decode_on_cuda_runs_the_triton_nms_and_gives_the_eager_result(seed, monkeypatch):
    from pyinfer.ops import nms_triton

    out = clustered_outputs(seed, 4, 80).cuda()
    conf, iou = torch.tensor(0.25).cuda(), torch.tensor(0.45).cuda()
    got = decode_fixed(out, conf, iou, geometry=GEO, candidates=512, max_det=300)
    assert nms_triton.available(), nms_triton._FAILED  # the kernel served (a failure turns it off)
    monkeypatch.setattr(nms_triton, "ENABLED", False)
    ref = decode_fixed(out, conf, iou, geometry=GEO, candidates=512, max_det=300)  # the eager rounds, on CUDA
    assert ref[:, 0, 0].sum() > 8  # detections to compare
    assert torch.equal(ref, got)


@pytest.mark.parametrize("seed", [21, 22])
def test_fixed_decode_of_half_outputs_gives_the_plain_decoders_detections_of_the_float32_cast(seed):
    # The fast path hands decode_fixed a fp16 model's own outputs; the plain decoder sees them cast to float32.
    half = clustered_outputs(seed, 3, 5).half()
    ref = YoloV8Decoder().decode([half.float()], GEO, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    packed = decode_fixed(half, torch.tensor(0.25), torch.tensor(0.45), geometry=GEO, candidates=512, max_det=300)
    assert packed.dtype == torch.float32
    got, redo = unpack_fixed(packed.numpy(), 3)
    assert not redo
    for a, g in zip(sorted_rows(ref), sorted_rows(got)):
        assert a.shape == g.shape
        np.testing.assert_array_equal(np.sort(a[:, 4]), np.sort(g[:, 4]))


def test_a_threshold_equal_to_a_half_score_keeps_the_same_boxes_as_the_plain_decoder():
    half = clustered_outputs(23, 1, 2).half()
    conf = float(half[0, 4:].max(dim=0).values.float().sort().values[-40])  # a score exactly on the threshold
    ref = YoloV8Decoder().decode([half.float()], GEO, conf_threshold=conf, iou_threshold=0.45, max_detections=300)
    packed = decode_fixed(half, torch.tensor(conf), torch.tensor(0.45), geometry=GEO, candidates=512, max_det=300)
    got, redo = unpack_fixed(packed.numpy(), 1)
    assert not redo and len(ref.confidence) > 0
    np.testing.assert_array_equal(np.sort(ref.confidence), np.sort(got.confidence))


def test_frames_letterboxed_before_the_graph_and_frames_copied_into_it_give_the_same_detections():
    table = clustered_outputs(24, 1, 3)[0]
    engine, direct = plain_and_fast(table, AccelSettings(), fixed_decode=True)
    staged = FastPath(engine.model, engine.decoder, (640, 640), AccelSettings(), fixed_decode=True, direct=False)
    frames = frames_batch(3, seed=4)
    a, b = direct.infer(frames), staged.infer(frames)
    assert_same(a, b)
    (inst,) = next(iter(direct._instances.values()))
    assert inst.frames is None and inst.input is not None  # no static copy of the frames
    (inst,) = next(iter(staged._instances.values()))
    assert inst.frames is not None and inst.input is None
    ref = engine.infer(frames)
    assert [len(d) for d in ref] == [len(d) for d in a.detections()]


# -- non-finite and huge candidates ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "value"),
    [(2, float("inf")), (3, float("-inf")), (0, float("nan")), (4, float("nan"))],
    ids=["w=inf", "h=-inf", "cx=nan", "score=nan"],
)
def test_fixed_decode_drops_non_finite_candidates_as_the_plain_decoder_does(row, value):
    clean = clustered_outputs(25, 3, 4)
    dirty = clean.clone()
    anchors = (clean[:, 4:].max(dim=1).values < 0.1).nonzero()  # background anchors: (frame, anchor)
    for f in (0, 2):
        a = int(anchors[anchors[:, 0] == f][0, 1])
        dirty[f, 4, a] = 0.95
        dirty[f, row, a] = value
    ref = YoloV8Decoder().decode([clean], GEO, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    plain = YoloV8Decoder().decode([dirty], GEO, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    packed = decode_fixed(dirty, torch.tensor(0.25), torch.tensor(0.45), geometry=GEO, candidates=512, max_det=300)
    assert packed[:, 0, 3].tolist() == [1.0, 0.0, 1.0]  # dropped candidates, per frame
    got, redo = unpack_fixed(packed.numpy(), 3)
    assert not redo
    assert np.isfinite(got.xyxy).all()
    assert_same(ref, got)
    assert_same(plain, got)
    assert got.nonfinite == plain.nonfinite == 2
    assert "NaN or infinite values in 2 candidates" in got.warning


@pytest.mark.parametrize(("row", "value"), [(0, 1e30), (2, 1e30), (3, 3e38)], ids=["cx", "w", "h"])
def test_fixed_decode_and_the_plain_decoder_agree_on_a_huge_box_and_it_changes_no_other_frame(row, value):
    clean = clustered_outputs(26, 3, 80)
    dirty = clean.clone()
    a = int((clean[0, 4:].max(dim=0).values < 0.1).nonzero()[0, 0])  # a background anchor of frame 0
    dirty[0, :4, a] = torch.tensor([300.0, 300.0, 20.0, 20.0])
    dirty[0, 4 + 7, a] = 0.95
    dirty[0, row, a] = value
    ref = YoloV8Decoder().decode([clean], GEO, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    plain = YoloV8Decoder().decode([dirty], GEO, conf_threshold=0.25, iou_threshold=0.45, max_detections=300)
    packed = decode_fixed(dirty, torch.tensor(0.25), torch.tensor(0.45), geometry=GEO, candidates=512, max_det=300)
    got, redo = unpack_fixed(packed.numpy(), 3)
    assert not redo
    ref_rows, got_rows = sorted_rows(ref), sorted_rows(got)
    assert len(got_rows[0]) == len(ref_rows[0]) + 1  # the huge box is kept (on the frame's edge), nothing else moves
    for a, g in zip(ref_rows[1:], got_rows[1:]):
        np.testing.assert_array_equal(a, g)
    assert_same(plain, got)
    assert got.nonfinite == 0


def test_unpack_fixed_of_fewer_frames_than_asked_gives_the_frames_it_has():
    packed = decode_fixed(clustered_outputs(27, 1, 3), torch.tensor(0.25), torch.tensor(0.45), geometry=GEO,
                          candidates=512, max_det=300)  # fmt: skip
    got, _ = unpack_fixed(packed.numpy(), 2)
    assert got.batch_size == 1 and len(got.split()) == 1


# -- YUV frames: converted and letterboxed inside the instance (its graph on CUDA) ----------------------------
def _yuv_frames(b: int, h: int, w: int, seed: int, colour=None):
    from pyinfer.ops.colour import YuvColour, YuvFrames

    g = torch.Generator().manual_seed(seed)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    y = torch.randint(16, 236, (b, h, w), dtype=torch.uint8, generator=g)
    uv = torch.randint(16, 241, (b, ch, cw, 2), dtype=torch.uint8, generator=g)  # NV12: interleaved, strided views
    return YuvFrames(y, uv[..., 0], uv[..., 1], colour or YuvColour("bt709"))


def test_yuv_frames_are_copied_into_static_planes_and_letterboxed_like_the_plain_path():
    from pyinfer.ops.colour import YuvColour
    from pyinfer.ops.letterbox import letterbox

    table = clustered_outputs(26, 1, 3)[0]
    engine, fast = plain_and_fast(table, AccelSettings(), fixed_decode=True)
    seen: list[torch.Tensor] = []
    inner = fast._model_fn
    fast._model_fn = lambda x: (seen.append(x.clone()), inner(x))[1]
    for seed, n in ((1, 3), (2, 3), (3, 2)):  # the second reuses the instance; the third is a partial batch
        frames = _yuv_frames(n, 181, 321, seed)
        got = fast.infer(frames)
        want, _ = letterbox(frames, 640, 640, dtype=engine.model.dtype)
        torch.testing.assert_close(seen[-1][:n], want, atol=0, rtol=0)
        assert_same(got, fast.infer(frames))
    ((key, ring),) = fast._instances.items()
    assert key[0] == 3 and YuvColour("bt709") in key  # one instance: the colour is part of its shape
    assert ring[0].frames.y.shape == (3, 181, 321) and ring[0].frames.u.is_contiguous()
    fast.infer(_yuv_frames(3, 181, 321, 4, YuvColour("bt601", full_range=True)))
    assert len(fast._instances) == 2  # another colour: another instance (another graph on CUDA)


def test_a_knob_that_stops_working_reaches_the_engines_warnings_once():
    """A failed CUDA graph capture (or letterbox compile) falls back, and says so through take_warnings, which the
    element posts as a WARNING on the bus (not only a Python log line, invisible under gst-launch)."""
    table = clustered_outputs(8, 1, 3)[0]
    engine, fast = plain_and_fast(table, AccelSettings(), fixed_decode=True)
    engine.fast = fast
    fast.notices.append("cuda-graphs: the capture failed, the model runs without graphs: boom")
    engine.warnings.append("a batch warning")
    assert engine.take_warnings() == [
        "cuda-graphs: the capture failed, the model runs without graphs: boom",
        "a batch warning",
    ]
    assert engine.take_warnings() == []


def test_same_device_takes_cuda_as_the_current_cuda_device(monkeypatch):
    """torch.device("cuda") != torch.device("cuda:0"): a model on "cuda" with frames viewed on "cuda:0" must not
    be sent through a device move every batch (engine.same_device)."""
    import torch

    from pyinfer.engine import same_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    d = torch.device
    assert same_device(d("cpu"), d("cpu"))
    assert same_device(d("cuda"), d("cuda:0")) and same_device(d("cuda:0"), d("cuda"))
    assert same_device(d("cuda:1"), d("cuda:1"))
    assert not same_device(d("cuda"), d("cuda:1"))
    assert not same_device(d("cuda:0"), d("cpu"))
