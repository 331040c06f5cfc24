"""Choosing a backend: by extension, by the ``backend`` property, and the errors when neither fits."""

from __future__ import annotations

import pytest

from pyinfer._gi import Gst
from pyinfer.backends import BACKENDS, EXTENSIONS, load_model, resolve_backend
from pyinfer.backends.base import in_batches
from pyinfer.backends.metadata import input_size_from_config, names_from_config, parse_props
from pyinfer.errors import ConfigError

SRC = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48"


def test_an_unsupported_file_lists_every_supported_kind(tmp_path, run_pipeline):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    message = res.error.message
    assert "unsupported kind .tflite" in message
    for kind in (*EXTENSIONS, "module:callable", "backend"):
        assert kind in message, kind


@pytest.mark.parametrize(
    ("name", "backend"),
    [("m.torchscript", "torchscript"), ("m.TS", "torchscript"), ("m.pt", "torchscript"), ("m.pt2", "export"),
     ("m.onnx", "onnx"), ("m.engine", "tensorrt"), ("m.plan", "tensorrt"), ("pkg.mod:build", "module")],
)  # fmt: skip
def test_the_extension_picks_the_backend(name, backend):
    assert resolve_backend(name) == backend


def test_the_backend_property_overrides_the_extension(fixed_onnx, tmp_path, run_pipeline):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(fixed_onnx.read_bytes())
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={renamed} backend=onnx ! appsink name=sink")
    assert res.ok, res.error
    assert res.detections[0].class_id.tolist() == [0, 2]
    assert resolve_backend(str(fixed_onnx), "tensorrt") == "tensorrt"


def test_a_file_named_like_a_module_spec_is_still_a_file(tmp_path, monkeypatch, fixed_model):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights:v2").write_bytes(b"x")
    with pytest.raises(ConfigError, match="unsupported kind"):
        load_model("weights:v2", "cpu")


def test_backend_and_precision_values_are_checked():
    with pytest.raises(ConfigError, match="backend 'tf' is not one of " + ", ".join(BACKENDS)):
        resolve_backend("m.onnx", "tf")
    with pytest.raises(ConfigError, match="precision 'int8'"):
        load_model("m.onnx", "cpu", precision="int8")


def test_empty_model_engine_mentions_module_factories(run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "model-engine is empty" in res.error.message and "module:callable" in res.error.message


def test_element_properties_reach_the_engine_config():
    infer = Gst.ElementFactory.make("pyinfer")
    infer.set_property("backend", "onnx")
    infer.set_property("precision", "bf16")
    infer.set_property("allow-pickle", True)
    infer.set_property("batch-size", 6)
    cfg = infer._engine_config()
    assert (cfg.backend, cfg.precision, cfg.allow_pickle, cfg.max_batch) == ("onnx", "bf16", True, 6)


def test_in_batches_splits_pads_and_trims():
    import torch

    calls = []

    def run(x):
        calls.append(int(x.shape[0]))
        return [x.flatten(1).sum(1, keepdim=True)]

    x = torch.arange(5.0).view(5, 1)
    fixed = in_batches(run, x, 2, pad=True)[0]
    assert calls == [2, 2, 2] and fixed.flatten().tolist() == [0, 1, 2, 3, 4]
    calls.clear()
    assert in_batches(run, x, 4, pad=False)[0].shape == (5, 1) and calls == [4, 1]
    calls.clear()
    assert in_batches(run, x[:3], 4, pad=False)[0].shape == (3, 1) and calls == [3]


def test_onnx_style_metadata_strings_are_read_as_literals_only():
    meta = parse_props({"imgsz": "[480, 640]", "names": "{0: 'a', 1: 'b'}", "task": "detect",
                        "evil": "__import__('os').system('true')", "stride": "32"})  # fmt: skip
    assert input_size_from_config(meta) == (640, 480)
    assert names_from_config(meta) == ("a", "b")
    assert (meta["task"], meta["stride"]) == ("detect", 32)
    assert meta["evil"] == "__import__('os').system('true')"  # a string, never evaluated
