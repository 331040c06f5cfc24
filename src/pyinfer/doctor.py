"""``pyinfer doctor``: what pyinfer can use here, DeepStream features by ``hasattr``, and a DeepStream self-test.

Features are detected by looking for the attributes pyinfer uses, never from version strings
(``pyservicemaker.__version__`` is '0.0.1' even in DeepStream 9.1).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyinfer import __version__

OUR_ELEMENTS = ("pyinfer", "pytracker", "pyosd", "pymsgconv", "pymsgbroker", "pyvlm")
BROKER_CLIENTS = (("paho.mqtt.client", "MQTT (paho-mqtt)"), ("redis", "Redis (redis)"),
                  ("confluent_kafka", "Kafka (confluent-kafka)"))  # fmt: skip
NVIDIA_ELEMENTS = ("nvstreammux", "nvvideoconvert", "nvinfer", "nvtracker", "nvdsosd", "nvmsgconv", "nvmsgbroker")
TRACKER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so"


def _import(name: str) -> tuple[Any, str]:
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # a broken install shows up here, not only a missing one
        return None, f"{type(exc).__name__}: {exc}"


def _has(obj: Any, *path: str) -> bool:
    for name in path:
        if obj is None or not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def libpython_wanted(loader: str | os.PathLike[str]) -> list[str]:
    """The libpython files the gst-python plugin loader opens at run time, as written in its binary.

    Outside a Python process (gst-launch-1.0, gst-plugin-scanner) the loader opens libpython itself: by full
    path on 1.22 (``/usr/lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.so``), by name on 1.26
    (``libpython3.13.so``). On Debian both come only with ``libpython3-dev``.
    """
    data = Path(loader).read_bytes()
    return sorted({m.decode() for m in re.findall(rb"[\w/.+-]*libpython3\.\d+\.so(?![\w.])", data)})


def _library_exists(name: str) -> bool:
    """Whether ``name`` (a path, or a file name the dynamic loader searches for) exists."""
    if os.path.isabs(name):
        return os.path.exists(name)
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [*os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep), sysconfig.get_config_var("LIBDIR") or ""]
    for top in ("/usr/local/lib", "/usr/lib", "/lib", "/usr/lib64", "/lib64"):
        dirs += [os.path.join(top, multiarch), top] if multiarch else [top]
    return any(d and os.path.exists(os.path.join(d, name)) for d in dirs)


def loader_state(registry: Any) -> str:
    """The gst-python plugin loader's state in ``registry`` (a ``Gst.Registry``), with the fix when it failed."""
    if registry.find_plugin("python") is not None:
        return "present"
    failed = next(
        (f for f in (p.get_filename() for p in registry.get_plugin_list()) if f and "libgstpython" in f), None
    )
    if failed is None:
        return "MISSING (apt install gstreamer1.0-python3-plugin-loader)"
    try:
        missing = [lib for lib in libpython_wanted(failed) if not _library_exists(lib)]
    except OSError:
        missing = []
    retry = "then delete ~/.cache/gstreamer-1.0/registry.*.bin (GStreamer caches a failed plugin)"
    if missing:
        return (
            f"FAILED to load {failed}: it opens {missing[0]}, which is not installed "
            f"(apt install libpython3-dev); {retry}"
        )
    return f"FAILED to load {failed} (GST_DEBUG=python:6 gst-inspect-1.0 {failed} says why); {retry}"


