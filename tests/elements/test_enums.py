"""Choice properties are GEnums (issue #18): gst-inspect lists their values, GObject refuses any other."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pyinfer._gi import GLib, GObject, Gst
from pyinfer.elements import _enums
from support import run

#: (element, property, GEnum type name, its nicks in value order, default)
CHOICES = [
    ("pyinfer", "backend", "PyInferBackend",
     ("auto", "torchscript", "export", "module", "onnx", "tensorrt", "triton"), "auto"),
    ("pyinfer", "precision", "PyInferPrecision", ("fp32", "fp16", "bf16"), "fp32"),
    ("pyinfer", "compile", "PyInferCompile", ("off", "default", "reduce-overhead", "max-autotune"), "off"),
    ("pyinfer", "decoder", "PyInferDecoder",
     ("auto", "yolov8", "yolov5", "yolo-e2e", "yolo-obb", "yolo-seg", "yolo-pose", "detr", "classifier",
      "torchvision", "custom"), "auto"),
    ("pyinfer", "meta", "PyInferMeta", ("auto", "analytics", "roi", "both", "deepstream", "pyds"), "auto"),
    ("pyinfer", "on-error", "PyInferOnError", ("fail", "skip"), "fail"),
    ("pyinfer", "process-mode", "PyInferProcessMode", ("primary", "secondary"), "primary"),
    ("pytracker", "iou-mode", "PyInferTrackerIouMode", ("auto", "axis", "rotated"), "auto"),
    ("pytracker", "core", "PyInferTrackerCore", ("auto", "native", "numpy"), "auto"),
    ("pymsgconv", "message-per", "PyInferMsgconvMessagePer", ("frame", "object"), "frame"),
    ("pymsgbroker", "proto", "PyInferMsgbrokerProto", ("none", "file", "mqtt", "redis", "kafka"), "none"),
    ("pymsgbroker", "drop-policy", "PyInferMsgbrokerDropPolicy", ("oldest", "newest"), "oldest"),
    ("pymsgbroker", "on-connect-error", "PyInferMsgbrokerOnConnectError", ("fail", "retry"), "fail"),
    ("pyvlm", "drop-policy", "PyInferVlmDropPolicy", ("oldest", "newest"), "oldest"),
    ("pyvlm", "mode", "PyInferVlmMode", ("async", "sync"), "async"),
    ("pyvlm", "process-mode", "PyInferProcessMode", ("primary", "secondary"), "primary"),
    ("pyvlm", "on-error", "PyInferOnError", ("fail", "skip"), "fail"),
]  # fmt: skip
IDS = [f"{element}:{prop}" for element, prop, *_ in CHOICES]


def _element(factory: str) -> Gst.Element:
    element = Gst.ElementFactory.make(factory, None)
    assert element is not None, factory
    return element


def _parse(description: str) -> Gst.Pipeline:
    return Gst.parse_launch(description)


@pytest.mark.parametrize(("factory", "prop", "type_name", "nicks", "default"), CHOICES, ids=IDS)
def test_each_choice_property_is_a_genum_with_its_values_and_default(factory, prop, type_name, nicks, default):
    pspec = _element(factory).find_property(prop)
    assert pspec.value_type.is_a(GObject.TYPE_ENUM)
    assert pspec.value_type.name == type_name
    assert _enums.nicks(pspec.value_type.pytype) == nicks
    assert nicks[int(pspec.default_value)] == default  # an enum value on PyGObject 3.42, an int on 3.50
    assert _element(factory).get_property(prop) == default
    assert pspec.flags & GObject.ParamFlags.READWRITE == GObject.ParamFlags.READWRITE


def test_no_element_has_a_choice_left_as_a_plain_string():
    # The string properties that stay strings: free text (paths, specs, names), cuda:N, read-only explanations.
    free = {
        "pyinfer": {
            "model-engine",
            "labels-file",
            "device",
            "postprocess",
            "batch-group",
            "config-file-path",
            "operate-on-class-ids",
        },  # a list of class ids
        "pymsgbroker": {"conn-str", "topic", "config"},
        "pyvlm": {"text-model", "model-config", "prompt", "operate-on-class-ids"},
    }
    for factory in ("pyinfer", "pytracker", "pyosd", "pymsgconv", "pymsgbroker", "pyvlm"):
        writable = {
            p.name for p in _element(factory).list_properties()
            if p.value_type == GObject.TYPE_STRING and p.flags & GObject.ParamFlags.WRITABLE
            and p.owner_type.name.startswith("Py")
        }  # fmt: skip
        assert writable == free.get(factory, set()), factory


def test_the_enums_list_what_the_code_accepts():
    from pyinfer.accel import COMPILE_MODES
    from pyinfer.backends import BACKENDS, PRECISIONS
    from pyinfer.brokers import DROP_POLICIES, PROTOCOLS
    from pyinfer.decoders import DECODER_NAMES
    from pyinfer.elements._async import DROP_POLICIES as VLM_DROP_POLICIES
    from pyinfer.meta.codecs import NAMES
    from pyinfer.track.bytetrack import BACKENDS as TRACKER_CORES
    from pyinfer.track.bytetrack import IOU_MODES

    assert _enums.nicks(_enums.Backend) == BACKENDS
    assert _enums.nicks(_enums.Precision) == PRECISIONS
    assert _enums.nicks(_enums.Compile) == COMPILE_MODES
    assert _enums.nicks(_enums.Decoder) == DECODER_NAMES
    assert _enums.nicks(_enums.Meta) == ("auto", *NAMES, "deepstream", "pyds")
    assert _enums.nicks(_enums.TrackerIouMode) == IOU_MODES
    assert _enums.nicks(_enums.TrackerCore) == TRACKER_CORES
    assert _enums.nicks(_enums.MsgbrokerProto) == ("none", *PROTOCOLS)
    assert _enums.nicks(_enums.MsgbrokerDropPolicy) == DROP_POLICIES
    assert _enums.nicks(_enums.VlmDropPolicy) == VLM_DROP_POLICIES


@pytest.mark.parametrize(("factory", "prop", "type_name", "nicks", "default"), CHOICES, ids=IDS)
def test_every_value_is_set_by_its_nick_its_number_or_the_enum(factory, prop, type_name, nicks, default):
    element = _element(factory)
    enum = element.find_property(prop).value_type.pytype
    for number, nick in enumerate(nicks):
        for value in (nick, number, enum(number)):
            element.set_property(prop, default)
            element.set_property(prop, value)
            assert element.get_property(prop) == nick, value  # Python reads the nick, as before the enums
            assert getattr(element.props, prop.replace("-", "_")) == nick


@pytest.mark.parametrize(("factory", "prop", "type_name", "nicks", "default"), CHOICES, ids=IDS)
def test_a_gst_launch_value_is_deserialized_by_gstreamer(factory, prop, type_name, nicks, default):
    element = _element(factory)
    Gst.util_set_object_arg(element, prop, nicks[-1])  # what gst-launch-1.0 and parse_launch call
    assert element.get_property(prop) == nicks[-1]
    pipeline = _parse(f"fakesrc ! {factory} name=e {prop}={nicks[1]} ! fakesink")
    assert pipeline.get_by_name("e").get_property(prop) == nicks[1]


@pytest.mark.parametrize(("factory", "prop", "type_name", "nicks", "default"), CHOICES, ids=IDS)
def test_a_value_outside_the_enum_is_refused_when_set(factory, prop, type_name, nicks, default):
    element = _element(factory)
    element.set_property(prop, nicks[1])
    with pytest.raises(TypeError, match=f"could not convert 'bogus' to type '{type_name}'"):
        element.set_property(prop, "bogus")
    assert element.get_property(prop) == nicks[1]  # the value before stays
    with pytest.raises(GLib.Error, match=f'could not set property "{prop}" in element ".*" to "bogus"'):
        _parse(f"fakesrc ! {factory} name=e {prop}=bogus ! fakesink")


def test_c_code_reading_the_property_gets_the_enum_value():
    # g_object_get (here: GStreamer's property-notify watch) converts the stored nick back to the GEnum value.
    pipeline = Gst.Pipeline.new(None)
    infer = _element("pyinfer")
    pipeline.add(infer)
    infer.add_property_notify_watch("on-error", True)
    infer.set_property("on-error", "skip")
    message = pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.PROPERTY_NOTIFY)
    assert message is not None
    _obj, name, value = message.parse_property_notify()
    assert name == "on-error"
    assert isinstance(value, GObject.GEnum) and value.value_nick == "skip" and int(value) == 1


def test_a_gst_launch_line_with_choices_runs(run_pipeline, fixed_model):
    pipeline = _parse(
        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer name=infer model-engine={fixed_model} device=cpu backend=torchscript precision=fp32 compile=off "
        "decoder=yolov8 meta=roi on-error=skip ! pytracker iou-mode=axis core=numpy ! "
        "pymsgconv message-per=object frame-interval=1 ! appsink name=sink"
    )
    res = run(pipeline)
    assert res.ok, res.error
    assert len(res.pts) == 2 and all(len(d) == 2 for d in res.detections)
    infer = pipeline.get_by_name("infer")
    assert infer.get_property("meta-used") == "roi"
    assert infer.get_property("on-error") == "skip"


def test_a_ready_only_choice_set_while_playing_warns_and_stays(fixed_model):
    pipeline = _parse(
        "videotestsrc is-live=true ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! "
        f"pyinfer name=infer model-engine={fixed_model} device=cpu ! fakesink"
    )
    infer = pipeline.get_by_name("infer")
    bus = pipeline.get_bus()
    try:
        assert pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
        pipeline.get_state(10 * Gst.SECOND)
        infer.set_property("backend", "onnx")
        message = bus.timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.WARNING)
        assert message is not None
        text = message.parse_warning()[0].message
        assert "backend can only change in the NULL or READY state: it stays 'auto' (asked for 'onnx'" in text
        assert infer.get_property("backend") == "auto"
    finally:
        pipeline.set_state(Gst.State.NULL)
    infer.set_property("backend", "onnx")  # stopped: allowed
    assert infer.get_property("backend") == "onnx"


def test_the_config_file_sets_a_choice_and_the_next_file_puts_the_default_back(tmp_path):
    infer = _element("pyinfer")
    fp16 = tmp_path / "fp16.txt"
    fp16.write_text("[property]\nonnx-file=model.onnx\nnetwork-mode=2\nnetwork-type=1\n")
    infer.set_property("config-file-path", str(fp16))
    assert infer._apply_config_file()
    assert (infer.get_property("precision"), infer.get_property("decoder")) == ("fp16", "classifier")
    plain = tmp_path / "plain.txt"
    plain.write_text("[property]\nonnx-file=model.onnx\n")
    infer.set_property("config-file-path", str(plain))
    assert infer._apply_config_file()
    assert (infer.get_property("precision"), infer.get_property("decoder")) == ("fp32", "auto")
    infer.set_property("precision", "bf16")  # set on the element: wins over the file
    infer.set_property("config-file-path", str(fp16))
    assert infer._apply_config_file()
    assert (infer.get_property("precision"), infer.get_property("decoder")) == ("bf16", "classifier")


def test_an_unset_proto_is_still_an_error_at_start(run_pipeline):
    res = run_pipeline("videotestsrc num-buffers=1 ! pymsgbroker conn-str=x ! fakesink")
    assert res.error is not None
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "proto must be one of file, mqtt, redis, kafka: it is not set" in res.error.message


def test_registering_a_type_twice_returns_the_registered_one():
    again = _enums.choice_enum("PyInferOnError", [("fail", "x"), ("skip", "y")])
    assert again.__gtype__ == _enums.OnError.__gtype__
    with pytest.raises(RuntimeError, match="registered with values"):
        _enums.choice_enum("PyInferOnError", [("fail", "x"), ("retry", "y")])


def test_the_module_imports_in_a_fresh_process_without_torch_or_numpy():
    code = (
        "import sys; import pyinfer.elements._enums as e; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules); "
        "print(e.Backend.__gtype__.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PyInferBackend"


@pytest.fixture(scope="module")
def inspect_env(tmp_path_factory) -> dict[str, str]:
    """`pyinfer env`'s exports in a clean environment, with a fresh registry (as tests/test_cli.py)."""
    base = {k: v for k, v in os.environ.items() if k not in ("GST_PLUGIN_PATH", "PYTHONPATH", "PYINFER_PYTHONPATH")}
    base["GST_REGISTRY"] = str(tmp_path_factory.mktemp("registry") / "registry.bin")
    script = f'eval "$({sys.executable} -m pyinfer.cli env)" && env -0'
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, check=True, timeout=60)
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


