"""DeepStream metadata writing cost: microseconds per object at 16 frames x 100 objects per batch.

Runs pyinfer's writers (pyservicemaker and pyds) against the contract fakes of tests/fakes, and beside them a
floor: the same object acquisitions and field assignments with precomputed values and nothing else. The fakes
cost more per assignment than the C-backed bindings, so absolute times are an upper bound; the writer/floor
ratio shows what pyinfer adds beyond field assignments (the issue's requirement).

    .venv/bin/python bench/ds_writer.py [--repeats 15] [--out bench/results/ds-writer-DATE.json]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "fakes"), str(ROOT / "bench")]

import nvds  # noqa: E402
import pyds  # noqa: E402
import pyservicemaker as sm  # noqa: E402
from common import RESULTS_DIR, command_line, machine_info, utc_now, write_json  # noqa: E402

from pyinfer import register  # noqa: E402
from pyinfer._gi import Gst  # noqa: E402
from pyinfer.detections import Detections  # noqa: E402
from pyinfer.meta.deepstream import PydsWriter, ServiceMakerWriter, WriterOptions  # noqa: E402

FRAMES, OBJECTS, W, H = 16, 100, 1920, 1080


def _detections(rng: np.random.Generator) -> Detections:
    lt = rng.uniform(0, [W - 100, H - 100], (OBJECTS, 2))
    xyxy = np.concatenate([lt, lt + rng.uniform(10, 100, (OBJECTS, 2))], axis=1).astype(np.float32)
    conf = np.sort(rng.random(OBJECTS).astype(np.float32))[::-1].copy()
    return Detections(
        xyxy, conf, rng.integers(0, 80, OBJECTS).astype(np.int32), labels=tuple(f"c{i}" for i in range(80))
    )


def _batch() -> Gst.Buffer:
    """A fresh batch; the previous ones are dropped and collected first, so no GC pass lands in a timing."""
    nvds.reset()
    gc.collect()
    buf = Gst.Buffer.new_allocate(None, 64, None)
    pixels = np.zeros((2, 2, 3), np.uint8)  # the writers never read pixels
    bm = nvds.make_batch([pixels] * FRAMES, pool_size=FRAMES * OBJECTS)
    for f in bm.frames:
        f.pipeline_width, f.pipeline_height = W, H
    nvds.register(buf, bm)
    return buf


def run_sm(dets: list[Detections]) -> float:
    writer = ServiceMakerWriter(sm, WriterOptions(unique_id=15))
    buf = _batch()
    t0 = time.perf_counter()
    wrapper = sm.Buffer(buf)
    bm = wrapper.batch_meta
    for fm, d in zip(bm.frame_items, dets):
        writer.write_frame(bm, fm, d, W, H)
    return time.perf_counter() - t0


def run_pyds(dets: list[Detections]) -> float:
    writer = PydsWriter(pyds, WriterOptions(unique_id=15))
    buf = _batch()
    t0 = time.perf_counter()
    bm = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
    node, i = bm.frame_meta_list, 0
    while node is not None:
        writer.write_frame(bm, pyds.NvDsFrameMeta.cast(node.data), dets[i], W, H)
        node, i = node.next, i + 1
    return time.perf_counter() - t0


def run_floor(dets: list[Detections]) -> float:
    """Acquire + the same assignments with constants: what the bindings alone cost per object."""
    osd = sm.osd
    buf = _batch()
    colour = osd.Color(1.0, 0.0, 0.0, 1.0)
    white, black = osd.Color(1, 1, 1, 1), osd.Color(0, 0, 0, 1)
    t0 = time.perf_counter()
    wrapper = sm.Buffer(buf)
    bm = wrapper.batch_meta
    for fm, _d in zip(bm.frame_items, dets):
        for _ in range(OBJECTS):
            om = bm.acquire_object_meta()
            om.class_id, om.confidence, om.unique_component_id, om.object_id = 1, 0.5, 15, 0xFFFF_FFFF_FFFF_FFFF
            r = om.rect_params
            r.left, r.top, r.width, r.height = 1.0, 2.0, 3.0, 4.0
            r.border_width, r.border_color, r.has_bg_color = 3, colour, 0
            om.label = "c1"
            t = om.text_params
            t.display_text, t.x_offset, t.y_offset = "c1", 1, 0
            f = t.font_params
            f.name, f.size, f.color = osd.FontFamily.Serif, 11, white
            t.set_bg_clr, t.text_bg_clr = 1, black
            fm.append(om)
    return time.perf_counter() - t0


def run_pyds_floor(dets: list[Detections]) -> float:
    """The pyds twin of :func:`run_floor`."""
    buf = _batch()
    t0 = time.perf_counter()
    bm = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
    node = bm.frame_meta_list
    pyds.nvds_acquire_meta_lock(bm)
    while node is not None:
        fm = pyds.NvDsFrameMeta.cast(node.data)
        for _ in range(OBJECTS):
            om = pyds.nvds_acquire_obj_meta_from_pool(bm)
            om.class_id, om.confidence, om.unique_component_id, om.object_id = 1, 0.5, 15, 0xFFFF_FFFF_FFFF_FFFF
            r = om.rect_params
            r.left, r.top, r.width, r.height = 1.0, 2.0, 3.0, 4.0
            r.border_width, r.has_bg_color = 3, 0
            r.border_color.set(1.0, 0.0, 0.0, 1.0)
            om.obj_label = "c1"
            t = om.text_params
            t.display_text, t.x_offset, t.y_offset = "c1", 1, 0
            f = t.font_params
            f.font_name, f.font_size = "Serif", 11
            f.font_color.set(1.0, 1.0, 1.0, 1.0)
            t.set_bg_clr = 1
            t.text_bg_clr.set(0.0, 0.0, 0.0, 1.0)
            pyds.nvds_add_obj_meta_to_frame(fm, om, None)
        node = node.next
    pyds.nvds_release_meta_lock(bm)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / f"ds-writer-{time.strftime('%Y-%m-%d')}.json")
    args = ap.parse_args()
    register()
    rng = np.random.default_rng(0)
    dets = [_detections(rng) for _ in range(FRAMES)]
    fns = {"pyservicemaker": run_sm, "floor": run_floor, "pyds": run_pyds, "pyds_floor": run_pyds_floor}
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(2):  # warm-up
        for fn in fns.values():
            fn(dets)
    gc.disable()  # the fakes allocate a lot of small objects; collections are forced between timings instead
    try:
        for _ in range(args.repeats):  # interleaved, so drift hits all alike
            for k, fn in fns.items():
                runs[k].append(fn(dets))
    finally:
        gc.enable()
    n = FRAMES * OBJECTS
    us = {k: statistics.median(v) / n * 1e6 for k, v in runs.items()}
    result = {
        "benchmark": "deepstream metadata writer vs field-assignment floor (contract fakes)",
        "command": command_line(),
        "date": utc_now(),
        "machine": machine_info(),
        "batch": {"frames": FRAMES, "objects_per_frame": OBJECTS},
        "repeats": args.repeats,
        "us_per_object_median": {k: round(v, 2) for k, v in us.items()},
        "ratio_to_floor": {
            "pyservicemaker": round(us["pyservicemaker"] / us["floor"], 3),
            "pyds": round(us["pyds"] / us["pyds_floor"], 3),
        },
        "us_per_object_min_max": {k: [round(min(v) / n * 1e6, 2), round(max(v) / n * 1e6, 2)] for k, v in runs.items()},
        "note": "fakes are pure Python: absolute figures bound the real bindings' cost from above",
    }
    write_json(args.out, result)
    for k, v in us.items():
        print(f"{k:15s} {v:7.2f} us/object")
    print(f"ratio to floor: {result['ratio_to_floor']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
