"""pyinfer config-file-path: an nvinfer config file in a real pipeline (videotestsrc -> pyinfer -> appsink)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pyinfer._gi import Gst

EXPECTED = np.array([[160, 80, 240, 160], [440, 290, 560, 350]], np.float32)  # FIXED_TABLE on 640x480


def _desc(cfg, extra: str = "", n: int = 6) -> str:
    return (
        f"videotestsrc num-buffers={n} ! video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! "
        f"pyinfer name=infer {extra} config-file-path={cfg} ! appsink name=sink"
    )


@pytest.fixture
def nvinfer_file(tmp_path, fixed_model):
    """An nvinfer file in configs/, its model and labels in models/ (paths relative to the file, as nvinfer)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "configs").mkdir()
    shutil.copy(fixed_model, tmp_path / "models" / "detector.torchscript")
    (tmp_path / "models" / "labels.txt").write_text("person\nbicycle\ncar\n")
    cfg = tmp_path / "configs" / "config_infer_primary.txt"
    cfg.write_text(
        "[property]\ngpu-id=0\nnet-scale-factor=0.0039215697906911373\nmodel-color-format=0\n"
        "onnx-file=../models/detector.onnx\nmodel-engine-file=../models/detector.torchscript\n"
        "labelfile-path=../models/labels.txt\nbatch-size=2\nnetwork-mode=0\nnum-detected-classes=3\ninterval=1\n"
        "gie-unique-id=9\nprocess-mode=1\nnetwork-type=0\ncluster-mode=2\nmaintain-aspect-ratio=1\n"
        "symmetric-padding=1\nparse-bbox-func-name=NvDsInferParseYolo\n"
        "custom-lib-path=nvdsinfer_custom_impl_Yolo/libnvdsinfer_custom_impl_Yolo.so\n\n"
        "[class-attrs-all]\nnms-iou-threshold=0.45\npre-cluster-threshold=0.75\ntopk=300\n"
    )
    return cfg


def test_the_files_batch_size_thresholds_interval_labels_and_unique_id_take_effect(run_pipeline, nvinfer_file):
    pipeline = Gst.parse_launch(_desc(nvinfer_file))
    res = run_pipeline(pipeline)
    assert res.ok, res.error
    assert [f.inferred for f in res.frames] == [True, False] * 3  # interval=1
    for info in res.frames:
        assert info.unique_id == 9  # gie-unique-id
    for dets in res.detections[::2]:  # pre-cluster-threshold=0.75 keeps the 0.9 box only, named by the file's labels
        np.testing.assert_allclose(dets.xyxy, EXPECTED[:1], atol=1e-3)
        assert dets.label(0) == "person" and dets.extra["unique_id"].tolist() == [9]
    assert all(len(d) == 0 for d in res.detections[1::2])
    infer = pipeline.get_by_name("infer")
    assert infer.get_property("batch-size") == 2
    assert infer.get_property("confidence-threshold") == pytest.approx(0.75)
    assert infer.get_property("model-engine") == str(nvinfer_file.parent / "../models/detector.torchscript")
    # One WARNING names what pyinfer cannot honour: the compiled parser (it decodes the outputs itself).
    (warning,) = [w for w in res.warnings if "config-file-path" in w]
    assert "custom-lib-path" in warning and "parse-bbox-func-name" in warning and str(nvinfer_file) in warning


def test_properties_set_on_the_element_win_over_the_file(run_pipeline, nvinfer_file):
    # Set before config-file-path (gst-launch order) or after: the element's value wins either way, as in nvinfer.
    pipeline = Gst.parse_launch(_desc(nvinfer_file, "confidence-threshold=0.5 interval=0", n=2))
    pipeline.get_by_name("infer").set_property("unique-id", 3)
    res = run_pipeline(pipeline)
    assert res.ok, res.error
    assert [f.inferred for f in res.frames] == [True, True]
    dets = res.detections[0]
    np.testing.assert_allclose(dets.xyxy, EXPECTED, atol=1e-3)  # 0.9 and 0.7 kept at 0.5
    assert [dets.label(i) for i in range(2)] == ["person", "car"]
    assert dets.extra["unique_id"].tolist() == [3, 3]