def _property_blocks(text: str) -> dict[str, str]:
    """gst-inspect-1.0's property descriptions by name: the line naming one and the lines under it."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        match = re.match(r"  ([a-z][a-z0-9-]*)\s+: ", line)
        if match:
            name = match.group(1)
            blocks[name] = ""
        elif not line.startswith("    "):
            name = None
        if name is not None:
            blocks[name] += line + "\n"
    return blocks


@pytest.mark.parametrize("factory", ["pyinfer", "pytracker", "pymsgconv", "pymsgbroker", "pyvlm"])
def test_gst_inspect_lists_the_enum_values(inspect_env, factory):
    out = subprocess.run(["gst-inspect-1.0", factory], env=inspect_env, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    blocks = _property_blocks(out.stdout)
    for element, prop, type_name, nicks, default in CHOICES:
        if element != factory:
            continue
        block = blocks[prop]
        assert f'Enum "{type_name}" Default: {nicks.index(default)}, "{default}"' in block, block
        listed = re.findall(r"\((\d+)\): (\S+)\s+- ", block)
        assert listed == [(str(k), nick) for k, nick in enumerate(nicks)], block
    if factory == "pyinfer":
        assert "(1): torchscript      - TorchScript (.torchscript, .ts, .pt)" in blocks["backend"]
