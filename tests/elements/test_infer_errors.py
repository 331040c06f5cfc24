"""Bad input to pyinfer: each case is a bus ERROR with a GStreamer domain/code and a message naming the problem."""

from __future__ import annotations

import pytest

from pyinfer._gi import GLib, Gst

SRC = "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=64,height=48"


def _expect_error(res, domain, code, *fragments: str) -> None:
    assert res.message == Gst.MessageType.ERROR, f"expected an ERROR, got {res.message}"
    assert res.error.matches(domain.quark(), code), (res.error.domain, res.error.code, res.error.message)
    for fragment in fragments:
        assert fragment in res.error.message, res.error.message
    assert res.pts == []  # nothing went downstream from a failed start


def test_empty_model_engine(run_pipeline):
    res = run_pipeline(f"{SRC} ! pyinfer ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "model-engine is empty")


def test_missing_model_file(run_pipeline, tmp_path):
    path = tmp_path / "nope.torchscript"
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.NOT_FOUND, str(path), "does not exist")


def test_model_path_that_is_a_directory(run_pipeline, tmp_path):
    path = tmp_path / "dir.torchscript"
    path.mkdir()
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.OPEN_READ, "not a regular file")


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04 truncated zip", b"not a model at all\n"])
def test_corrupt_model_file(run_pipeline, tmp_path, content):
    path = tmp_path / "corrupt.torchscript"
    path.write_bytes(content)
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.OPEN_READ, str(path), "not a loadable TorchScript")


def test_unsupported_model_kind_lists_the_supported_ones(run_pipeline, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "unsupported kind .tflite", ".torchscript")


def test_outputs_that_do_not_fit_the_decoder(run_pipeline, tmp_path):
    import torch

    from support import save_torchscript

    class Flat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))  # [B, 3]: not [B, 4+nc, N]

    path = save_torchscript(Flat(), tmp_path / "flat.torchscript", {"imgsz": [32, 32]}, torch.zeros(1, 3, 32, 32))
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} decoder=yolov8 ! appsink name=sink")
    _expect_error(res, Gst.StreamError, Gst.StreamError.DECODE, "[B, 4+nc, N]", "got [1, 3]")


def test_model_without_input_size_asks_for_it(run_pipeline, tmp_path, fixed_model):
    import torch

    from support import FIXED_TABLE, FixedBoxes, save_torchscript

    path = save_torchscript(
        FixedBoxes.build(FIXED_TABLE), tmp_path / "nocfg.torchscript", None, torch.zeros(1, 3, 320, 320)
    )
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "input-width and input-height")
    ok = run_pipeline(f"{SRC} ! pyinfer model-engine={path} input-width=320 input-height=320 ! appsink name=sink")
    assert ok.ok, ok.error


def test_labels_file_with_fewer_names_than_classes(run_pipeline, fixed_model, tmp_path):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_model} labels-file={labels} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "has 2 names", "3 classes")


def test_missing_labels_file(run_pipeline, fixed_model, tmp_path):
    labels = tmp_path / "missing.txt"
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_model} labels-file={labels} ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.NOT_FOUND, str(labels))


def test_cuda_requested_without_cuda(run_pipeline, fixed_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error case cannot happen (hardware-dependent)")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_model} device=cuda ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "CUDA is not available")


def test_unknown_device_string(run_pipeline, fixed_model):
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_model} device=tpu ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "'tpu'", "cuda:N")


def test_caps_it_cannot_handle_are_refused_at_link_time(fixed_model):
    with pytest.raises(GLib.Error, match="could not link"):
        Gst.parse_launch(f"videotestsrc ! video/x-raw,format=GRAY8 ! pyinfer model-engine={fixed_model} ! fakesink")


def test_caps_it_cannot_handle_fail_negotiation_at_run_time(run_pipeline, fixed_model):
    res = run_pipeline(
        "appsrc name=src is-live=false format=time caps=video/x-raw,format=GRAY8,width=64,height=48,framerate=30/1 "
        f"! pyinfer model-engine={fixed_model} ! appsink name=sink",
        feed=lambda p: _push_blank(p.get_by_name("src"), 64 * 48),
    )
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.CoreError.quark(), Gst.CoreError.NEGOTIATION), res.error
    assert "GRAY8" in res.error.message and "NV12" in res.error.message  # the refused format and what it reads
    assert res.pts == []


def _push_blank(src: Gst.Element, size: int) -> None:
    src.emit("push-buffer", Gst.Buffer.new_wrapped(bytes(size)))
    src.emit("end-of-stream")


@pytest.mark.parametrize(
    ("prop", "bad", "default"),
    [
        ("confidence-threshold", 1.5, 0.25),
        ("nms-iou-threshold", -0.1, 0.45),
        ("batch-size", 0, 1),
        ("max-detections", 0, 300),
        ("interval", -1, 0),
    ],
)
def test_out_of_range_property_is_refused(prop, bad, default):
    infer = Gst.ElementFactory.make("pyinfer")
    with pytest.warns(Warning, match=f"out of range for property '{prop}'"):
        infer.set_property(prop, bad)
    assert infer.get_property(prop) == pytest.approx(default)