def test_a_deepstream_yolo_file_runs_the_embedded_model(run_pipeline, embedded_model, tmp_path):
    shutil.copy(embedded_model.path, tmp_path / "shapes.torchscript")
    shutil.copy(embedded_model.labels_file, tmp_path / "labels.txt")
    cfg = tmp_path / "config_infer_primary_yoloV8.txt"
    cfg.write_text(  # DeepStream-Yolo's file, with the model's file names
        "[property]\ngpu-id=0\nnet-scale-factor=0.0039215697906911373\nmodel-color-format=0\n"
        "onnx-file=shapes.onnx\nmodel-engine-file=shapes.torchscript\nlabelfile-path=labels.txt\nbatch-size=1\n"
        "network-mode=0\nnum-detected-classes=3\ninterval=0\ngie-unique-id=1\nprocess-mode=1\nnetwork-type=0\n"
        "cluster-mode=2\nmaintain-aspect-ratio=1\nsymmetric-padding=1\nparse-bbox-func-name=NvDsInferParseYolo\n"
        "custom-lib-path=nvdsinfer_custom_impl_Yolo/libnvdsinfer_custom_impl_Yolo.so\n\n"
        "[class-attrs-all]\nnms-iou-threshold=0.45\npre-cluster-threshold=0.25\ntopk=2\n"
    )
    res = run_pipeline(_desc(cfg, n=3))
    assert res.ok, res.error
    assert [f.unique_id for f in res.frames] == [1, 1, 1]
    assert all(len(d) <= 2 for d in res.detections)  # topk
    for dets in res.detections:
        assert all(c > 0.25 for c in dets.confidence)
        assert {dets.label(i) for i in range(len(dets))} <= set(embedded_model.labels)


def test_a_missing_file_is_a_not_found_error_before_the_model_loads(run_pipeline, tmp_path):
    res = run_pipeline(_desc(tmp_path / "nope.txt"))
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.NOT_FOUND)
    assert str(tmp_path / "nope.txt") in res.error.message and "does not exist" in res.error.message


def test_a_bad_value_is_a_settings_error_naming_group_and_key(run_pipeline, nvinfer_file):
    nvinfer_file.write_text(nvinfer_file.read_text().replace("nms-iou-threshold=0.45", "nms-iou-threshold=high"))
    res = run_pipeline(_desc(nvinfer_file))
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert f"config-file-path {nvinfer_file}: [class-attrs-all] nms-iou-threshold" in res.error.message
    assert "'high' is not a number" in res.error.message


def test_a_syntax_error_is_a_settings_error_naming_the_line(run_pipeline, tmp_path):
    cfg = tmp_path / "config.txt"
    cfg.write_text("[property]\nbatch-size 4\n")
    res = run_pipeline(_desc(cfg))
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "line 2: 'batch-size 4' is not a key=value pair" in res.error.message


def test_a_new_file_at_the_next_start_replaces_the_last_ones_values(run_pipeline, nvinfer_file):
    pipeline = Gst.parse_launch(_desc(nvinfer_file, n=2))
    assert run_pipeline(pipeline).ok
    infer = pipeline.get_by_name("infer")
    assert (infer.get_property("batch-size"), infer.get_property("interval")) == (2, 1)
    other = nvinfer_file.with_name("other.txt")  # no batch-size, interval or thresholds of its own
    other.write_text("[property]\nmodel-engine-file=../models/detector.torchscript\ngie-unique-id=4\n")
    infer.set_property("config-file-path", str(other))
    res = run_pipeline(pipeline)
    assert res.ok, res.error
    assert (infer.get_property("batch-size"), infer.get_property("interval")) == (1, 0)  # back to the defaults
    assert infer.get_property("labels-file") == ""
    assert infer.get_property("confidence-threshold") == pytest.approx(0.2)  # nvinfer's default
    assert [f.unique_id for f in res.frames] == [4, 4]
