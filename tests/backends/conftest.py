"""Models exported once per session in every format, the reference detections, and the fake TensorRT."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.ops.boxes import box_iou
from pyinfer.scene.video import render_frames
from support import FIXED_TABLE, FixedBoxes, push_frames, run

FAKES = Path(__file__).resolve().parent.parent / "fakes"
SHAPES_META = {"imgsz": "[384, 384]", "names": "{0: 'circle', 1: 'square', 2: 'triangle'}", "task": "detect"}
FIXED_CFG = {"imgsz": [320, 320], "names": {"0": "a", "1": "b", "2": "c"}, "task": "detect"}


def _detect(model: str, frames: list[np.ndarray], props: str = "") -> list:
    """Run ``appsrc ! pyinfer model-engine=<model> <props> ! appsink`` on ``frames``; the detections per frame."""
    desc = f"appsrc name=src ! pyinfer model-engine={model} device=cpu {props} ! appsink name=sink"
    pipeline = Gst.parse_launch(desc)
    res = run(pipeline, timeout_s=120, feed=lambda p: push_frames(p.get_by_name("src"), frames))
    assert res.ok, (res.error.message if res.error else res.message, res.debug[-2000:])
    assert len(res.detections) == len(frames)
    return res.detections


def _assert_same(got: list, want: list, min_iou: float = 0.99) -> None:
    """Frame by frame: the same number of boxes, the same classes, each box matching its twin at IoU >= min_iou."""
    assert sum(len(d) for d in want) > 0, "the reference found nothing: the comparison would prove nothing"
    for frame, (a, b) in enumerate(zip(got, want, strict=True)):
        assert len(a) == len(b), (frame, len(a), len(b))
        if not len(b):
            continue
        iou = box_iou(a.xyxy, b.xyxy)
        best = iou.argmax(axis=1)
        assert iou.max(axis=1).min() >= min_iou, (frame, iou.max(axis=1))
        assert a.class_id.tolist() == b.class_id[best].tolist(), frame
        assert sorted(best.tolist()) == list(range(len(b))), frame  # one-to-one


@pytest.fixture(scope="session")
def detect():
    """detect(model, frames, props="") -> detections per frame, through appsrc ! pyinfer ! appsink on the CPU."""
    return _detect


@pytest.fixture(scope="session")
def assert_same():
    """assert_same(got, want, min_iou=0.99): same boxes (IoU), same classes, frame by frame."""
    return _assert_same


@pytest.fixture(scope="session")
def scene_frames() -> list[np.ndarray]:
    """Four 640x480 RGB frames of a held-out synthetic scene (the embedded model finds objects in them)."""
    return [img for img, _ in render_frames(4242, 640, 480, 4)]


@pytest.fixture(scope="session")
def reference(embedded_model, scene_frames) -> list:
    """The TorchScript path's detections on ``scene_frames``: what every other backend must reproduce."""
    return _detect(str(embedded_model.path), scene_frames)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backends")


def export_onnx(module, path: Path, example, *, dynamic: bool, metadata: dict[str, str]) -> Path:
    """torch.onnx's TorchScript exporter (dynamo=False: the dynamo one needs onnxscript) plus metadata_props."""
    import warnings

    import onnx
    import torch

    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, input_names=["images"], output_names=["output0"],
            dynamic_axes=axes, opset_version=17,
        )  # fmt: skip
    model = onnx.load(str(path))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def shapes_onnx(embedded_model, models_dir) -> Path:
    """The embedded model as ONNX, dynamic batch, with ultralytics-style metadata (Python-literal strings)."""
    import torch

    module = torch.jit.load(str(embedded_model.path))
    return export_onnx(module, models_dir / "shapes.onnx", torch.zeros(1, 3, 384, 384), dynamic=True,
                       metadata=SHAPES_META)  # fmt: skip


@pytest.fixture(scope="session")
def shapes_onnx_batch2(embedded_model, models_dir) -> Path:
    """The embedded model as ONNX with a fixed batch of 2."""
    import torch

    module = torch.jit.load(str(embedded_model.path))
    return export_onnx(module, models_dir / "shapes-b2.onnx", torch.zeros(2, 3, 384, 384), dynamic=False,
                       metadata=SHAPES_META)  # fmt: skip


