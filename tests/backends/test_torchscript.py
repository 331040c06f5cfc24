"""TorchScript archives and pickled ``.pt`` checkpoints: what loads, what is refused without allow-pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pyinfer._gi import Gst
from pyinfer.backends import load_model
from pyinfer.backends.torchscript import sniff
from pyinfer.errors import ConfigError, ModelError

SRC = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48"
MARKER = "pyinfer-test-pickle-ran"


class _Payload:
    """Unpickling this runs code (writes a marker file): what allow-pickle=false must never do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), MARKER))


@pytest.fixture
def checkpoint(tmp_path, user_package) -> Path:
    """torch.save of a whole module (the user package's Fixed, with metadata attributes): a pickle."""
    import importlib

    import torch

    module = importlib.import_module(f"{user_package}.detector").build()
    path = tmp_path / "model.pt"
    torch.save(module, str(path))
    return path


def test_a_pickled_checkpoint_is_refused_naming_allow_pickle(checkpoint, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={checkpoint} ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "pickled PyTorch checkpoint" in res.error.message
    assert "allow-pickle=true" in res.error.message


def test_a_malicious_pickle_runs_nothing_without_allow_pickle(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
    assert sniff(path) == "pickle"
    with pytest.raises(ConfigError, match="allow-pickle"):
        load_model(str(path), "cpu")
    assert not marker.exists()


def test_allow_pickle_loads_the_checkpoint_with_its_attributes(checkpoint, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={checkpoint} allow-pickle=true ! appsink name=sink")
    assert res.ok, res.error
    dets = res.detections[0]
    assert dets.class_id.tolist() == [0, 2]
    assert [dets.label(0), dets.label(1)] == ["a", "c"]


def test_an_ultralytics_style_checkpoint_dict_uses_its_ema_and_train_args(tmp_path, user_package):
    import importlib

    import torch

    model = importlib.import_module(f"{user_package}.detector").Fixed().half()  # ultralytics saves half weights
    model.names = {0: "a", 1: "b", 2: "c"}
    path = tmp_path / "yolo.pt"
    torch.save({"model": None, "ema": model, "train_args": {"imgsz": 320}}, str(path))
    loaded = load_model(str(path), "cpu", allow_pickle=True)
    assert (loaded.input_size, loaded.names, loaded.dtype) == ((320, 320), ("a", "b", "c"), torch.float32)


def test_a_state_dict_asks_for_a_factory(tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelError, match=r"state dict.*module:factory"):
        load_model(str(path), "cpu", allow_pickle=True)


def test_torchscript_archives_are_not_mistaken_for_pickles(fixed_model, embedded_model):
    assert sniff(Path(fixed_model)) == "torchscript"
    assert sniff(Path(embedded_model.path)) == "torchscript"


def test_bf16_casts_an_archive_with_parameters(fixed_model):
    import torch

    model = load_model(str(fixed_model), "cpu", precision="bf16")
    out = model.forward(torch.zeros(2, 3, 320, 320, dtype=torch.bfloat16))[0]
    assert (model.dtype, model.precision, out.dtype, tuple(out.shape)) == (
        torch.bfloat16, "bf16", torch.float32, (2, 7, 4),
    )  # fmt: skip


def test_a_frozen_archive_cannot_change_precision(embedded_model, run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={embedded_model.path} precision=fp16 ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "frozen TorchScript constants" in res.error.message


def test_a_torchscript_file_read_as_onnx_is_reported_by_the_onnx_backend(fixed_model):
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(str(fixed_model), "cpu", backend="onnx")
