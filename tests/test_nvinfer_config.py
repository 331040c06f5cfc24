"""nvinfer config files mapped to pyinfer's properties (pyinfer.nvinfer_config), on real nvinfer files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyinfer.nvinfer_config import ConfigFileError, parse_key_file, read_nvinfer_config

#: DeepStream 8's samples/configs/deepstream-app/config_infer_primary.txt (TrafficCamNet), as shipped.
DEEPSTREAM_PRIMARY = """\
################################################################################
# Following properties are mandatory when engine files are not specified:
#   int8-calib-file(Only in INT8)
#   ONNX: onnx-file
################################################################################

[property]
gpu-id=0
net-scale-factor=0.00392156862745098
onnx-file=../../models/Primary_Detector/resnet18_trafficcamnet_pruned.onnx
model-engine-file=../../models/Primary_Detector/resnet18_trafficcamnet_pruned.onnx_b30_gpu0_int8.engine
labelfile-path=../../models/Primary_Detector/labels.txt
int8-calib-file=../../models/Primary_Detector/cal_trt.bin
force-implicit-batch-dim=1
batch-size=30
process-mode=1
model-color-format=0
## 0=FP32, 1=INT8, 2=FP16 mode
network-mode=1
num-detected-classes=4
interval=0
gie-unique-id=1
uff-input-order=0
uff-input-blob-name=input_1
output-blob-names=output_cov/Sigmoid:0;output_bbox/BiasAdd:0
#scaling-filter=0
#scaling-compute-hw=0
cluster-mode=2
infer-dims=3;544;960

[class-attrs-all]
pre-cluster-threshold=0.2
eps=0.2
group-threshold=1
"""

#: marcoslucianops/DeepStream-Yolo's config_infer_primary_yoloV8.txt, as published.
DEEPSTREAM_YOLO = """\
[property]
gpu-id=0
net-scale-factor=0.0039215697906911373
model-color-format=0
onnx-file=yolov8s.onnx
model-engine-file=yolov8s.onnx_b1_gpu0_fp32.engine
#int8-calib-file=calib.table
labelfile-path=labels.txt
batch-size=1
network-mode=0
num-detected-classes=80
interval=0
gie-unique-id=1
process-mode=1
network-type=0
cluster-mode=2
maintain-aspect-ratio=1
symmetric-padding=1
#workspace-size=2000
parse-bbox-func-name=NvDsInferParseYolo
#parse-bbox-func-name=NvDsInferParseYoloCuda
custom-lib-path=nvdsinfer_custom_impl_Yolo/libnvdsinfer_custom_impl_Yolo.so
engine-create-func-name=NvDsInferYoloCudaEngineGet