@pytest.fixture(scope="session")
def fixed_onnx(models_dir) -> Path:
    """FixedBoxes (known outputs) as ONNX, dynamic batch, 320x320."""
    import torch

    meta = {k: json.dumps(v) for k, v in FIXED_CFG.items()}
    return export_onnx(FixedBoxes.build(FIXED_TABLE), models_dir / "fixed.onnx", torch.zeros(1, 3, 320, 320),
                       dynamic=True, metadata=meta)  # fmt: skip


@pytest.fixture(scope="session")
def shapes_pt2(embedded_model, models_dir) -> Path:
    """The embedded model as a torch.export program (converted from TorchScript), with config.txt metadata."""
    import torch
    from torch._export.converter import TS2EPConverter  # private, test-only: TorchScript -> ExportedProgram

    module = torch.jit.load(str(embedded_model.path))
    program = TS2EPConverter(module, (torch.zeros(2, 3, 384, 384),)).convert()
    path = models_dir / "shapes.pt2"
    cfg = {"imgsz": [384, 384], "names": {"0": "circle", "1": "square", "2": "triangle"}}
    torch.export.save(program, str(path), extra_files={"config.txt": json.dumps(cfg)})
    return path


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    """The fake ``tensorrt`` package as ``import tensorrt``, the fake CUDA device, a private engine cache dir."""
    spec = importlib.util.spec_from_file_location(
        "tensorrt", FAKES / "tensorrt" / "__init__.py", submodule_search_locations=[str(FAKES / "tensorrt")]
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    spec.loader.exec_module(module)
    module._fake.reset()
    from pyinfer.backends import tensorrt as backend

    monkeypatch.setattr(backend, "CUDA", module._fake.FakeCuda())
    monkeypatch.setenv("PYINFER_CACHE_DIR", str(tmp_path / "cache"))
    yield module
    sys.modules.pop("tensorrt._fake", None)


USER_PACKAGE = '''
"""A user's detector package, as pyinfer would find it on PYTHONPATH."""
import torch

from pyinfer.zoo import get_model
from support import FIXED_TABLE

NOT_CALLABLE = 42


class Fixed(torch.nn.Module):
    """Known outputs: FixedBoxes as a plain, picklable nn.Module."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.from_numpy(FIXED_TABLE))

    def forward(self, x):
        zero = x[:, :1, :1, :1].flatten(1).sum(1).view(-1, 1, 1) * 0
        return self.table.unsqueeze(0) + zero


def build():
    model = Fixed()
    model.imgsz, model.names, model.decoder = 320, ["a", "b", "c"], "yolov8"
    return model


class Shapes(torch.nn.Module):
    """The embedded detector behind two hooks that undo each other's changes: wrong unless both run."""

    imgsz = (384, 384)
    names = {0: "circle", 1: "square", 2: "triangle"}

    def __init__(self, device):
        super().__init__()
        self.net = torch.jit.load(str(get_model().path), map_location=device)  # frozen constants cannot .to()

    def preprocess(self, x):
        return x * 255  # the hook hands the net 0..255 ...

    def forward(self, x):
        return {"rows": self.net(x / 255).transpose(1, 2)}  # ... which it scales back; rows come out [B, N, 4+nc]

    def postprocess(self, out):
        return out["rows"].transpose(1, 2)  # back to [B, 4+nc, N] for the yolov8 decoder


def build_shapes(device="cpu"):
    build_shapes.devices.append(device)
    return Shapes(device)


build_shapes.devices = []


def plain():
    return Fixed()


plain.imgsz = [320, 320]  # protocol attributes on the factory itself
plain.names = ["p", "q", "r"]


def returns_int():
    return 7


def raises():
    raise RuntimeError("boom")
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> str:
    """A package ``pyinfer_userpkg`` on sys.path (module ``detector``, plus ``other``, ``broken``, ``crashing``)."""
    pkg = tmp_path / "site" / "pyinfer_userpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "detector.py").write_text(USER_PACKAGE)
    (pkg / "other.py").write_text("raise AssertionError('pyinfer must not import modules it was not asked for')\n")
    (pkg / "broken.py").write_text("import pyinfer_not_installed_dependency\n")
    (pkg / "crashing.py").write_text("raise ValueError('bad config at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield "pyinfer_userpkg"
    for name in [n for n in sys.modules if n.startswith("pyinfer_userpkg")]:
        del sys.modules[name]
