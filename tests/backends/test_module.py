"""backend=module: ``model-engine=package.module:callable`` builds an nn.Module; its protocol and its errors."""

from __future__ import annotations

import sys

import pytest

from pyinfer._gi import Gst
from pyinfer.backends import load_model
from pyinfer.backends.module import is_module_spec
from pyinfer.errors import ConfigError

SRC = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48"


def test_a_factory_with_hooks_gives_the_torchscript_detections(
    user_package, scene_frames, reference, detect, assert_same
):
    got = detect(f"{user_package}.detector:build_shapes", scene_frames, "batch-size=2")
    assert_same(got, reference)
    assert sys.modules[f"{user_package}.detector"].build_shapes.devices == ["cpu"]  # a device parameter gets it


def test_the_module_protocol_gives_size_names_and_decoder(user_package, run_pipeline):
    model = load_model(f"{user_package}.detector:build", "cpu")
    assert (model.backend, model.input_size, model.names, model.decoder) == ("module", (320, 320), ("a", "b", "c"),
                                                                             "yolov8")  # fmt: skip
    assert model.module is not None
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={user_package}.detector:build ! appsink name=sink")
    assert res.ok, res.error
    assert res.detections[0].class_id.tolist() == [0, 2]


def test_protocol_attributes_may_sit_on_the_factory(user_package):
    model = load_model(f"{user_package}.detector:plain", "cpu", backend="module")
    assert (model.input_size, model.names) == ((320, 320), ("p", "q", "r"))


def test_only_the_named_module_is_imported(user_package):
    load_model(f"{user_package}.detector:build", "cpu")
    assert f"{user_package}.detector" in sys.modules
    assert f"{user_package}.other" not in sys.modules  # its import would have raised anyway


def test_precision_casts_the_built_module(user_package):
    import torch

    model = load_model(f"{user_package}.detector:build", "cpu", precision="bf16")
    assert model.dtype == torch.bfloat16
    assert model.forward(torch.zeros(1, 3, 320, 320, dtype=torch.bfloat16))[0].dtype == torch.float32


def test_a_factory_wrapping_a_frozen_archive_cannot_change_precision(user_package):
    with pytest.raises(ConfigError, match="frozen TorchScript constants"):
        load_model(f"{user_package}.detector:build_shapes", "cpu", precision="bf16")


@pytest.mark.parametrize(
    ("spec", "domain", "code", "fragment"),
    [
        ("pyinfer_no_such_pkg.det:build", Gst.ResourceError, Gst.ResourceError.NOT_FOUND,
         "no module named 'pyinfer_no_such_pkg.det'"),
        ("{pkg}.detector:nope", Gst.ResourceError, Gst.ResourceError.NOT_FOUND, "has no attribute 'nope'"),
        ("{pkg}.detector:NOT_CALLABLE", Gst.ResourceError, Gst.ResourceError.SETTINGS, "not a callable factory"),
        ("{pkg}.detector:returns_int", Gst.ResourceError, Gst.ResourceError.OPEN_READ,
         "returned a int, not a torch.nn.Module"),
        ("{pkg}.detector:raises", Gst.ResourceError, Gst.ResourceError.OPEN_READ,
         "the factory raised RuntimeError: boom"),
        ("{pkg}.broken:build", Gst.LibraryError, Gst.LibraryError.INIT, "pyinfer_not_installed_dependency"),
        ("{pkg}.crashing:build", Gst.ResourceError, Gst.ResourceError.OPEN_READ,
         "raised ValueError: bad config at import"),
    ],
)  # fmt: skip
def test_a_bad_factory_is_a_clear_error_on_the_bus(user_package, run_pipeline, spec, domain, code, fragment):
    spec = spec.format(pkg=user_package)
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={spec} ! appsink name=sink")
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(domain.quark(), code), (res.error.domain, res.error.code, res.error.message)
    assert spec in res.error.message and fragment in res.error.message, res.error.message
    assert res.pts == []


