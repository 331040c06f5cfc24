"""GEnum types for the elements' choice properties, so gst-inspect-1.0 lists their values.

A property whose value is one of a fixed set is a GParamEnum: ``gst-inspect-1.0`` prints ``Enum "PyInferBackend"``
and one ``(value): nick - description`` line per value, and GObject refuses any other value when it is set
(``TypeError`` in Python, an erroneous pipeline for ``gst-launch-1.0``). Values are set by their nick (``skip``),
their number or the enum value. The elements keep the nick: ``self.on_error`` is ``"skip"``, and so is
``get_property("on-error")`` from Python (PyGObject calls a Python property's getter directly), as it was when
these were strings; C code (``g_object_get``, gst-inspect-1.0) gets the enum value, converted from the nick.

PyGObject cannot define a GEnum type from Python, so :func:`choice_enum` registers it in C (ctypes) and takes
PyGObject's class for it. A type is registered once per process: a module imported twice (the plugin scanner,
pyinfer.register()) finds it already there. Only the GObject bindings are imported here (no torch, no numpy):
the plugin scanner imports every element module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence
from typing import Any

from gi import _gi

from pyinfer._gi import GObject

__all__ = [
    "Backend",
    "Compile",
    "Decoder",
    "Meta",
    "MsgbrokerDropPolicy",
    "MsgbrokerOnConnectError",
    "MsgbrokerProto",
    "MsgconvMessagePer",
    "OnError",
    "Precision",
    "TrackerCore",
    "TrackerIouMode",
    "VlmDropPolicy",
    "VlmMode",
    "choice_enum",
    "choice_property",
    "enum_default",
    "is_enum",
    "nick_of",
    "nicks",
]


class _GEnumValue(ctypes.Structure):
    _fields_ = (("value", ctypes.c_int), ("value_name", ctypes.c_char_p), ("value_nick", ctypes.c_char_p))


#: The C arrays of registered types: GLib keeps pointers into them (and their strings) for the process.
_REGISTERED: list[object] = []
_gobject: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _gobject
    if _gobject is None:
        lib = ctypes.CDLL(ctypes.util.find_library("gobject-2.0") or "libgobject-2.0.so.0")
        lib.g_enum_register_static.restype = ctypes.c_size_t
        lib.g_enum_register_static.argtypes = [ctypes.c_char_p, ctypes.POINTER(_GEnumValue)]
        _gobject = lib
    return _gobject


def choice_enum(type_name: str, values: Sequence[tuple[str, str]]) -> Any:
    """The GEnum class ``type_name`` with values 0, 1, ... named by ``values``: ``(nick, description)`` pairs.

    The nick is the word users set (``skip``); the description is the value's GLib name, which gst-inspect-1.0
    prints after it. Registered in GObject once per process; later calls return the class of the type there.
    """
    try:
        gtype = GObject.type_from_name(type_name)
    except RuntimeError:  # not registered yet
        encoded = [(n.encode(), d.encode()) for n, d in values]
        array = (_GEnumValue * (len(values) + 1))(
            *(_GEnumValue(k, d, n) for k, (n, d) in enumerate(encoded)), _GEnumValue(0, None, None)
        )
        _REGISTERED.append((array, encoded))
        if not _library().g_enum_register_static(type_name.encode(), array):
            raise RuntimeError(f"GObject refused to register enum type {type_name}") from None
        gtype = GObject.type_from_name(type_name)
    cls = gtype.pytype or _gi.enum_add(gtype)
    got = nicks(cls)
    if got != tuple(n for n, _ in values):  # an older pyinfer registered the name in this process
        raise RuntimeError(f"enum type {type_name} is registered with values {got}, not {[n for n, _ in values]}")
    return cls


def nicks(enum: Any) -> tuple[str, ...]:
    """The nicks of a GEnum class, in the order of their values."""
    values = enum.__enum_values__
    return tuple(values[k].value_nick for k in sorted(values))


def nick_of(value: object) -> str:
    """A choice as text: an enum value's nick (what GObject hands a setter); a string as it is."""
    return value if isinstance(value, str) else str(value.value_nick)  # type: ignore[attr-defined]


def is_enum(kind: object) -> bool:
    """Whether a ``GObject.Property`` type is a GEnum class."""
    return isinstance(kind, type) and issubclass(kind, GObject.GEnum)


def enum_default(enum: Any, default: str) -> Any:
    """The value of ``enum`` whose nick is ``default`` (a ``GObject.Property`` default)."""
    for value in enum.__enum_values__.values():
        if value.value_nick == default:
            return value
    raise ValueError(f"{default!r} is not one of {', '.join(nicks(enum))}")


def choice_property(
    name: str,
    *,
    type: Any,
    default: str,
    nick: str,
    blurb: str,
    flags: GObject.ParamFlags,
    setter: Callable[[Any, str], None] | None = None,
) -> GObject.Property:
    """A read-write property of GEnum ``type`` kept as its nick in ``_<name with underscores>``.

    The attribute and Python's ``get_property`` give the nick; ``g_object_get`` the enum value (GObject converts
    the nick the getter returns). ``setter``, when given, is called with the nick instead of storing it.
    """
    attr = "_" + name.replace("-", "_")

    def get(self: Any) -> str:
        return str(getattr(self, attr, default))

    def put(self: Any, value: object) -> None:
        text = nick_of(value)
        if setter is not None:
            setter(self, text)
        else:
            setattr(self, attr, text)

    return GObject.Property(
        getter=get, setter=put, type=type, default=enum_default(type, default), nick=nick, blurb=blurb, flags=flags
    )


