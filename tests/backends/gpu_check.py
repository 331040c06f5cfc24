"""The backends on a CUDA GPU, without GStreamer: detections against the TorchScript path, and forward timings.

    PYTHONPATH=src:tests python3 tests/backends/gpu_check.py --out DIR

Not collected by pytest (the GPU machine has no GStreamer): it drives ``pyinfer.engine.Engine`` directly on
frames of a synthetic scene. It exports the embedded model to ONNX (dynamic batch) and .pt2, builds a
``module:callable`` wrapper, and for each backend/precision on ``cuda`` compares the detections with the
TorchScript fp32 engine's (same count, same classes, IoU) and times ``model.forward`` on a batch of 8.
It also reads what the TensorRT backend would key its engine cache with on this GPU. Writes DIR/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _match(got: list, want: list) -> dict:
    from pyinfer.ops.boxes import box_iou

    same_count = all(len(a) == len(b) for a, b in zip(got, want))
    ious, same_classes = [], True
    for a, b in zip(got, want):
        if len(a) and len(b) and len(a) == len(b):
            iou = box_iou(a.xyxy, b.xyxy)
            best = iou.argmax(axis=1)
            ious.append(float(iou.max(axis=1).min()))
            same_classes &= a.class_id.tolist() == b.class_id[best].tolist()
    return {"boxes": sum(len(a) for a in got), "reference_boxes": sum(len(b) for b in want),
            "same_count": same_count, "same_classes": same_classes, "min_iou": min(ious) if ious else None}  # fmt: skip


def _time_forward(model, batch: int = 8, reps: int = 50) -> float:
    import torch

    x = torch.rand(batch, 3, 384, 384, device=model.device).to(model.dtype)
    for _ in range(5):
        model.forward(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        model.forward(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch
    from torch._export.converter import TS2EPConverter

    from pyinfer.backends import tensorrt as trt_backend
    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.scene.video import render_frames
    from pyinfer.zoo import get_model

    work = Path(tempfile.mkdtemp())
    embedded = get_model()
    ts = torch.jit.load(str(embedded.path))
    cfg = {"imgsz": [384, 384], "names": {"0": "circle", "1": "square", "2": "triangle"}, "task": "detect"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ts, (torch.zeros(1, 3, 384, 384),), str(work / "shapes.onnx"), dynamo=False,
                          input_names=["images"], output_names=["output0"],
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, opset_version=17)  # fmt: skip
    program = TS2EPConverter(ts, (torch.zeros(2, 3, 384, 384),)).convert()
    torch.export.save(program, str(work / "shapes.pt2"), extra_files={"config.txt": json.dumps(cfg)})
    (work / "gpu_userpkg.py").write_text(
        "import torch\nfrom pyinfer.zoo import get_model\n"
        "class Shapes(torch.nn.Module):\n    imgsz = 384\n    names = ['circle', 'square', 'triangle']\n"
        "    def __init__(self, device):\n        super().__init__()\n"
        "        self.net = torch.jit.load(str(get_model().path), map_location=device)\n"
        "    def forward(self, x):\n        return self.net(x)\n"
        "def build(device):\n    return Shapes(device)\n"
    )
    sys.path.insert(0, str(work))

    frames = torch.from_numpy(np.stack([img for img, _ in render_frames(4242, 1280, 720, 8)]))
    labels = str(embedded.labels_file)
    ref_engine = Engine.build(EngineConfig(model=str(embedded.path), device="cuda", labels_file=labels, max_batch=8))
    reference = ref_engine.infer(frames.cuda())
    cpu_reference = Engine.build(EngineConfig(model=str(embedded.path), device="cpu", labels_file=labels)).infer(frames)
    results: dict = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0),
        "cuda_vs_cpu_torchscript": _match(reference, cpu_reference),
        "runs": [],
    }
    cases = [
        ("torchscript", str(embedded.path), "fp32"),
        ("export", str(work / "shapes.pt2"), "fp32"),
        ("export", str(work / "shapes.pt2"), "fp16"),
        ("export", str(work / "shapes.pt2"), "bf16"),
        ("module", "gpu_userpkg:build", "fp32"),
        ("onnx", str(work / "shapes.onnx"), "fp32"),
    ]
    for backend, model, precision in cases:
        row: dict = {"backend": backend, "precision": precision}
        try:
            engine = Engine.build(EngineConfig(model=model, device="cuda", labels_file=labels, precision=precision,
                                               max_batch=8))  # fmt: skip
            got = engine.infer(frames.to(engine.model.device))
            row.update(device=str(engine.model.device), **_match(got, reference))
            if engine.model.device.type == "cuda":
                row["forward_ms_batch8"] = round(_time_forward(engine.model), 3)
        except Exception as exc:  # recorded: this script reports, it does not stop at the first failure
            row["error"] = f"{type(exc).__name__}: {exc}"
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    dev = torch.device("cuda")
    name, capability = trt_backend.TorchCuda().identity(dev)
    buf = trt_backend.aligned_empty((3, 5, 7), torch.float16, dev)
    results["tensorrt_seam"] = {
        "cache_name": trt_backend.cache_name(Path("yolo11n.onnx"), name, capability, "10.x", "fp16", 8),
        "stream_handle_is_int": isinstance(trt_backend.TorchCuda().stream(dev), int),
        "aligned_empty_ok": buf.data_ptr() % trt_backend.ALIGNMENT == 0 and buf.is_contiguous(),
    }
    print(json.dumps(results["tensorrt_seam"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