[class-attrs-all]
nms-iou-threshold=0.45
pre-cluster-threshold=0.25
topk=300
"""

#: The DeepStream-Yolo file's [property] head, for small variations.
YOLO_HEAD = DEEPSTREAM_YOLO.split("parse-bbox-func-name")[0]


def _write(tmp_path: Path, text: str, name: str = "config_infer_primary.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _keys(config) -> list[str]:
    """The '[group] key' of each unsupported entry."""
    return [" ".join(entry.split(" ")[:2]).split("=")[0] for entry in config.unsupported]


def test_deepstream_yolo_file_maps_to_pyinfer_properties(tmp_path):
    config = read_nvinfer_config(_write(tmp_path, DEEPSTREAM_YOLO))
    assert config.properties == {
        "labels-file": str(tmp_path / "labels.txt"),
        "batch-size": 1,
        "precision": "fp32",
        "interval": 0,
        "unique-id": 1,
        "model-engine": str(tmp_path / "yolov8s.onnx"),  # the engine is not built yet: nvinfer builds from ONNX
        "confidence-threshold": 0.25,
        "nms-iou-threshold": 0.45,
        "max-detections": 300,
        "process-mode": "primary",
    }
    assert config.sources["max-detections"] == "[class-attrs-all] topk"
    assert _keys(config) == [
        "[property] parse-bbox-func-name",
        "[property] custom-lib-path",
        "[property] engine-create-func-name",
    ]
    assert "NvDsInferParseYolo" in config.warning() and str(tmp_path) in config.warning()


def test_an_existing_model_engine_file_wins_over_onnx_file_as_in_nvinfer(tmp_path):
    (tmp_path / "yolov8s.onnx_b1_gpu0_fp32.engine").write_bytes(b"engine")
    config = read_nvinfer_config(_write(tmp_path, DEEPSTREAM_YOLO))
    assert config.properties["model-engine"] == str(tmp_path / "yolov8s.onnx_b1_gpu0_fp32.engine")
    assert config.sources["model-engine"] == "[property] model-engine-file"


def test_deepstream_primary_sample_maps_and_names_what_pyinfer_cannot_honour(tmp_path):
    cfg_dir = tmp_path / "samples" / "configs" / "deepstream-app"
    cfg_dir.mkdir(parents=True)
    config = read_nvinfer_config(_write(cfg_dir, DEEPSTREAM_PRIMARY))
    models = cfg_dir / "../../models/Primary_Detector"
    props = config.properties
    assert props["model-engine"] == str(models / "resnet18_trafficcamnet_pruned.onnx")
    assert props["labels-file"] == str(models / "labels.txt")
    assert (props["batch-size"], props["unique-id"], props["interval"]) == (30, 1, 0)
    assert (props["input-width"], props["input-height"]) == (960, 544)
    assert props["confidence-threshold"] == 0.2
    assert props["nms-iou-threshold"] == 0.3  # nvinfer's default when [class-attrs-all] does not say
    assert "precision" not in props and "max-detections" not in props and "device" not in props
    # INT8 and the blob names are named; TensorRT build keys, UFF leftovers and DBSCAN's eps are not.
    assert _keys(config) == [
        "[property] network-mode",
        "[property] output-blob-names",
        "[property] maintain-aspect-ratio",
    ]
    assert "INT8" in config.unsupported[0] and "stretches" in config.unsupported[2]


def test_properties_set_on_the_element_win_over_the_file(tmp_path):
    config = read_nvinfer_config(_write(tmp_path, DEEPSTREAM_YOLO))
    values = config.for_element({"confidence-threshold", "batch-size", "config-file-path"})
    assert "confidence-threshold" not in values and "batch-size" not in values
    assert values["nms-iou-threshold"] == 0.45


def test_a_file_without_a_loadable_model_is_refused_unless_model_engine_is_set(tmp_path):
    text = (
        "[property]\ncustom-network-config=yolov4.cfg\nmodel-file=yolov4.weights\nnet-scale-factor=0.00392156862745\n"
    )
    config = read_nvinfer_config(_write(tmp_path, text))
    with pytest.raises(ConfigFileError, match=r"\[property\] names only custom-network-config, model-file"):
        config.for_element(set())
    assert "model-engine" not in config.for_element({"model-engine"})
    assert "[property] custom-network-config" in _keys(config)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("batch-size=1\n[property]\n", r"line 1: 'batch-size' comes before the first \[group\] header"),
        ("[property]\nbatch-size 1\n", r"line 2: 'batch-size 1' is not a key=value pair"),
        ("[property\nbatch-size=1\n", r"line 1: '\[property' is not a \[group\] header"),
        ("[property]\n=1\n", r"line 2: '=1' has no key"),
        ("[class-attrs-all]\ntopk=3\n", r"no \[property\] group"),
    ],
)
def test_syntax_errors_name_the_file_and_line(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError, match=match) as info:
        read_nvinfer_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("batch-size=1", r"\[property\] batch-size \(line 9\): 0 is out of range \[1, 1024\]"),
        ("network-mode=0", r"\[property\] network-mode \(line 10\): 5 is not one of 0 \(fp32\), 1 \(INT8\)"),
        ("gie-unique-id=1", r"\[property\] gie-unique-id \(line 13\): 0 is out of range"),
        ("interval=0", r"\[property\] interval \(line 12\): 'two' is not an integer"),
        ("batch-size=1", r"\[property\] batch-size \(line 9\): '2 # two frames' is not an integer"),
        ("cluster-mode=2", r"\[property\] cluster-mode \(line 16\): 7 is not one of"),
        ("maintain-aspect-ratio=1", r"\[property\] maintain-aspect-ratio \(line 17\): 'yes' is not a boolean"),
        ("nms-iou-threshold=0.45", r"\[class-attrs-all\] nms-iou-threshold \(line \d+\): 1.5 is not between 0 and 1"),
        ("pre-cluster-threshold=0.25", r"\[class-attrs-all\] pre-cluster-threshold \(line \d+\): 'high' is not"),
        ("topk=300", r"\[class-attrs-all\] topk \(line \d+\): -1 is negative"),
    ],
)
def test_bad_values_name_the_file_group_and_key(tmp_path, edit, match):
    key = edit.split("=")[0]
    bad = {
        "batch-size=1": "0" if "out of range" in match else "2 # two frames",
        "network-mode=0": "5",
        "gie-unique-id=1": "0",
        "interval=0": "two",
        "cluster-mode=2": "7",
        "maintain-aspect-ratio=1": "yes",
        "nms-iou-threshold=0.45": "1.5",
        "pre-cluster-threshold=0.25": "high",
        "topk=300": "-1",
    }[edit]
    path = _write(tmp_path, DEEPSTREAM_YOLO.replace(edit, f"{key}={bad}"))
    with pytest.raises(ConfigFileError, match=match) as info:
        read_nvinfer_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("infer-dims=3;640\n", r"\[property\] infer-dims \(line \d+\): 2 values; expected 3 \(c;h;w\)"),
        ("infer-dims=3;640;x\n", r"infer-dims .*not a ';'-separated list of integers"),
        ("labelfile-path=\n", r"\[property\] labelfile-path \(line \d+\): empty path"),
        ("[class-attrs-80]\ntopk=3\n", r"\[class-attrs-80\]: class 80 but num-detected-classes=80"),
        ("[class-attrs-car]\ntopk=3\n", r"\[class-attrs-car\]: class attributes go in"),
        ("[class-attrs-2]\nborder-color=1;0;0\n", r"\[class-attrs-2\] border-color .*expected 4 numbers"),
    ],
)
def test_bad_list_paths_and_class_groups_are_errors(tmp_path, extra, match):
    text = YOLO_HEAD.replace("labelfile-path=labels.txt\n", "") + extra if "labelfile" in extra else None
    text = text or (YOLO_HEAD + extra if not extra.startswith("[") else DEEPSTREAM_YOLO + extra)
    with pytest.raises(ConfigFileError, match=match):
        read_nvinfer_config(_write(tmp_path, text))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigFileError, match="does not exist") as info:
        read_nvinfer_config(tmp_path / "nope.txt")
    assert info.value.missing
    with pytest.raises(ConfigFileError, match="is not a regular file") as info:
        read_nvinfer_config(tmp_path)
    assert info.value.unreadable and not info.value.missing
    (tmp_path / "latin1.txt").write_bytes(b"[property]\nlabelfile-path=caf\xe9.txt\n")
    with pytest.raises(ConfigFileError, match="is not UTF-8"):
        read_nvinfer_config(tmp_path / "latin1.txt")


def test_gkeyfile_syntax_as_glib_reads_it(tmp_path):
    kf = parse_key_file(
        "# comment\n  # indented comment\n\n[property]\n  batch-size = 4  \nbatch-size=8\n"
        "labelfile-path=my\\slabels.txt\noffsets=0;0;0;\n[property]\ninterval=2\n",
        tmp_path / "x.txt",
    )
    assert kf.integer("property", "batch-size") == 8  # a repeated key keeps its last value
    assert kf.string("property", "labelfile-path") == "my labels.txt"  # \s is a space
    assert kf.numbers("property", "offsets") == [0, 0, 0]  # trailing separator allowed
    assert kf.integer("property", "interval") == 2  # a repeated group merges


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("cluster-mode=2", {"cluster-mode=4": {"nms-iou-threshold": 1.0}}),  # no clustering: NMS drops nothing
        ("network-mode=0", {"network-mode=2": {"precision": "fp16"}}),
        ("gpu-id=0", {"gpu-id=1": {"device": "cuda:1"}}),
        ("topk=300", {"topk=500000": {"max-detections": 100_000}}),
        ("pre-cluster-threshold=0.25", {"pre-cluster-threshold=1.2": {"confidence-threshold": 1.0}}),
        ("topk=300", {"post-cluster-threshold=0.6": {"confidence-threshold": 0.6}}),  # after NMS = before
    ],
)
def test_value_mappings(tmp_path, edit, expected):
    ((new, props),) = expected.items()
    config = read_nvinfer_config(_write(tmp_path, DEEPSTREAM_YOLO.replace(edit, new)))
    for name, value in props.items():
        assert config.properties[name] == value
    assert config.properties.get("device") in (None, "cuda:1")  # gpu-id=0 leaves device=auto


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("cluster-mode=2", "cluster-mode=1"),
        ("network-mode=0", "network-mode=3"),
        ("model-color-format=0", "model-color-format=1"),
        ("symmetric-padding=1", "symmetric-padding=0"),
        ("net-scale-factor=0.0039215697906911373", "net-scale-factor=1.0"),
        ("network-type=0", "network-type=2"),
        ("interval=0", "interval=0\noffsets=123.7;116.3;103.5"),
        ("interval=0", "interval=0\noutput-tensor-meta=1"),
        ("interval=0", "interval=0\nfilter-out-class-ids=1;2"),
        ("interval=0", "interval=0\nno-such-key=1"),
        ("topk=300", "topk=300\nroi-top-offset=20"),
        ("topk=300", "topk=300\n[class-attrs-0]\npre-cluster-threshold=0.6"),
        ("topk=300", "topk=300\n[tracker]\nll-lib-file=x.so"),
    ],
)
def test_values_pyinfer_cannot_honour_are_named(tmp_path, edit, named):
    config = read_nvinfer_config(_write(tmp_path, DEEPSTREAM_YOLO.replace(edit, named)))
    key = named.split("\n")[1] if "\n[" in named else named.split("\n")[-1].split("=")[0]
    assert len(config.unsupported) == 4, config.unsupported  # the three parser library keys, and this one
    assert any(key in entry for entry in config.unsupported), config.unsupported


#: A secondary classifier's file in the form of DeepStream's samples (config_infer_secondary_*.txt).
SECONDARY = """\
[property]
gpu-id=0
net-scale-factor=1
onnx-file=vehicletypes.onnx
labelfile-path=labels.txt
batch-size=16
process-mode=2
model-color-format=1
network-mode=0
is-classifier=1
classifier-async-mode=1
classifier-threshold=0.51
input-object-min-width=128
input-object-min-height=64
input-object-max-width=1024
operate-on-gie-id=1
operate-on-class-ids=0;2
secondary-reinfer-interval=10
classifier-type=vehicletype
gie-unique-id=4
"""


def test_a_secondary_classifier_file_maps_to_secondary_mode(tmp_path):
    config = read_nvinfer_config(_write(tmp_path, SECONDARY, "config_infer_secondary.txt"))
    p = config.properties
    assert p["process-mode"] == "secondary" and p["decoder"] == "classifier"
    assert p["operate-on-gie-id"] == 1 and p["operate-on-class-ids"] == "0;2"
    assert (p["input-object-min-width"], p["input-object-min-height"], p["input-object-max-width"]) == (128, 64, 1024)
    assert p["secondary-reinfer-interval"] == 10 and p["batch-size"] == 16 and p["unique-id"] == 4
    assert p["confidence-threshold"] == pytest.approx(0.51)
    assert p["maintain-aspect-ratio"] is False  # absent: nvinfer stretches object crops, and so does pyinfer
    assert config.sources["operate-on-class-ids"] == "[property] operate-on-class-ids"
    assert not any("maintain-aspect-ratio" in u or "process-mode" in u for u in config.unsupported), config.unsupported
    keep = read_nvinfer_config(_write(tmp_path, SECONDARY + "maintain-aspect-ratio=1\nsymmetric-padding=1\n"))
    assert keep.properties["maintain-aspect-ratio"] is True
    primary = read_nvinfer_config(_write(tmp_path, SECONDARY.replace("process-mode=2", "process-mode=1")))
    assert primary.properties["process-mode"] == "primary" and "maintain-aspect-ratio" not in primary.properties


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("operate-on-class-ids=0;2", "operate-on-class-ids=0;car"),
        ("operate-on-gie-id=1", "operate-on-gie-id=-2"),
        ("input-object-min-width=128", "input-object-min-width=40000"),
        ("secondary-reinfer-interval=10", "secondary-reinfer-interval=-1"),
    ],
)
def test_bad_secondary_values_name_the_key(tmp_path, edit, match):
    with pytest.raises(ConfigFileError, match=match.split("=")[0]):
        read_nvinfer_config(_write(tmp_path, SECONDARY.replace(edit, match)))


def test_silent_keys_and_equal_class_values_are_not_named(tmp_path):
    text = DEEPSTREAM_YOLO.replace("#workspace-size=2000", "workspace-size=2000\noutput-tensor-meta=0") + (
        "\n[class-attrs-3]\npre-cluster-threshold=0.25\nnms-iou-threshold=0.45\neps=0.2\n"
    )
    config = read_nvinfer_config(_write(tmp_path, text))
    assert len(config.unsupported) == 3  # the parser library keys only


def test_classifier_network_type_selects_the_classifier_decoder(tmp_path):
    text = YOLO_HEAD.replace("network-type=0", "network-type=1") + "classifier-threshold=0.6\n"
    config = read_nvinfer_config(_write(tmp_path, text))
    assert config.properties["decoder"] == "classifier"
    assert config.properties["confidence-threshold"] == 0.6
    assert "nms-iou-threshold" not in config.properties
