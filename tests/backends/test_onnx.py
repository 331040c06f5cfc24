"""backend=onnx: ONNX Runtime through the real element, against the TorchScript path on the same frames."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import numpy as np
import pytest

from pyinfer._gi import Gst
from pyinfer.backends import load_model
from pyinfer.errors import ConfigError, DependencyError, ModelError

SRC = "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=64,height=48"


def test_dynamic_batch_onnx_gives_the_torchscript_detections(shapes_onnx, scene_frames, reference, detect, assert_same):
    got = detect(str(shapes_onnx), scene_frames)
    assert_same(got, reference)
    names = {got[f].label(i) for f in range(len(got)) for i in range(len(got[f]))}
    assert names <= {"circle", "square", "triangle"} and names  # from ultralytics-style metadata_props


def test_dynamic_batch_onnx_runs_batches_of_four(shapes_onnx, scene_frames, reference, detect, assert_same):
    assert_same(detect(str(shapes_onnx), scene_frames, "batch-size=4"), reference)


def test_fixed_batch_onnx_splits_and_pads_a_batch_of_three(
    shapes_onnx_batch2, scene_frames, reference, detect, assert_same
):
    """Batch 2 model, batch-size 3: runs as 2 + (1 padded to 2); four frames make a batch of 3 then one of 1."""
    model = load_model(str(shapes_onnx_batch2), "cpu")
    assert model.fixed_batch == 2
    assert_same(detect(str(shapes_onnx_batch2), scene_frames, "batch-size=3"), reference)


def test_fixed_batch_forward_returns_one_row_per_frame(shapes_onnx_batch2):
    import torch

    model = load_model(str(shapes_onnx_batch2), "cpu")
    x = torch.rand(5, 3, 384, 384)
    whole = model.forward(x)[0]
    assert whole.shape[0] == 5
    np.testing.assert_allclose(whole[4:].numpy(), model.forward(x[4:].repeat(2, 1, 1, 1))[0][:1].numpy(), atol=1e-5)


def test_metadata_props_give_input_size_names_and_task(shapes_onnx):
    model = load_model(str(shapes_onnx), "cpu")
    assert (model.backend, model.input_size, model.names) == ("onnx", (384, 384), ("circle", "square", "triangle"))
    assert model.metadata["task"] == "detect"
    assert model.output_names == ("output0",)


def test_known_outputs_come_back_exactly(fixed_onnx, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_onnx} ! appsink name=sink")
    assert res.ok, res.error
    dets = res.detections[0]
    assert dets.class_id.tolist() == [0, 2]
    assert [dets.label(0), dets.label(1)] == ["a", "c"]  # names from JSON metadata_props
    np.testing.assert_allclose(dets.confidence, [0.9, 0.7], atol=1e-6)


def test_precision_other_than_the_exported_one_is_refused(fixed_onnx, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_onnx} precision=fp16 ! appsink name=sink")
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "exported in fp32" in res.error.message


def test_an_fp16_export_takes_fp16_input(fixed_onnx, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "half",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT16, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT16, ["batch", 3, 8, 8])],
    )
    path = tmp_path / "half.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    import torch

    model = load_model(str(path), "cpu", precision="fp16")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float16)
    out = model.forward(x)[0]
    assert (model.dtype, model.precision, out.dtype) == (torch.float16, "fp16", torch.float32)  # outputs -> fp32
    assert torch.equal(out, x.float())


def test_a_model_with_two_inputs_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelError, match="2 inputs"):
        load_model(str(path), "cpu")


def test_a_corrupt_onnx_file_names_the_file(tmp_path, run_pipeline):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.OPEN_READ)
    assert f"model file {path} is not a loadable ONNX model" in res.error.message


def test_missing_onnxruntime_is_a_library_init_error(fixed_onnx, monkeypatch, run_pipeline):
    real_import = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_onnx} ! appsink name=sink")
    assert res.error.matches(Gst.LibraryError.quark(), Gst.LibraryError.INIT), res.error.message
    assert "pip install onnxruntime" in res.error.message and "pyinfer-gst[onnx]" in res.error.message


def test_cuda_without_the_cuda_provider_falls_back_to_the_cpu(fixed_onnx, caplog, monkeypatch):
    import onnxruntime

    from pyinfer.backends.onnx import load_onnx

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    model = load_onnx(Path(fixed_onnx), "cuda")
    assert model.device.type == "cpu"
    assert "no CUDAExecutionProvider" in caplog.text


def test_precision_names_are_checked():
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of fp32, fp16, bf16"):
        load_model("x.onnx", "cpu", precision="fp8")


def test_dependency_error_type_for_missing_runtime(monkeypatch):
    from pyinfer.backends import onnx as backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(DependencyError, match="onnxruntime"):
        backend.import_onnxruntime()