def test_backend_module_with_a_path_is_a_settings_error(run_pipeline, fixed_model):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_model} backend=module ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "not a module:callable spec" in res.error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a.b:c", True), ("pkg:build", True), ("a.b:C.make", True), ("/tmp/x.onnx", False), ("a:b:c", False),
     ("C:\\model.onnx", False), ("a.b:", False), (":c", False), ("1a:b", False), ("/x/det.py:build", True),
     ("det.py:a.b", True), ("/x/det.py:", False), ("/x/det.py", False), ("/x/det.pyc:build", False)],
)  # fmt: skip
def test_module_specs_are_dotted_identifiers_and_one_colon(text, expected):
    assert is_module_spec(text) is expected


FILE_MODEL = """
import torch

from support import FIXED_TABLE


class Fixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.from_numpy(FIXED_TABLE))

    def forward(self, x):
        return self.table.unsqueeze(0) + x[:, :1, :1, :1].flatten(1).sum(1).view(-1, 1, 1) * 0


def build(device="cpu"):
    build.devices.append(device)
    model = Fixed()
    model.imgsz, model.names = 320, ["a", "b", "c"]
    return model


build.devices = []
"""


def test_a_python_file_path_names_the_factory_as_a_module_does(tmp_path, run_pipeline):
    path = tmp_path / "my detector.d" / "detector.py"  # any file name, any folder: not on sys.path
    path.parent.mkdir()
    path.write_text(FILE_MODEL)
    model = load_model(f"{path}:build", "cpu")
    assert (model.backend, model.input_size, model.names) == ("module", (320, 320), ("a", "b", "c"))
    res = run_pipeline(f'{SRC} ! pyinfer model-engine="{path}:build" ! appsink name=sink')
    assert res.ok, res.error
    assert [d.class_id.tolist() for d in res.detections] == [[0, 2], [0, 2]]


def test_a_python_file_is_run_again_at_each_load_under_a_name_of_its_own(tmp_path):
    one, two = tmp_path / "a" / "detector.py", tmp_path / "b" / "detector.py"
    for path, names in ((one, "['a', 'b', 'c']"), (two, "['x', 'y', 'z']")):
        path.parent.mkdir()
        path.write_text(FILE_MODEL.replace('["a", "b", "c"]', names))
    assert load_model(f"{one}:build", "cpu").names == ("a", "b", "c")
    assert load_model(f"{two}:build", "cpu").names == ("x", "y", "z")  # the same stem does not clash
    one.write_text(FILE_MODEL.replace('["a", "b", "c"]', "['edited', 'b', 'c']"))
    assert load_model(f"{one}:build", "cpu").names == ("edited", "b", "c")  # a hot-swap reads the file anew


@pytest.mark.parametrize(
    ("body", "attr", "domain", "code", "fragment"),
    [
        (None, "build", Gst.ResourceError, Gst.ResourceError.NOT_FOUND, "does not exist"),
        ("x = 1\n", "build", Gst.ResourceError, Gst.ResourceError.NOT_FOUND, "has no attribute 'build'"),
        ("build = 1\n", "build", Gst.ResourceError, Gst.ResourceError.SETTINGS, "not a callable factory"),
        ("import pyinfer_not_installed_dependency\n", "build", Gst.LibraryError, Gst.LibraryError.INIT,
         "pyinfer_not_installed_dependency"),
        ("raise ValueError('bad config at import')\n", "build", Gst.ResourceError, Gst.ResourceError.OPEN_READ,
         "raised ValueError: bad config at import"),
    ],
)  # fmt: skip
def test_a_bad_model_file_is_a_clear_error_on_the_bus(tmp_path, run_pipeline, body, attr, domain, code, fragment):
    path = tmp_path / "det.py"
    if body is not None:
        path.write_text(body)
    spec = f"{path}:{attr}"
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={spec} ! appsink name=sink")
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(domain.quark(), code), (res.error.domain, res.error.code, res.error.message)
    assert spec in res.error.message and fragment in res.error.message, res.error.message