def test_gst_launch_property_out_of_range_is_refused(tmp_path, fixed_model):
    import os
    import subprocess

    env = _plugin_env()
    out = subprocess.run(
        [
            "gst-launch-1.0",
            "-q",
            "videotestsrc",
            "num-buffers=2",
            "!",
            "video/x-raw,format=RGB,width=64,height=48",
            "!",
            "pyinfer",
            f"model-engine={fixed_model}",
            "confidence-threshold=3",
            "!",
            "fakesink",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "confidence-threshold" in (out.stderr + out.stdout) or out.returncode != 0
    assert os.path.exists(fixed_model)


def _plugin_env() -> dict[str, str]:
    import os

    from pyinfer.cli import plugin_path, python_path

    env = dict(os.environ)
    env["GST_PLUGIN_PATH"] = str(plugin_path())
    env["PYTHONPATH"] = ":".join(python_path())
    return env


def _one_sentence_without_traceback(res) -> None:
    assert "\n" not in res.error.message, res.error.message
    assert "Traceback" not in res.error.message and "Traceback" not in res.debug, res.debug


def test_input_size_off_the_model_stride_is_one_sentence_before_the_model_runs(run_pipeline, embedded_model):
    res = run_pipeline(
        f"{SRC} ! pyinfer model-engine={embedded_model.path} input-width=330 input-height=384 ! appsink name=sink"
    )
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS)
    assert res.error.message == "input-width 330 is not a multiple of the model's stride 32: use 320 or 352"
    _one_sentence_without_traceback(res)


def test_both_sides_off_the_stride_name_both(run_pipeline, embedded_model):
    res = run_pipeline(
        f"{SRC} ! pyinfer model-engine={embedded_model.path} input-width=330 input-height=20 ! appsink name=sink"
    )
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS)
    assert res.error.message == (
        "input-width 330 and input-height 20 are not multiples of the model's stride 32: "
        "use 320 or 352 for the width and 32 for the height"
    )


def _pyramid():
    import torch
    import torch.nn.functional as F

    class Pyramid(torch.nn.Module):
        """Joins a stride-16 and an upsampled stride-32 level, as detectors do: sizes must be multiples of 32."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p4 = F.avg_pool2d(x, 16, ceil_mode=True)
            p5 = F.interpolate(F.avg_pool2d(x, 32, ceil_mode=True), scale_factor=2.0, mode="nearest")
            return torch.cat([p4, p5], 1).flatten(2)

    return Pyramid()


def test_size_a_model_without_stride_metadata_cannot_take_is_translated(run_pipeline, tmp_path):
    import torch

    from support import save_torchscript

    path = save_torchscript(_pyramid(), tmp_path / "pyramid.torchscript", None, torch.zeros(1, 3, 320, 320))
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} input-width=330 input-height=320 ! appsink name=sink")
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS)
    assert res.error.message == "input-width 330 is not a multiple of the model's stride 32: use 320 or 352"
    _one_sentence_without_traceback(res)
    assert "carries no stride" in res.debug and "Sizes of tensors must match" in res.debug  # the runtime's words


def test_model_traced_at_one_size_names_that_size(run_pipeline, embedded_model):
    res = run_pipeline(
        f"{SRC} ! pyinfer model-engine={embedded_model.path} input-width=320 input-height=320 ! appsink name=sink"
    )
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS, "runs only at its own input size 384x384")
    _one_sentence_without_traceback(res)


def test_model_failing_for_another_reason_gives_its_last_line_and_keeps_the_traceback(run_pipeline, tmp_path):
    import torch

    from support import save_torchscript

    class Picky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2) @ torch.ones(320 * 320, 1)  # any other size fails, and so does every probe

    path = save_torchscript(Picky(), tmp_path / "picky.torchscript", None, torch.zeros(1, 3, 320, 320))
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} input-width=64 input-height=64 ! appsink name=sink")
    _expect_error(res, Gst.StreamError, Gst.StreamError.DECODE, "failed on a 1x3x64x64 input", "RuntimeError")
    assert "\n" not in res.error.message and "Traceback of TorchScript" not in res.error.message
    assert "Traceback (most recent call last)" in res.debug  # a model failing: the traceback stays, in debug


@pytest.mark.parametrize("setting", ["device=tpu", "labels-file={labels}", "decoder=custom"])
def test_a_user_error_has_a_short_debug_text_without_traceback(run_pipeline, fixed_model, tmp_path, setting):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    desc = f"{SRC} ! pyinfer model-engine={fixed_model} {setting.format(labels=labels)} ! appsink name=sink"
    res = run_pipeline(desc)
    _expect_error(res, Gst.ResourceError, Gst.ResourceError.SETTINGS)
    _one_sentence_without_traceback(res)
    assert len(res.debug.splitlines()) <= 2, res.debug


def test_an_internal_failure_keeps_its_traceback(run_pipeline, fixed_model, tmp_path):
    hooks = tmp_path / "failing_hooks.py"
    hooks.write_text("def boom(outputs, ctx):\n    raise ValueError('bad tensor layout')\n")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_model} postprocess={hooks}:boom ! appsink name=sink")
    assert res.error.matches(Gst.LibraryError.quark(), Gst.LibraryError.FAILED), res.error
    assert "Traceback (most recent call last)" in res.debug and "bad tensor layout" in res.debug
