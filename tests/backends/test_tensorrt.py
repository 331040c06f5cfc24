"""backend=tensorrt against the contract fake (tests/fakes/tensorrt): engine cache, build flags, binding.

TensorRT cannot run on this machine; the fake enforces its documented API and runs the ONNX model the
"engine" was built from, so detections can still be compared with the TorchScript path.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pyinfer._gi import GLib, Gst
from pyinfer.backends import load_model
from pyinfer.backends import tensorrt as backend
from pyinfer.errors import ConfigError, DependencyError, ModelError

SRC = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48"


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def test_an_onnx_model_builds_an_engine_once_and_later_starts_load_it(fake_trt, shapes_onnx, tmp_path):
    onnx = _copy(shapes_onnx, tmp_path / "m")
    first = load_model(str(onnx), "cpu", backend="tensorrt", precision="fp16", max_batch=4)
    second = load_model(str(onnx), "cpu", backend="tensorrt", precision="fp16", max_batch=4)
    assert fake_trt._fake.stats["builds"] == 1
    assert fake_trt._fake.stats["deserializations"] == 2
    expected = onnx.parent / "shapes.onnx.fake-gpu-9000-sm89.trt10.7.0.fp16.b4.engine"
    assert first.path == second.path == str(expected)
    assert expected.is_file() and Path(f"{expected}.json").is_file()
    assert fake_trt._fake.last_build["flags"] == ["FP16"]
    assert fake_trt._fake.last_build["inputs"][0]["profile"] == [[1, 3, 384, 384], [4, 3, 384, 384], [4, 3, 384, 384]]
    assert first.names == ("circle", "square", "triangle")  # ONNX metadata carried in <engine>.json
    assert (first.input_size, first.precision, first.fixed_batch) == ((384, 384), "fp16", None)
    assert fake_trt._fake.violations == []


@pytest.mark.parametrize(("precision", "batch", "flags"), [("fp32", 4, []), ("bf16", 4, ["BF16"]), ("fp16", 8, None)])
def test_each_precision_and_batch_size_has_its_own_engine(fake_trt, fixed_onnx, tmp_path, precision, batch, flags):
    onnx = _copy(fixed_onnx, tmp_path / "m")
    load_model(str(onnx), "cpu", backend="tensorrt", precision="fp16", max_batch=4)
    model = load_model(str(onnx), "cpu", backend="tensorrt", precision=precision, max_batch=batch)
    assert model.path.endswith(f".{precision}.b{batch}.engine")
    assert fake_trt._fake.stats["builds"] == 2
    if flags is not None:
        assert fake_trt._fake.last_build["flags"] == flags
    assert len(list(onnx.parent.glob("*.engine"))) == 2


def test_an_onnx_file_newer_than_its_engine_is_rebuilt(fake_trt, fixed_onnx, tmp_path):
    onnx = _copy(fixed_onnx, tmp_path / "m")
    engine = Path(load_model(str(onnx), "cpu", backend="tensorrt").path)
    later = engine.stat().st_mtime + 10
    os.utime(onnx, (later, later))
    load_model(str(onnx), "cpu", backend="tensorrt")
    assert fake_trt._fake.stats["builds"] == 2


def test_an_unwritable_model_folder_caches_in_the_cache_dir(fake_trt, fixed_onnx, tmp_path, monkeypatch):
    onnx = _copy(fixed_onnx, tmp_path / "readonly")
    monkeypatch.setattr(backend, "_writable", lambda folder: folder != onnx.parent)
    model = load_model(str(onnx), "cpu", backend="tensorrt")
    path = Path(model.path)
    assert path.parent == tmp_path / "cache" / "engines"
    assert path.name.endswith("fixed.onnx.fake-gpu-9000-sm89.trt10.7.0.fp32.b1.engine")
    assert list(onnx.parent.glob("*.engine")) == []
    load_model(str(onnx), "cpu", backend="tensorrt")
    assert fake_trt._fake.stats["builds"] == 1


def test_two_loads_at_once_build_the_engine_once(fake_trt, fixed_onnx, tmp_path, monkeypatch):
    onnx = _copy(fixed_onnx, tmp_path / "m")
    real_build = backend.build_engine

    def slow_build(*args, **kwargs):
        time.sleep(0.5)  # long enough for the second loader to reach the lock
        return real_build(*args, **kwargs)

    monkeypatch.setattr(backend, "build_engine", slow_build)
    paths, errors = [], []

    def load() -> None:
        try:
            paths.append(load_model(str(onnx), "cpu", backend="tensorrt").path)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(paths)) == 1 and len(paths) == 2
    assert fake_trt._fake.stats["builds"] == 1


def test_engine_detections_equal_the_torchscript_ones(
    fake_trt, shapes_onnx, tmp_path, scene_frames, reference, detect, assert_same
):
    onnx = _copy(shapes_onnx, tmp_path / "m")
    assert_same(detect(str(onnx), scene_frames, "backend=tensorrt batch-size=3"), reference)
    assert fake_trt._fake.stats["builds"] == 1
    assert fake_trt._fake.stats["executions"] >= 2  # a batch of 3, then the last frame
    engine = next(onnx.parent.glob("*.b3.engine"))
    assert_same(detect(str(engine), scene_frames, "batch-size=2"), reference)  # .engine: tensorrt by extension
    assert fake_trt._fake.stats["builds"] == 1
    assert fake_trt._fake.violations == []


def test_a_fixed_batch_engine_pads_the_last_chunk(fake_trt, shapes_onnx_batch2, tmp_path, scene_frames, reference,
                                                 detect, assert_same):  # fmt: skip
    onnx = _copy(shapes_onnx_batch2, tmp_path / "m")
    model = load_model(str(onnx), "cpu", backend="tensorrt", max_batch=3)
    assert model.fixed_batch == 2
    assert_same(detect(str(onnx), scene_frames, "backend=tensorrt batch-size=3"), reference)
    assert fake_trt._fake.violations == []


def test_outputs_are_bound_to_aligned_torch_buffers(fake_trt, fixed_onnx, tmp_path):
    import torch

    model = load_model(str(_copy(fixed_onnx, tmp_path / "m")), "cpu", backend="tensorrt", max_batch=4)
    x = torch.zeros(1 + 3 * 320 * 320 * 4)[1:].view(4, 3, 320, 320)  # misaligned on purpose: 4 bytes in
    assert x.data_ptr() % backend.ALIGNMENT
    out = model.forward(x)[0]
    assert out.shape == (4, 7, 4) and out.dtype == torch.float32
    assert torch.allclose(out[3, 4], torch.tensor([0.9, 0.8, 0.05, 0.1]))
    assert fake_trt._fake.violations == []


def test_batches_over_the_profile_maximum_run_in_chunks(fake_trt, fixed_onnx, tmp_path):
    import torch

    model = load_model(str(_copy(fixed_onnx, tmp_path / "m")), "cpu", backend="tensorrt", max_batch=2)
    assert model.forward(torch.zeros(5, 3, 320, 320))[0].shape[0] == 5
    assert fake_trt._fake.stats["executions"] == 3  # 2 + 2 + 1: the profile's maximum is 2
    assert fake_trt._fake.violations == []


def test_an_ultralytics_engine_header_gives_names_and_size(fake_trt, fixed_onnx, tmp_path):
    import json

    built = Path(load_model(str(_copy(fixed_onnx, tmp_path / "m")), "cpu", backend="tensorrt").path)
    meta = json.dumps({"imgsz": [320, 320], "names": {"0": "x", "1": "y", "2": "z"}, "task": "detect"}).encode()
    engine = tmp_path / "yolo.engine"
    engine.write_bytes(len(meta).to_bytes(4, "little") + meta + built.read_bytes())
    model = load_model(str(engine), "cpu")
    assert (model.backend, model.names, model.input_size) == ("tensorrt", ("x", "y", "z"), (320, 320))


def test_an_engine_from_another_tensorrt_version_is_refused_by_name(fake_trt, fixed_onnx, tmp_path, run_pipeline):
    built = Path(load_model(str(_copy(fixed_onnx, tmp_path / "m")), "cpu", backend="tensorrt").path)
    engine = tmp_path / "old.plan"
    engine.write_bytes(built.read_bytes().replace(b'"version": "10.7.0"', b'"version": "10.0.1"'))
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={engine} ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.OPEN_READ)
    assert f"{engine} is not a TensorRT engine that TensorRT 10.7.0 can load" in res.error.message


def test_an_onnx_file_tensorrt_cannot_parse_is_a_model_error(fake_trt, tmp_path):
    onnx = tmp_path / "bad.onnx"
    onnx.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="TensorRT could not parse"):
        load_model(str(onnx), "cpu", backend="tensorrt")
    assert fake_trt._fake.stats["builds"] == 0


def test_a_cpu_device_is_refused_with_the_real_cuda_seam(fake_trt, fixed_onnx, monkeypatch, run_pipeline):
    monkeypatch.setattr(backend, "CUDA", backend.TorchCuda())
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_onnx} backend=tensorrt device=cpu ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "backend tensorrt runs on CUDA devices only" in res.error.message


def test_without_tensorrt_the_error_names_the_package(fixed_onnx, monkeypatch, run_pipeline):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_onnx} backend=tensorrt ! appsink name=sink")
    assert res.error.matches(Gst.LibraryError.quark(), Gst.LibraryError.INIT)
    assert "needs the 'tensorrt' package" in res.error.message


def test_tensorrt_older_than_10_is_refused(fake_trt, monkeypatch):
    monkeypatch.setattr(fake_trt, "__version__", "8.6.1")
    with pytest.raises(DependencyError, match=r"TensorRT >= 10; found 8\.6\.1"):
        backend.import_tensorrt()


def test_cache_names_carry_everything_an_engine_is_tied_to():
    name = backend.cache_name(Path("/m/yolo11n.onnx"), "NVIDIA H200", (9, 0), "10.3.0", "fp16", 8)
    assert name == "yolo11n.onnx.nvidia-h200-sm90.trt10.3.0.fp16.b8.engine"


def test_the_fake_enforces_the_documented_call_order(fake_trt, fixed_onnx, tmp_path):
    """The fake is only useful if it rejects what real TensorRT rejects: check it does."""
    engine_path = Path(load_model(str(_copy(fixed_onnx, tmp_path / "m")), "cpu", backend="tensorrt").path)
    trt = fake_trt
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
    ctx = engine.create_execution_context()
    assert ctx.get_tensor_shape("output0") == (-1, 7, 4)  # the batch is unknown until the input shape is set
    assert ctx.execute_async_v3(0) is False  # no shapes, no addresses
    assert ctx.set_input_shape("images", (9, 3, 320, 320)) is False  # outside the profile (max 1)
    assert ctx.set_tensor_address("images", 64) is False  # not 256-byte aligned
    assert len(trt._fake.violations) == 3
    assert trt.Runtime(trt.Logger()).deserialize_cuda_engine(b"junk") is None


def test_unknown_backend_is_refused(fixed_onnx):
    # The element's backend is a GEnum: GObject refuses the value when it is set; the library names the choices.
    with pytest.raises(GLib.Error, match='could not set property "backend"'):
        Gst.parse_launch(f"{SRC} ! pyinfer model-engine={fixed_onnx} backend=openvino ! appsink name=sink")
    with pytest.raises(ConfigError, match="backend 'openvino' is not one of auto, torchscript, export, module, onnx"):
        load_model(str(fixed_onnx), device="cpu", backend="openvino")


def test_cuda_seam_refuses_non_cuda_devices():
    import torch

    with pytest.raises(ConfigError, match="device is cpu"):
        backend.TorchCuda().check(torch.device("cpu"))


def test_an_onnx_model_with_dynamic_height_and_width_asks_for_a_fixed_size(fake_trt, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "dynamic-hw",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
    )
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="dynamic size besides the batch"):
        load_model(str(path), "cpu", backend="tensorrt")
    assert fake_trt._fake.stats["builds"] == 0
