"""nvinfer configuration files, for ``pyinfer config-file-path=...``: DeepStream's format read, mapped to pyinfer.

A DeepStream user's nvinfer file (GKeyFile syntax: a ``[property]`` group, ``[class-attrs-all]`` and
``[class-attrs-<class id>]`` groups of ``key=value`` lines) gives the values of pyinfer's properties, so that
replacing ``nvinfer`` by ``pyinfer`` in a pipeline is the whole migration. The keys, their checks and their
defaults follow nvinfer's own parser (``gstnvinfer_property_parser.cpp``):

- Paths (``onnx-file``, ``model-engine-file``, ``labelfile-path``) are relative to the file's directory.
- A bad value (not a number, out of nvinfer's range) is a :class:`ConfigFileError` naming the file, the
  group, the key and the problem, as nvinfer refuses such a file at start.
- Keys and values pyinfer cannot honour (a compiled ``custom-lib-path`` parser, ``process-mode=2``, INT8, a
  clustering other than NMS...) are collected in :attr:`NvinferConfig.unsupported`: the element names them
  all in one WARNING. Keys that only tune nvinfer's TensorRT build or its memory, and keys that only matter in
  modes already named there (secondary, classifier), are accepted silently.
- Properties set on the element win over the file (nvinfer's ``is_prop_set``): see
  :meth:`NvinferConfig.for_element`.

No GStreamer here: the element applies the mapping (:mod:`pyinfer.elements.infer`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyinfer.errors import ConfigError
from pyinfer.params import parse_class_ids

MAX_FILE_BYTES = 1 << 20  # an nvinfer file is a few hundred bytes; 1 MiB is not one
#: nvinfer's defaults for a detector's [class-attrs-*] keys (gstnvinfer_property_parser.h).
DEFAULT_PRE_CLUSTER_THRESHOLD = 0.2
DEFAULT_NMS_IOU_THRESHOLD = 0.3
NET_SCALE_FACTOR = 1 / 255  # what pyinfer's letterbox applies: pixels to [0, 1]
MAX_DETECTIONS = 100_000  # pyinfer's max-detections range
PROPERTY_GROUP = "property"
CLASS_ATTRS_PREFIX = "class-attrs-"

_NETWORK_MODES = {0: "fp32", 1: "INT8", 2: "fp16", 3: "BEST"}
_CLUSTER_MODES = {0: "GroupRectangles", 1: "DBSCAN", 2: "NMS", 3: "DBSCAN+NMS hybrid", 4: "no clustering"}
_NETWORK_TYPES = {0: "detector", 1: "classifier", 2: "segmentation", 3: "instance segmentation", 100: "other"}
_COLOR_FORMATS = {0: "RGB", 1: "BGR", 2: "GRAY"}

#: [property] keys accepted silently: TensorRT build and memory tuning, which changes no detection, or
#: keys that only count in modes pyinfer names in the warning when the file selects them (secondary
#: process-mode, classifier and segmentation network types, INT8, encrypted TAO models).
_SILENT = frozenset({
    "workspace-size", "force-implicit-batch-dim", "tensor-meta-pool-size", "auto-inc-mem", "max-gpu-mem-per",
    "scaling-compute-hw", "scaling-filter", "warmup-engine", "stabilize-buffer-count", "strongly-typed",
    "output-io-formats", "layer-device-precision", "use-dla-core", "int8-calib-file", "tlt-model-key",
    "uff-input-blob-name", "uff-input-order", "classifier-async-mode", "classifier-type",
    "segmentation-threshold", "segmentation-output-order", "parse-classifier-func-name",
})  # fmt: skip
#: Secondary mode's object size limits (same names as pyinfer's properties).
_OBJECT_SIZES = (
    "input-object-min-width",
    "input-object-min-height",
    "input-object-max-width",
    "input-object-max-height",
)
#: [property] keys whose presence pyinfer cannot honour, with what it does instead.
_UNSUPPORTED = {
    "custom-lib-path": "a compiled parser library: pyinfer decodes the outputs itself (see decoder-used)",
    "parse-bbox-func-name": "pyinfer decodes the outputs itself (decoder=auto; see decoder-used)",
    "parse-bbox-instance-mask-func-name": "no instance masks",
    "parse-segmentation-func-name": "no segmentation",
    "engine-create-func-name": "no custom engine builder: give onnx-file",
    "custom-network-config": "Darknet .cfg models are not loaded: export to ONNX and give onnx-file",
    "model-file": "Caffe/Darknet weights are not loaded: export to ONNX and give onnx-file",
    "proto-file": "Caffe models are not loaded: export to ONNX and give onnx-file",
    "uff-file": "UFF models are not loaded: export to ONNX and give onnx-file",
    "tlt-encoded-model": "encrypted TAO models are not loaded: export to ONNX and give onnx-file",
    "output-blob-names": "pyinfer reads every output and picks them by shape",
    "filter-out-class-ids": "no class filter",
    "mean-file": "no mean image: pyinfer scales pixels by 1/255",
    "dynamic-properties": "no TensorRT dynamic properties",
    "parse-func": "legacy key: pyinfer decodes the outputs itself",
    "ip-tensor-file": "no input tensor override",
    "op-tensor-files": "no output tensor override",
}
#: [property] switches pyinfer honours when off (their default) and names when on.
_OFF_ONLY = {
    "output-tensor-meta": "no tensor meta output",
    "output-instance-mask": "no instance masks",
    "input-tensor-from-meta": "pyinfer preprocesses the frames itself (no nvdspreprocess tensors)",
    "enable-dla": "no DLA",
    "crop-objects-to-roi-boundary": "no ROI cropping",
    "dump-input-tensor": "no tensor dumps",
    "dump-output-tensor": "no tensor dumps",
    "overwrite-input-tensor": "no tensor override",
    "overwrite-output-tensor": "no tensor override",
    "raw-output-file-write": "no raw output dumps",
    "disable-output-host-copy": "outputs always reach the host",
}
#: [class-attrs-*] keys that only matter for clusterings other than NMS (named through cluster-mode).
_CLASS_SILENT = frozenset({"eps", "group-threshold", "minBoxes", "dbscan-min-score"})
_CLASS_FILTERS = ("roi-top-offset", "roi-bottom-offset", "detected-min-w", "detected-min-h", "detected-max-w",
                  "detected-max-h")  # fmt: skip


class ConfigFileError(ConfigError):
    """The nvinfer file is missing (``missing``), unreadable (``unreadable``), malformed or has a bad value."""

    def __init__(self, message: str, *, missing: bool = False, unreadable: bool = False) -> None:
        super().__init__(message, missing=missing)
        self.unreadable = unreadable


@dataclass(frozen=True)
class NvinferConfig:
    """What an nvinfer file sets, as pyinfer properties.

    Attributes:
        path: the file, absolute.
        properties: pyinfer property name (kebab-case) -> value, in the order of application.
        sources: pyinfer property name -> the key that gave it, e.g. ``[class-attrs-all] topk``.
        unsupported: one entry per key or value pyinfer cannot honour, ``[group] key=value: why``.
        model_problem: why the file names no model pyinfer can load (None when it does).
    """

    path: Path
    properties: dict[str, object]
    sources: dict[str, str]
    unsupported: tuple[str, ...] = ()
    model_problem: str | None = None

    def for_element(self, explicit: Iterable[str]) -> dict[str, object]:
        """The properties to set on an element where the properties in ``explicit`` were set by the user.

        As nvinfer, a property set on the element wins over the file, whatever the order they were set in.

        Raises:
            ConfigFileError: the file names no usable model and ``model-engine`` was not set on the element.
        """
        explicit = set(explicit)
        if self.model_problem is not None and "model-engine" not in explicit:
            raise ConfigFileError(f"config-file-path {self.path}: {self.model_problem}")
        return {name: value for name, value in self.properties.items() if name not in explicit}

    def warning(self) -> str:
        """The text of the one WARNING naming what is not honoured ('' when everything is)."""
        if not self.unsupported:
            return ""
        return (f"config-file-path {self.path}: pyinfer ignores these nvinfer keys or values: "
                + "; ".join(self.unsupported))  # fmt: skip


# -- GKeyFile syntax ---------------------------------------------------------------------------------------


@dataclass
class _Entry:
    line: int
    value: str


@dataclass
class KeyFile:
    """A parsed GKeyFile: group -> key -> raw value with its line (the last of repeated keys, as GLib)."""

    path: Path
    groups: dict[str, dict[str, _Entry]] = field(default_factory=dict)

    def where(self, group: str, key: str) -> str:
        return f"config-file-path {self.path}: [{group}] {key} (line {self.groups[group][key].line})"

    def raw(self, group: str, key: str) -> str:
        return self.groups[group][key].value

    def has(self, group: str, key: str) -> bool:
        return key in self.groups.get(group, {})

    def string(self, group: str, key: str) -> str:
        return _unescape(self.raw(group, key), self.where(group, key))

    def integer(self, group: str, key: str) -> int:
        text = self.raw(group, key).strip()
        try:
            value = int(text, 10)
        except ValueError:
            raise ConfigFileError(f"{self.where(group, key)}: {text!r} is not an integer") from None
        if not -(2**31) <= value < 2**31:
            raise ConfigFileError(f"{self.where(group, key)}: {text} is out of the integer range")
        return value

    def number(self, group: str, key: str) -> float:
        text = self.raw(group, key).strip()
        try:
            value = float(text)
        except ValueError:
            raise ConfigFileError(f"{self.where(group, key)}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigFileError(f"{self.where(group, key)}: {text!r} is not a finite number")
        return value

    def boolean(self, group: str, key: str) -> bool:
        text = self.raw(group, key).strip()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ConfigFileError(f"{self.where(group, key)}: {text!r} is not a boolean (true, false, 1 or 0)")

    def integers(self, group: str, key: str) -> list[int]:
        items = _split_list(self.raw(group, key))
        try:
            return [int(item.strip(), 10) for item in items]
        except ValueError:
            raise ConfigFileError(f"{self.where(group, key)}: {self.raw(group, key)!r} is not a ';'-separated "
                                  "list of integers") from None  # fmt: skip

    def numbers(self, group: str, key: str) -> list[float]:
        items = _split_list(self.raw(group, key))
        try:
            values = [float(item.strip()) for item in items]
        except ValueError:
            values = [math.nan]
        if not all(math.isfinite(v) for v in values):
            raise ConfigFileError(f"{self.where(group, key)}: {self.raw(group, key)!r} is not a ';'-separated "
                                  "list of numbers")  # fmt: skip
        return values


def parse_key_file(text: str, path: Path) -> KeyFile:
    """Parse GKeyFile text: ``[group]`` headers, ``key=value`` lines, ``#`` comment lines, blank lines.

    As GLib: whitespace around keys and before values is dropped, a ``#`` after a value is part of the value,
    repeated groups merge and a repeated key keeps its last value.

    Raises:
        ConfigFileError: a line that is none of these, a key before the first group, an empty key or group name.
    """
    kf = KeyFile(path)
    group: str | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"config-file-path {path}: line {number}"
        if stripped.startswith("["):
            if not stripped.endswith("]") or "]" in stripped[1:-1] or "[" in stripped[1:-1]:
                raise ConfigFileError(f"{where}: {stripped!r} is not a [group] header")
            group = stripped[1:-1]
            if not group:
                raise ConfigFileError(f"{where}: empty group name")
            kf.groups.setdefault(group, {})
            continue
        key, eq, value = stripped.partition("=")
        if not eq:
            raise ConfigFileError(f"{where}: {stripped!r} is not a key=value pair, a [group] header or a comment")
        key = key.strip()
        if not key:
            raise ConfigFileError(f"{where}: {stripped!r} has no key before '='")
        if group is None:
            raise ConfigFileError(f"{where}: {key!r} comes before the first [group] header")
        kf.groups[group][key] = _Entry(number, value.strip())
    return kf


def _unescape(value: str, where: str) -> str:
    out = []
    chars = iter(value)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, "")
        escaped = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\", ";": ";"}.get(nxt)
        if escaped is None:
            raise ConfigFileError(f"{where}: invalid escape sequence '\\{nxt}' in {value!r}")
        out.append(escaped)
    return "".join(out)


def _split_list(value: str) -> list[str]:
    items = value.split(";")
    if items and items[-1].strip() == "":  # GLib allows (and writes) a trailing separator
        items.pop()
    return items


def read_key_file(path: str | Path) -> KeyFile:
    """Read and parse a GKeyFile.

    Raises:
        ConfigFileError: missing (``missing``), not a regular file or unreadable (``unreadable``), larger than
            :data:`MAX_FILE_BYTES`, not UTF-8, or malformed.
    """
    p = Path(path)
    try:
        if not p.exists():
            raise ConfigFileError(f"config-file-path {path} does not exist", missing=True)
        if not p.is_file():
            raise ConfigFileError(f"config-file-path {path} is not a regular file", unreadable=True)
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ConfigFileError(f"config-file-path {path} is larger than {MAX_FILE_BYTES} bytes: not an nvinfer "
                                  "config file")  # fmt: skip
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"config-file-path {path} cannot be read: {exc.strerror or exc}",
                              unreadable=True) from exc  # fmt: skip
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"config-file-path {path} is not UTF-8 text (byte {exc.start})") from None
    return parse_key_file(text.replace("\r\n", "\n"), p.absolute())


# -- mapping -------------------------------------------------------------------------------------------------


class _Mapper:
    def __init__(self, kf: KeyFile) -> None:
        self.kf = kf
        self.base = kf.path.parent
        self.props: dict[str, object] = {}
        self.sources: dict[str, str] = {}
        self.unsupported: list[str] = []

    def set(self, name: str, value: object, group: str, key: str) -> None:
        self.props[name] = value
        self.sources[name] = f"[{group}] {key}"

    def skip(self, group: str, key: str, why: str) -> None:
        self.unsupported.append(f"[{group}] {key}={self.kf.raw(group, key)} ({why})")

    def path(self, group: str, key: str) -> Path:
        value = self.kf.string(group, key)
        if not value:
            raise ConfigFileError(f"{self.kf.where(group, key)}: empty path")
        return self.base / value  # an absolute value stays as it is

    def choice(self, group: str, key: str, table: dict[int, str]) -> int:
        value = self.kf.integer(group, key)
        if value not in table:
            allowed = ", ".join(f"{k} ({v})" for k, v in table.items())
            raise ConfigFileError(f"{self.kf.where(group, key)}: {value} is not one of {allowed}")
        return value

    def ranged(self, group: str, key: str, lo: int, hi: int) -> int:
        value = self.kf.integer(group, key)
        if not lo <= value <= hi:
            raise ConfigFileError(f"{self.kf.where(group, key)}: {value} is out of range [{lo}, {hi}]")
        return value


def read_nvinfer_config(path: str | Path) -> NvinferConfig:
    """Read an nvinfer config file and map it to pyinfer's properties.

    Raises:
        ConfigFileError: see :func:`read_key_file`; no ``[property]`` group; a bad value (naming group and key).
    """
    kf = read_key_file(path)
    return map_key_file(kf)


def map_key_file(kf: KeyFile) -> NvinferConfig:
    """Map a parsed nvinfer file (see :func:`read_nvinfer_config`)."""
    if PROPERTY_GROUP not in kf.groups:
        raise ConfigFileError(f"config-file-path {kf.path}: no [{PROPERTY_GROUP}] group (nvinfer requires it)")
    m = _Mapper(kf)
    g = PROPERTY_GROUP
    keys = kf.groups[g]
    has = keys.__contains__

    network_type = 0
    if has("network-type"):
        network_type = m.choice(g, "network-type", _NETWORK_TYPES)
    elif has("is-classifier"):  # nvinfer's legacy key
        network_type = 1 if kf.boolean(g, "is-classifier") else 0
    detector = network_type in (0, 3)
    for key in keys:
        if key in ("network-type", "is-classifier"):
            continue
        _map_property_key(m, key, network_type)
    if network_type == 1:
        m.set("decoder", "classifier", g, "network-type")
    elif network_type != 0:
        m.skip(g, "network-type", f"{_NETWORK_TYPES[network_type]}: pyinfer runs detectors and classifiers")
    _map_model(m)
    _map_preprocessing(m)
    num_classes = m.ranged(g, "num-detected-classes", 0, 2**31 - 1) if has("num-detected-classes") else None
    if detector:
        _map_class_attrs(m, num_classes)
    for group in kf.groups:
        if group != PROPERTY_GROUP and not group.startswith(CLASS_ATTRS_PREFIX):
            m.unsupported.append(f"[{group}] (not an nvinfer group)")
    problem = m.props.pop("_model_problem", None)
    return NvinferConfig(kf.path, m.props, m.sources, tuple(m.unsupported),
                         str(problem) if problem is not None else None)  # fmt: skip


def _map_property_key(m: _Mapper, key: str, network_type: int) -> None:
    kf, g = m.kf, PROPERTY_GROUP
    if key == "batch-size":
        m.set("batch-size", m.ranged(g, key, 1, 1024), g, key)
    elif key == "interval":
        m.set("interval", m.ranged(g, key, 0, 1_000_000), g, key)
    elif key == "gie-unique-id":
        m.set("unique-id", m.ranged(g, key, 1, 2**31 - 1), g, key)
    elif key == "gpu-id":
        gpu = m.ranged(g, key, 0, 1024)
        if gpu:  # 0 is what device=auto takes on a GPU machine; on one without CUDA it runs on the CPU
            m.set("device", f"cuda:{gpu}", g, key)
    elif key == "labelfile-path":
        m.set("labels-file", str(m.path(g, key)), g, key)
    elif key == "network-mode":
        mode = m.choice(g, key, _NETWORK_MODES)
        if mode in (0, 2):
            m.set("precision", _NETWORK_MODES[mode], g, key)
        else:
            m.skip(g, key, f"{_NETWORK_MODES[mode]}: pyinfer runs fp32, fp16 or bf16; runs fp32 (set "
                   "precision=fp16 for a faster GPU run)")  # fmt: skip
    elif key == "process-mode":
        m.set("process-mode", "secondary" if m.choice(g, key, {1: "primary", 2: "secondary"}) == 2 else "primary",
              g, key)  # fmt: skip
    elif key == "operate-on-gie-id":
        m.set(key, m.ranged(g, key, -1, 2**31 - 1), g, key)
    elif key == "operate-on-class-ids":
        text = kf.string(g, key)
        try:
            parse_class_ids(text)
        except ConfigError as exc:
            raise ConfigFileError(f"{kf.where(g, key)}: {exc}") from None
        m.set(key, text, g, key)
    elif key in _OBJECT_SIZES:
        m.set(key, m.ranged(g, key, 0, 32767), g, key)
    elif key == "secondary-reinfer-interval":
        m.set(key, m.ranged(g, key, 0, 1_000_000), g, key)
    elif key == "cluster-mode":
        mode = m.choice(g, key, _CLUSTER_MODES)
        if mode in (0, 1, 3):
            m.skip(g, key, f"{_CLUSTER_MODES[mode]}: pyinfer clusters with NMS")
    elif key == "enable-dbscan":
        if not m.kf.has(g, "cluster-mode") and kf.boolean(g, key):
            m.skip(g, key, "DBSCAN: pyinfer clusters with NMS")
    elif key == "classifier-threshold":
        value = kf.number(g, key)
        if value < 0:
            raise ConfigFileError(f"{kf.where(g, key)}: {value} is negative")
        if network_type == 1:
            m.set("confidence-threshold", min(value, 1.0), g, key)
    elif key in ("infer-dims", "input-dims", "uff-input-dims"):
        _map_dims(m, key)
    elif key in (
        "onnx-file",
        "model-engine-file",
        "num-detected-classes",
        "net-scale-factor",
        "offsets",
        "model-color-format",
        "maintain-aspect-ratio",
        "symmetric-padding",
        "network-input-order",
    ):
        pass  # read below, together with the keys they depend on
    elif key in _UNSUPPORTED:
        m.skip(g, key, _UNSUPPORTED[key])
    elif key in _OFF_ONLY:
        if kf.integer(g, key) if key == "disable-output-host-copy" else kf.boolean(g, key):
            m.skip(g, key, _OFF_ONLY[key])
    elif key not in _SILENT:
        m.skip(g, key, "not an nvinfer key")


def _map_dims(m: _Mapper, key: str) -> None:
    kf, g = m.kf, PROPERTY_GROUP
    if key != "infer-dims" and kf.has(g, "infer-dims"):
        return  # nvinfer: infer-dims wins over the legacy keys
    dims = kf.integers(g, key)
    want = 3 if key == "infer-dims" else 4
    if len(dims) != want:
        raise ConfigFileError(f"{kf.where(g, key)}: {len(dims)} values; expected {want} "
                              f"({'c;h;w' if want == 3 else 'c;h;w;order'})")  # fmt: skip
    c, h, w = dims[:3]
    if not (1 <= h <= 16384 and 1 <= w <= 16384 and c >= 1):
        raise ConfigFileError(f"{kf.where(g, key)}: {kf.raw(g, key)} is not a channels;height;width size")
    m.set("input-height", h, g, key)
    m.set("input-width", w, g, key)
    if c != 3:
        m.skip(g, key, f"{c} channels: pyinfer feeds 3 (RGB)")


def _map_model(m: _Mapper) -> None:
    """nvinfer takes model-engine-file when the engine exists, else builds one from onnx-file (pyinfer runs
    the ONNX file as it is, with ONNX Runtime; backend=tensorrt builds and caches an engine as nvinfer does)."""
    kf, g = m.kf, PROPERTY_GROUP
    engine = m.path(g, "model-engine-file") if kf.has(g, "model-engine-file") else None
    onnx = m.path(g, "onnx-file") if kf.has(g, "onnx-file") else None
    if engine is not None and (engine.exists() or onnx is None):
        m.set("model-engine", str(engine), g, "model-engine-file")
    elif onnx is not None:
        m.set("model-engine", str(onnx), g, "onnx-file")
    else:
        others = [k for k in ("custom-network-config", "tlt-encoded-model", "uff-file", "model-file") if kf.has(g, k)]
        what = f"only {', '.join(others)}, which pyinfer cannot load" if others else "no model"
        m.props["_model_problem"] = (f"[{g}] names {what}: give onnx-file or model-engine-file (a model pyinfer "
                                     "loads: .onnx, .engine, .torchscript, ...), or set model-engine")  # fmt: skip


def _map_preprocessing(m: _Mapper) -> None:
    """Effective nvinfer preprocessing (its defaults when a key is absent) against what pyinfer does."""
    kf, g = m.kf, PROPERTY_GROUP
    if kf.has(g, "net-scale-factor"):
        scale = kf.number(g, "net-scale-factor")
        if not math.isclose(scale, NET_SCALE_FACTOR, rel_tol=1e-5):
            m.skip(g, "net-scale-factor", f"pyinfer scales pixels by 1/255 = {NET_SCALE_FACTOR:.10f}")
    else:
        m.unsupported.append(f"[{g}] net-scale-factor absent (nvinfer then feeds pixels unscaled, 0-255; "
                             "pyinfer scales them by 1/255)")  # fmt: skip
    if kf.has(g, "offsets"):
        offsets = kf.numbers(g, "offsets")
        if len(offsets) > 4:
            raise ConfigFileError(f"{kf.where(g, 'offsets')}: {len(offsets)} values; at most 4 (one per channel)")
        if any(offsets):
            m.skip(g, "offsets", "pyinfer subtracts no per-channel mean")
    if kf.has(g, "model-color-format"):
        fmt = m.choice(g, "model-color-format", _COLOR_FORMATS)
        if fmt != 0:
            m.skip(g, "model-color-format", f"{_COLOR_FORMATS[fmt]}: pyinfer feeds RGB")
    if kf.has(g, "network-input-order") and m.choice(g, "network-input-order", {0: "NCHW", 1: "NHWC"}) == 1:
        m.skip(g, "network-input-order", "pyinfer feeds NCHW")
    keep_ratio = kf.boolean(g, "maintain-aspect-ratio") if kf.has(g, "maintain-aspect-ratio") else False
    symmetric = kf.boolean(g, "symmetric-padding") if kf.has(g, "symmetric-padding") else False
    if m.props.get("process-mode") == "secondary":  # object crops are stretched or padded as the file says
        m.set("maintain-aspect-ratio", keep_ratio, g, "maintain-aspect-ratio")
        if keep_ratio and not symmetric:
            why = "nvinfer pads object crops right and bottom; pyinfer centres them"
            if kf.has(g, "symmetric-padding"):
                m.skip(g, "symmetric-padding", why)
            else:
                m.unsupported.append(f"[{g}] symmetric-padding absent ({why})")
        return
    resize = "pyinfer letterboxes, centred (DETR-style decoders stretch)"
    if not keep_ratio:
        where = "maintain-aspect-ratio" + ("" if kf.has(g, "maintain-aspect-ratio") else " absent")
        why = f"nvinfer stretches frames to the input; {resize}"
        if kf.has(g, "maintain-aspect-ratio"):
            m.skip(g, where, why)
        else:
            m.unsupported.append(f"[{g}] {where} ({why})")
    elif not symmetric:
        why = f"nvinfer pads right and bottom; {resize}"
        if kf.has(g, "symmetric-padding"):
            m.skip(g, "symmetric-padding", why)
        else:
            m.unsupported.append(f"[{g}] symmetric-padding absent ({why})")


def _class_values(m: _Mapper, group: str) -> dict[str, float]:
    """One [class-attrs-*] group's detection values, checked as nvinfer does; other keys named or accepted."""
    kf = m.kf
    values: dict[str, float] = {}
    for key in kf.groups[group]:
        if key in ("pre-cluster-threshold", "threshold", "post-cluster-threshold"):
            value = kf.number(group, key)
            if value < 0:
                raise ConfigFileError(f"{kf.where(group, key)}: {value} is negative")
            values["post" if key == "post-cluster-threshold" else "pre"] = value
        elif key == "nms-iou-threshold":
            value = kf.number(group, key)
            if not 0 <= value <= 1:
                raise ConfigFileError(f"{kf.where(group, key)}: {value} is not between 0 and 1")
            values["iou"] = value
        elif key == "topk":
            topk = kf.integer(group, key)
            if topk < 0:
                raise ConfigFileError(f"{kf.where(group, key)}: {topk} is negative")
            values["topk"] = topk
        elif key in _CLASS_SILENT:
            kf.number(group, key)  # checked, used only by clusterings pyinfer names through cluster-mode
        elif key in _CLASS_FILTERS:
            if kf.integer(group, key) < 0:
                raise ConfigFileError(f"{kf.where(group, key)}: negative")
            if kf.integer(group, key):
                m.skip(group, key, "no ROI or size filter")
        elif key in ("border-color", "bg-color"):
            if len(kf.numbers(group, key)) != 4:
                raise ConfigFileError(f"{kf.where(group, key)}: expected 4 numbers r;g;b;a")
            m.skip(group, key, "colours are the drawing element's (pyosd, nvdsosd)")
        else:
            m.skip(group, key, "not an nvinfer class-attrs key")
    return values