def default_registry() -> Path:
    """The registry cache GStreamer uses in this environment: GST_REGISTRY, else the per-user default."""
    if os.environ.get("GST_REGISTRY"):
        return Path(os.environ["GST_REGISTRY"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gstreamer-1.0"
    found = sorted(cache.glob("registry.*.bin"))
    import platform

    return found[0] if found else cache / f"registry.{platform.machine()}.bin"


def scan_elements(env: dict[str, str], names: tuple[str, ...] = OUR_ELEMENTS) -> dict[str, bool]:
    """Which of ``names`` ``gst-inspect-1.0 --exists`` finds in ``env`` (its registry, its plugin path)."""
    import subprocess

    found = {}
    for name in names:
        try:
            out = subprocess.run(["gst-inspect-1.0", "--exists", name], env=env, capture_output=True, timeout=120,
                                 check=False)  # fmt: skip
            found[name] = out.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            found[name] = False
    return found


def _path_has(var: str, folder: Path) -> bool:
    return any(p and Path(p).resolve() == folder.resolve() for p in os.environ.get(var, "").split(os.pathsep))


def element_discovery() -> Iterator[str]:
    """Whether gst-inspect-1.0/gst-launch-1.0 find pyinfer's elements from this shell: in a fresh scan (a
    temporary registry), and in the registry cache they will really use; what to do when they do not."""
    import tempfile

    from pyinfer.cli import plugin_path

    with tempfile.TemporaryDirectory(prefix="pyinfer-doctor-") as tmp:
        fresh = scan_elements({**os.environ, "GST_REGISTRY": str(Path(tmp) / "registry.bin")})
    missing = [n for n, ok in fresh.items() if not ok]
    fix = 'run eval "$(pyinfer env)" in this shell'
    if not missing:
        yield f"elements in a fresh plugin scan: all found ({', '.join(fresh)})"
    else:
        if not _path_has("GST_PLUGIN_PATH", plugin_path()):
            why = f"GST_PLUGIN_PATH does not include {plugin_path()}: {fix}"
        elif not (_path_has("PYINFER_PYTHONPATH", Path(__file__).resolve().parent.parent)
                  or _path_has("PYTHONPATH", Path(__file__).resolve().parent.parent)):  # fmt: skip
            why = f"the plugin loader's Python cannot import pyinfer (no PYINFER_PYTHONPATH or PYTHONPATH): {fix}"
        else:
            why = "the plugin files failed to import: GST_DEBUG=python:6 gst-inspect-1.0 pyinfer shows the error"
        yield f"elements in a fresh plugin scan: NOT found: {', '.join(missing)} ({why})"
        return
    registry = default_registry()
    cached = scan_elements(dict(os.environ))
    stale = [n for n, ok in cached.items() if not ok]
    if not stale:
        yield f"elements in the registry cache ({registry}): all found"
    else:
        yield (
            f"elements in the registry cache ({registry}): NOT found: {', '.join(stale)}, though a fresh scan "
            f"finds them: the cache remembers an earlier failed scan; delete it (rm {registry}) and run again"
        )


def broker_clients() -> dict[str, bool]:
    """The message-broker client libraries pymsgbroker can use here."""
    return {label: importlib.util.find_spec(mod.split(".")[0]) is not None and _import(mod)[0] is not None
            for mod, label in BROKER_CLIENTS}  # fmt: skip


def deepstream_features() -> dict[str, bool]:
    """The DeepStream binding features pyinfer uses, each detected by hasattr."""
    sm, _ = _import("pyservicemaker")
    pyds, _ = _import("pyds")
    return {
        "pyservicemaker.Buffer.extract (zero-copy frames)": _has(sm, "Buffer", "extract"),
        "pyservicemaker BatchMetadata.acquire_object_meta": _has(sm, "BatchMetadata", "acquire_object_meta"),
        "pyservicemaker osd.Rect.rotation_angle (DS >= 9 rotated boxes)": _has(sm, "osd", "Rect", "rotation_angle"),
        "pyservicemaker UserMetadata.set_user_data_json": _has(sm, "UserMetadata", "set_user_data_json"),
        "pyservicemaker acquire_event_message_meta (event-meta)": _has(
            sm, "BatchMetadata", "acquire_event_message_meta"
        ),
        "pyds NvDsFrameMeta.bInferDone (mark-inferred)": _has(pyds, "NvDsFrameMeta", "bInferDone"),
        "pyds get_nvds_buf_surface_gpu (zero-copy frames, x86)": _has(pyds, "get_nvds_buf_surface_gpu"),
        "pyds nvds_acquire_meta_lock": _has(pyds, "nvds_acquire_meta_lock"),
    }


def _native_state(used: bool, path: Path, fallback: str) -> str:
    """One C helper's line: in use (and which file), or why not and what runs instead."""
    if used:
        return f"in use ({path})"
    if os.environ.get("PYINFER_NO_NATIVE") == "1":
        return f"not in use: PYINFER_NO_NATIVE=1 ({fallback} path)"
    if not path.exists():
        return f"not built ({fallback} path; `make setup` or `pip install` builds {path.name})"
    return f"not in use: {path} did not load or failed its ABI check, see the log ({fallback} path)"


def _analytics_native_state() -> str:
    """The GstAnalytics reader's C helper (:mod:`pyinfer.meta._analytics_native`): in use, or why not."""
    from pyinfer.meta import _analytics_native, analytics

    api = analytics._api()
    if api is None:
        return "not used: no GstAnalytics here (GStreamer >= 1.24 with libgstanalytics-1.0)"
    lib = _analytics_native.load()
    state = _native_state(lib is not None, _analytics_native.LIB_PATH, "ctypes")
    if lib is not None and analytics._native(api) is None:
        state = "not in use: built for another GStreamer (oriented OD Mtds differ), see the log (ctypes path)"
    return state


def report() -> Iterator[str]:
    """The doctor's lines."""
    from pyinfer._gi import Gst, ensure_init

    ensure_init()
    yield f"pyinfer {__version__}  python {sys.version.split()[0]}  ({sys.executable})"
    yield f"GStreamer {Gst.version_string()}"
    yield f"gst-python plugin loader: {loader_state(Gst.Registry.get())}"
    for mod in ("torch", "torchvision", "onnxruntime", "tensorrt", "pyservicemaker", "pyds"):
        yield f"{mod}: {'available' if importlib.util.find_spec(mod) else 'absent'}"
    torch, err = _import("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
        where = f"available: {torch.cuda.get_device_name(0)}" if cuda else "not available"
        yield f"torch {torch.__version__}, CUDA {where}"
    else:
        yield f"torch: cannot import ({err})"
    from pyinfer.meta import _roi_native as meta_native
    from pyinfer.meta import roi
    from pyinfer.track import _native as track_native

    meta = _native_state(meta_native.load() is not None, meta_native.LIB_PATH, "ctypes/PyGObject")
    if meta_native.load() is not None and roi._native() is None:  # it works on top of the ctypes path
        meta = "not in use: the ctypes path it works with is not usable here (PyGObject path)"
    yield f"native metadata helper: {meta}"
    yield f"native analytics helper: {_analytics_native_state()}"
    track = _native_state(track_native.load() is not None, track_native.LIB_PATH, "NumPy tracker")
    yield f"native tracker core: {track}"
    for label, ok in broker_clients().items():
        yield f"broker client {label}: {'available' if ok else 'absent (the brokers / kafka extra of pyinfer-gst)'}"
    yield from element_discovery()
    from pyinfer.frames.deepstream import deepstream_version

    yield f"DeepStream install: {deepstream_version() or 'not found'}"
    for name in NVIDIA_ELEMENTS:
        yield f"element {name}: {'found' if Gst.ElementFactory.find(name) else 'absent'}"
    for feature, ok in deepstream_features().items():
        yield f"{feature}: {'yes' if ok else 'no'}"


def deepstream_selftest(frames: int = 30, width: int = 640, height: int = 480) -> tuple[bool, bool, str]:
    """Run scene frames through nvstreammux → pyinfer → nvtracker and check our objects get track ids.

    Returns:
        (ran, passed, text); ``ran`` is False with the reason when DeepStream is not there.
    """
    from pyinfer._gi import Gst, ensure_init

    ensure_init()
    missing = [n for n in ("nvstreammux", "nvvideoconvert", "nvtracker") if Gst.ElementFactory.find(n) is None]
    if missing:
        return False, False, f"not run: DeepStream elements absent ({', '.join(missing)})"
    sm, err_sm = _import("pyservicemaker")
    pyds, err_pyds = _import("pyds")
    if sm is None and pyds is None:
        return False, False, f"not run: no DeepStream Python bindings ({err_sm}; {err_pyds})"
    import pyinfer
    from pyinfer.scene import Scene
    from pyinfer.zoo import get_model

    pyinfer.register()
    uid = 77
    desc = (
        f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={width},height={height},framerate=30/1 ! "
        "videoconvert ! nvvideoconvert ! video/x-raw(memory:NVMM),format=NV12 ! m.sink_0 "
        f"nvstreammux name=m batch-size=1 width={width} height={height} batched-push-timeout=40000 ! "
        "nvvideoconvert ! video/x-raw(memory:NVMM),format=RGB ! "
        f"pyinfer model-engine={get_model().path} unique-id={uid} ! "
        "nvvideoconvert ! video/x-raw(memory:NVMM),format=NV12 ! "
        f"nvtracker ll-lib-file={TRACKER_LIB} tracker-width=640 tracker-height=384 ! fakesink name=sink"
    )
    pipeline = Gst.parse_launch(desc)
    counts = {"objects": 0, "tracked": 0, "frames": 0}

    def probe(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buf = info.get_buffer()
        if sm is not None:
            wrapper = sm.Buffer(buf)
            for fm in wrapper.batch_meta.frame_items:
                counts["frames"] += 1
                for om in fm.object_items:
                    if om.unique_component_id == uid:
                        counts["objects"] += 1
                        counts["tracked"] += om.object_id != 0xFFFF_FFFF_FFFF_FFFF
            del wrapper
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    src = pipeline.get_by_name("src")
    scene = Scene(11, width, height)
    pipeline.set_state(Gst.State.PLAYING)
    for i in range(frames):
        img = scene.frame(i)[0]
        buf = Gst.Buffer.new_wrapped(img.tobytes())
        buf.pts = i * Gst.SECOND // 30
        buf.duration = Gst.SECOND // 30
        src.emit("push-buffer", buf)
    src.emit("end-of-stream")
    msg = pipeline.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None:
        return True, False, "FAILED: no EOS within 60 s"
    if msg.type == Gst.MessageType.ERROR:
        err, debug = msg.parse_error()
        return True, False, f"FAILED: {err.message} ({debug})"
    ok = counts["frames"] > 0 and counts["objects"] > 0 and counts["tracked"] > 0
    text = (f"{counts['frames']} frames, {counts['objects']} pyinfer objects after nvtracker, "
            f"{counts['tracked']} with track ids")  # fmt: skip
    return True, ok, ("passed: " if ok else "FAILED: ") + text