# -- pyinfer ---------------------------------------------------------------------------------------------
Backend = choice_enum("PyInferBackend", [
    ("auto", "Automatic: from the model-engine extension"),
    ("torchscript", "TorchScript (.torchscript, .ts, .pt)"),
    ("export", "torch.export program (.pt2)"),
    ("module", "Python factory returning an nn.Module (package.module:callable)"),
    ("onnx", "ONNX Runtime (.onnx)"),
    ("tensorrt", "TensorRT (.engine, .plan; an .onnx model builds a cached engine)"),
    ("triton", "Triton Inference Server (triton://host:port/model, http://host:port/model)"),
])  # fmt: skip
Precision = choice_enum("PyInferPrecision", [
    ("fp32", "32-bit float: the model as saved"),
    ("fp16", "16-bit float"),
    ("bf16", "bfloat16"),
])  # fmt: skip
Compile = choice_enum("PyInferCompile", [
    ("off", "No torch.compile"),
    ("default", "torch.compile, default mode"),
    ("reduce-overhead", "torch.compile with inductor kernels in CUDA graphs"),
    ("max-autotune", "torch.compile, autotuned kernels"),
])  # fmt: skip
Decoder = choice_enum("PyInferDecoder", [
    ("auto", "Automatic: from the model's metadata, output names and shapes"),
    ("yolov8", "YOLOv8, YOLO11: [B, 4+nc, N]"),
    ("yolov5", "YOLOv5, YOLOv7, YOLOX with objectness: [B, N, 5+nc]"),
    ("yolo-e2e", "YOLOv10, YOLO26 end-to-end: [B, K, 6 or 7]"),
    ("yolo-obb", "YOLO rotated boxes: [B, 4+nc+1, N]"),
    ("yolo-seg", "YOLO instance segmentation: detections + mask prototypes"),
    ("yolo-pose", "YOLO pose: boxes with keypoints"),
    ("detr", "RT-DETR, D-FINE: [B, Q, 4+nc]"),
    ("classifier", "Classifier: [B, nc]"),
    ("torchvision", "torchvision detectors (Faster R-CNN, RetinaNet, FCOS, SSD)"),
    ("custom", "The postprocess hook"),
])  # fmt: skip
Meta = choice_enum("PyInferMeta", [
    ("auto", "Automatic: DeepStream on NVMM caps, else GstAnalytics (GStreamer >= 1.24) or ROI meta"),
    ("analytics", "GstAnalytics relation meta"),
    ("roi", "GstVideoRegionOfInterestMeta"),
    ("both", "GstAnalytics and ROI meta"),
    ("deepstream", "DeepStream NvDsObjectMeta through pyservicemaker"),
    ("pyds", "DeepStream NvDsObjectMeta through the legacy pyds bindings"),
])  # fmt: skip
ProcessMode = choice_enum("PyInferProcessMode", [
    ("primary", "Primary: whole frames"),
    ("secondary", "Secondary: the objects of an upstream pyinfer (their crops)"),
])  # fmt: skip
OnError = choice_enum("PyInferOnError", [
    ("fail", "Fail: ERROR on the bus, the pipeline stops"),
    ("skip", "Skip: the frames pass without detections"),
])  # fmt: skip

# -- pytracker -------------------------------------------------------------------------------------------
TrackerIouMode = choice_enum("PyInferTrackerIouMode", [
    ("auto", "Automatic: rotated IoU when detections carry rotated boxes"),
    ("axis", "Axis-aligned enclosing boxes"),
    ("rotated", "Rotated boxes"),
])  # fmt: skip
TrackerCore = choice_enum("PyInferTrackerCore", [
    ("auto", "Automatic: native when built and its ABI matches, else NumPy"),
    ("native", "Native C core"),
    ("numpy", "NumPy core"),
])  # fmt: skip

# -- pymsgconv, pymsgbroker ------------------------------------------------------------------------------
MsgconvMessagePer = choice_enum("PyInferMsgconvMessagePer", [
    ("frame", "One message per frame with all its objects"),
    ("object", "One message per object"),
])  # fmt: skip
MsgbrokerProto = choice_enum("PyInferMsgbrokerProto", [
    ("none", "Unset: pymsgbroker does not start until one is chosen"),
    ("file", "JSON lines appended to a file"),
    ("mqtt", "MQTT (paho-mqtt)"),
    ("redis", "Redis Streams (redis-py)"),
    ("kafka", "Kafka (confluent-kafka)"),
])  # fmt: skip
MsgbrokerDropPolicy = choice_enum("PyInferMsgbrokerDropPolicy", [
    ("oldest", "Drop the longest-waiting message"),
    ("newest", "Drop the new message"),
])  # fmt: skip
MsgbrokerOnConnectError = choice_enum("PyInferMsgbrokerOnConnectError", [
    ("fail", "Fail: ERROR, the pipeline does not start"),
    ("retry", "Retry: WARNING, start anyway and keep reconnecting"),
])  # fmt: skip

# -- pyvlm -----------------------------------------------------------------------------------------------
VlmDropPolicy = choice_enum("PyInferVlmDropPolicy", [
    ("oldest", "Drop the longest-waiting request: the model answers the freshest frames"),
    ("newest", "Drop the request offered"),
])  # fmt: skip
VlmMode = choice_enum("PyInferVlmMode", [
    ("async", "The model runs on its own thread; answers attach to the next frames (the video never waits)"),
    ("sync", "The model answers each offered frame before it leaves (the video waits: offline files, evaluation)"),
])  # fmt: skip