def _map_class_attrs(m: _Mapper, num_classes: int | None) -> None:
    kf = m.kf
    group = CLASS_ATTRS_PREFIX + "all"
    values = _class_values(m, group) if group in kf.groups else {}
    src = group if group in kf.groups else PROPERTY_GROUP  # defaults are nvinfer's, set by its [property] parse
    pre = values.get("pre", DEFAULT_PRE_CLUSTER_THRESHOLD)
    post = values.get("post", 0.0)
    # NMS keeps scores as they are, so filtering after it at `post` keeps what filtering before it keeps.
    conf_key = "post-cluster-threshold" if post > pre else "pre-cluster-threshold"
    m.set("confidence-threshold", min(max(pre, post), 1.0), src, conf_key)  # >1 drops all, as 1.0 does here
    mode = kf.integer(PROPERTY_GROUP, "cluster-mode") if kf.has(PROPERTY_GROUP, "cluster-mode") else 2
    iou = 1.0 if mode == 4 else values.get("iou", DEFAULT_NMS_IOU_THRESHOLD)  # 1.0: NMS drops nothing
    m.set("nms-iou-threshold", iou, src, "nms-iou-threshold" if mode != 4 else "cluster-mode")
    topk = values.get("topk", 0)
    if topk > 0:
        m.set("max-detections", int(min(topk, MAX_DETECTIONS)), group, "topk")
    effective = {"pre": pre, "post": post, "iou": values.get("iou", DEFAULT_NMS_IOU_THRESHOLD), "topk": topk}
    names = {"pre": "pre-cluster-threshold", "post": "post-cluster-threshold", "iou": "nms-iou-threshold",
             "topk": "topk"}  # fmt: skip
    for name in kf.groups:
        if not name.startswith(CLASS_ATTRS_PREFIX) or name == group:
            continue
        suffix = name[len(CLASS_ATTRS_PREFIX) :]
        if not suffix.isdigit():
            raise ConfigFileError(f"config-file-path {kf.path}: [{name}]: class attributes go in "
                                  f"[{CLASS_ATTRS_PREFIX}<class id>] or [{group}]")  # fmt: skip
        if num_classes is not None and int(suffix) >= num_classes:
            raise ConfigFileError(f"config-file-path {kf.path}: [{name}]: class {int(suffix)} but "
                                  f"num-detected-classes={num_classes}")  # fmt: skip
        for key, value in _class_values(m, name).items():
            if value != effective[key]:
                m.unsupported.append(f"[{name}] {names[key]}={kf.raw(name, _raw_key(kf, name, key))} (pyinfer "
                                     f"applies one value to every class: {effective[key]:g})")  # fmt: skip


def _raw_key(kf: KeyFile, group: str, short: str) -> str:
    if short == "pre":
        return "pre-cluster-threshold" if kf.has(group, "pre-cluster-threshold") else "threshold"
    return {"post": "post-cluster-threshold", "iou": "nms-iou-threshold", "topk": "topk"}[short]
