"""backend=triton: the model runs on a Triton Inference Server; letterbox and decode stay in pyinfer.

``model-engine`` names the server and the model as a URL::

    triton://host:8001/model          gRPC (8001 is Triton's gRPC port)
    grpc://host:8001/model/2          gRPC, model version 2 (default: the server's choice)
    http://host:8000/model            HTTP/REST
    ...?timeout=5&shm=off&connect-timeout=10

Query options: ``timeout`` (seconds one request may take, default 10: a slow server fails the batch, never
blocks it forever), ``connect-timeout`` (seconds to wait for the server and model to be ready at start,
default 5), ``shm``: how the input tensor reaches a server on this machine's loopback address:

- ``auto`` (default): CUDA shared memory when the element runs on a GPU (the letterboxed tensor is copied
  device-to-device into a region the server opened with ``cudaIpcOpenMemHandle``: no trip through host memory),
  else system shared memory; where the chosen kind cannot be set up (a server built without GPU support, no CUDA
  IPC), the next one (system shared memory, then the wire), with a WARNING; over the wire for other hosts;
- ``cuda`` / ``system``: that kind only, an error at start if the server refuses it;
- ``on``: as ``auto``, also for a non-loopback host, and an error where no kind can be set up; ``off``: the wire.

Outputs always come back in the response.

What goes over the wire is the letterboxed (B, 3, H, W) tensor pyinfer makes for every backend: float32 (or
float16) when the model's input is TYPE_FP32 (TYPE_FP16), and the same pixels as uint8 when the server's model
declares TYPE_UINT8 (a quarter of the bytes; the model divides by 255 itself). Input size, names and labels come
from the server's model config: the input's dims, and ``parameters`` ``imgsz``/``names``/``task`` (ultralytics
metadata, as ONNX metadata_props). Requests are sent asynchronously: ``submit`` returns at once and the batch is
waited for in ``collect``, so the element's ``in-flight`` batches are in flight on the server too.

Faults: every call is bounded by ``timeout``. After a failed request the server is treated as down: requests
fail at once (no network call) until a back-off delay has passed (0.25 s doubling to 2 s), then one request
tries again; the first success after failures is reported (a note the element posts as a WARNING) and system
shared memory regions are registered again (a restarted server has forgotten them).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from pyinfer.backends.base import LoadedModel, as_float32, in_batches
from pyinfer.backends.metadata import decoder_from_config, input_size_from_config, names_from_config, parse_props
from pyinfer.errors import ConfigError, DependencyError, ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: URL schemes of model-engine that name a Triton server, and the protocol each speaks.
SCHEMES = {"triton": "grpc", "grpc": "grpc", "triton+grpc": "grpc", "http": "http", "triton+http": "http"}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
#: Triton input data types pyinfer sends: config data_type -> (wire datatype, torch dtype name).
INPUT_TYPES = {"TYPE_FP32": ("FP32", "float32"), "TYPE_FP16": ("FP16", "float16"), "TYPE_UINT8": ("UINT8", "uint8")}
#: Values of the ``shm`` URL option.
SHM_CHOICES = ("auto", "on", "off", "cuda", "system")
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 2.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ids = itertools.count()


def is_triton_url(path: str) -> bool:
    """Whether ``path`` is a Triton model URL (``triton://``, ``grpc://``, ``http://`` ...)."""
    return "://" in path and path.split("://", 1)[0].lower() in SCHEMES


@dataclass
class TritonTarget:
    """A parsed model-engine URL."""

    protocol: str  # grpc or http
    host: str
    port: int
    model: str
    version: str = ""  # "" = the server's version policy
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    shm: str = "auto"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def use_shm(self) -> bool:
        return self.shm in ("on", "cuda", "system") or (self.shm == "auto" and self.host in LOOPBACK)

    def shm_kinds(self, device_type: str) -> list[str]:
        """The shared memory kinds to try, in order ("cuda", "system"); empty: over the wire."""
        if not self.use_shm:
            return []
        if self.shm in ("cuda", "system"):
            return [self.shm]
        return ["cuda", "system"] if device_type == "cuda" else ["system"]


def parse_url(path: str) -> TritonTarget:
    """Read ``scheme://host[:port]/model[/version][?options]``; ConfigError naming what is wrong."""
    parts = urlsplit(path)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"model-engine {path!r}: backend=triton needs a URL triton://host:port/model "
                          f"(schemes: {', '.join(SCHEMES)})")  # fmt: skip
    protocol = SCHEMES[scheme]
    try:
        port = parts.port or DEFAULT_PORTS[protocol]
    except ValueError as exc:
        raise ConfigError(f"model-engine {path!r}: bad port ({exc})") from exc
    if not parts.hostname:
        raise ConfigError(f"model-engine {path!r}: no server host (triton://host:port/model)")
    segments = [s for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ConfigError(f"model-engine {path!r}: the path must be /model or /model/version")
    version = segments[1] if len(segments) == 2 else ""
    if version and not version.isdigit():
        raise ConfigError(f"model-engine {path!r}: model version {version!r} is not a number")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"timeout", "connect-timeout", "shm"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(f"model-engine {path!r}: unknown option(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")  # fmt: skip
    target = TritonTarget(protocol, parts.hostname, port, segments[0], version, options=query)
    for key, attr in (("timeout", "timeout_s"), ("connect-timeout", "connect_timeout_s")):
        if key in query:
            try:
                value = float(query[key])
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ConfigError(f"model-engine {path!r}: {key}={query[key]!r} is not a positive number of seconds")
            setattr(target, attr, value)
    if "shm" in query:
        if query["shm"] not in SHM_CHOICES:
            raise ConfigError(f"model-engine {path!r}: shm={query['shm']!r} is not one of {', '.join(SHM_CHOICES)}")
        target.shm = query["shm"]
    return target


def import_tritonclient(protocol: str) -> ModuleType:
    """``tritonclient.grpc`` or ``tritonclient.http``, or DependencyError saying how to install it."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise DependencyError(
            f"backend triton needs the 'tritonclient' package with {protocol} support ({exc}): "
            "pip install 'tritonclient[grpc,http]', or the triton extra: pip install 'pyinfer-gst[triton]'"
        ) from exc
    return client


class ServerDown(ConnectionError):
    """A request not sent: the server failed recently and the back-off delay has not passed."""


class TritonModel:
    """The connection to one model on one server: requests, back-off, shared memory."""

    def __init__(self, target: TritonTarget, device: torch.device):
        self.target = target
        self.device = device
        self.client_mod = import_tritonclient(target.protocol)
        self.lock = threading.Lock()
        self.failures = 0  # consecutive failed requests
        self.down_since = 0.0
        self.retry_at = 0.0
        self.notes: list[str] = []
        self.requests = 0
        self._pool: Any = None
        self._local = threading.local()
        self.client = self._new_client() if target.protocol == "grpc" else None
        self.regions: queue.Queue[str] = queue.Queue()
        self.region_bytes = 0
        self.handles: dict[str, Any] = {}
        self.cuda: CudaRegions | None = None  # CUDA shared memory regions (shm=cuda/auto on a GPU)
        self.shm_kind = "off"  # what the input travels in: cuda, system (shared memory) or off (the wire)
        self.registered = False
        self.reconnect = False
        self.generation = 0

    # -- connection ------------------------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        t = self.target
        if t.protocol == "grpc":
            return self.client_mod.InferenceServerClient(t.url)
        # HTTP: the timeouts are the connection's
        return self.client_mod.InferenceServerClient(t.url, connection_timeout=t.timeout_s, network_timeout=t.timeout_s)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t = self.target
        if t.protocol == "grpc":
            kwargs.setdefault("client_timeout", t.timeout_s)
        return fn(*args, **kwargs)

    def wait_ready(self) -> dict[str, Any]:
        """Wait up to connect-timeout for the server and the model; the model's config as a dict."""
        t = self.target
        deadline = time.monotonic() + t.connect_timeout_s
        last = ""
        while True:
            try:
                if self._call(self.ctl().is_model_ready, t.model, t.version):
                    break
                last = f"model {t.model!r} is not ready on the server"
                try:
                    index = self._call(self.ctl().get_model_repository_index)
                    names = sorted({m["name"] if isinstance(m, dict) else m.name for m in _index_models(index)})
                    if t.model not in names:
                        raise ModelError(f"Triton server {t.url} has no model {t.model!r} (models: "
                                         f"{', '.join(names) or 'none'})", missing=True)  # fmt: skip
                except ModelError:
                    raise
                except Exception:
                    pass
            except ModelError:
                raise
            except Exception as exc:
                last = first_line(exc)
            if time.monotonic() >= deadline:
                raise ModelError(
                    f"Triton server {t.protocol}://{t.url} model {t.model!r} not ready after "
                    f"{t.connect_timeout_s:g} s (connect-timeout): {last}", missing=False,
                )  # fmt: skip
            time.sleep(0.1)
        try:
            if t.protocol == "grpc":
                cfg = self._call(self.ctl().get_model_config, t.model, t.version, as_json=True)
                return cfg.get("config", cfg)
            return self._call(self.ctl().get_model_config, t.model, t.version)
        except Exception as exc:
            raise ModelError(f"Triton server {t.url}: could not read the config of model {t.model!r}: "
                             f"{first_line(exc)}") from exc  # fmt: skip

    def check(self) -> None:
        """Raise ServerDown while the back-off delay after a failure runs; else let one request through."""
        with self.lock:
            if self.failures and time.monotonic() < self.retry_at:
                raise ServerDown(
                    f"Triton server {self.target.url} unreachable since {time.monotonic() - self.down_since:.1f} s "
                    f"({self.failures} failed requests); next try in {self.retry_at - time.monotonic():.2f} s"
                )

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            now = time.monotonic()
            if not self.failures:
                self.down_since = now
            self.failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (self.failures - 1))
            self.retry_at = now + delay
            self.registered = False  # a restarted server has forgotten our shared memory
            self.reconnect = True  # and gRPC's channel would wait out its own back-off (up to 2 minutes)
        log.warning("Triton request to %s failed (%d in a row, next try in %.2f s): %s", self.target.url,
                    self.failures, delay, first_line(exc))  # fmt: skip

    def fresh_connection(self) -> None:
        """After a failure: new clients (a new gRPC channel; new HTTP connections on every thread)."""
        with self.lock:
            if not self.reconnect:
                return
            self.reconnect = False
            old, self.client = self.client, (self._new_client() if self.target.protocol == "grpc" else None)
            self.generation += 1
        if old is not None:
            try:  # noqa: SIM105
                old.close()
            except Exception:
                pass

    def succeeded(self) -> None:
        with self.lock:
            self.requests += 1
            if self.failures:
                self.notes.append(
                    f"Triton server {self.target.url} answers again after {time.monotonic() - self.down_since:.1f} s "
                    f"({self.failures} failed requests)"
                )
                self.failures = 0

    def pool(self) -> Any:
        """HTTP: the threads requests run on (created on first use)."""
        with self.lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pyinfer-triton")
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def ctl(self) -> Any:
        """The client for control calls (readiness, config, shared memory) on this thread."""
        return self.client if self.target.protocol == "grpc" else self.http_client()

    def http_client(self) -> Any:
        """HTTP: this thread's client (tritonclient.http's gevent connection pool belongs to one thread)."""
        if getattr(self._local, "generation", -1) != self.generation:
            self._local.client = self._new_client()
            self._local.generation = self.generation
        return self._local.client

    def request_id(self) -> str:
        """``pyinfer-<pid>-<n>``: the server's logs (and a model's ``request_id()``) tell the clients apart."""
        return f"pyinfer-{os.getpid()}-{next(_ids)}"

    def take_notes(self) -> list[str]:
        with self.lock:
            notes, self.notes = self.notes, []
        return notes

    # -- shared memory ---------------------------------------------------------------------------------------------
    def setup_shm(self, nbytes: int, count: int) -> None:
        import tritonclient.utils.shared_memory as shm

        self.region_bytes = nbytes
        for i in range(count):
            name = f"pyinfer-{os.getpid()}-{next(_ids)}-{i}"
            self.handles[name] = shm.create_shared_memory_region(name, "/" + name, nbytes)
            self.regions.put(name)
        weakref.finalize(self, _destroy_shm, self.target, self.client_mod, dict(self.handles))

    def drop_shm(self) -> None:
        """Forget shared memory that could not be set up (regions unregistered where they were, and freed)."""
        handles, cuda = dict(self.handles), self.cuda
        self.handles.clear()
        self.cuda = None
        self.registered = False
        while not self.regions.empty():
            self.regions.get_nowait()
        if handles:
            _destroy_shm(self.target, self.client_mod, handles)
        if cuda is not None:
            _destroy_cuda_shm(self.target, self.client_mod, cuda)

    def setup_cuda_shm(self, nbytes: int, count: int) -> None:
        self.cuda = CudaRegions(self.device, nbytes, count)
        self.region_bytes = nbytes
        for name in self.cuda.regions:
            self.regions.put(name)
        weakref.finalize(self, _destroy_cuda_shm, self.target, self.client_mod, self.cuda)

    def ensure_registered(self) -> None:
        if self.registered or not (self.handles or self.cuda):
            return
        for name in self.handles:
            try:  # noqa: SIM105
                self._call(self.ctl().unregister_system_shared_memory, name)
            except Exception:
                pass
            self._call(self.ctl().register_system_shared_memory, name, "/" + name, self.region_bytes)
        if self.cuda is not None:
            index = self.device.index if self.device.index is not None else 0
            for name, raw in self.cuda.handles.items():
                try:  # noqa: SIM105
                    self._call(self.ctl().unregister_cuda_shared_memory, name)
                except Exception:
                    pass
                self._call(self.ctl().register_cuda_shared_memory, name, raw, index, self.region_bytes)
        self.registered = True


def _destroy_shm(target: TritonTarget, client_mod: ModuleType, handles: dict[str, Any]) -> None:
    import tritonclient.utils.shared_memory as shm

    try:
        client = client_mod.InferenceServerClient(target.url)
    except Exception:
        client = None
    for name, handle in handles.items():
        try:
            if client is not None:
                client.unregister_system_shared_memory(name)
        except Exception:
            pass
        try:  # noqa: SIM105
            shm.destroy_shared_memory_region(handle)
        except Exception:
            pass


class CudaRegions:
    """Device memory the server reads the input from (Triton's CUDA shared memory).

    Each region is its own ``cudaMalloc`` (not torch's caching allocator: the server opens the handle of a whole
    allocation and reads from its start, and a tensor of torch's may sit inside a larger block) with its
    ``cudaIpcGetMemHandle``, sent base64-encoded as tritonclient's ``register_cuda_shared_memory`` wants it.
    The CUDA runtime is the one torch loaded (so the same device numbering and context)."""

    def __init__(self, device: torch.device, nbytes: int, count: int) -> None:
        import base64
        import ctypes

        import torch

        from pyinfer.frames.pinning import _cudart_path

        path = _cudart_path()
        if path is None:
            raise RuntimeError("no CUDA runtime loaded in this process")
        rt = ctypes.CDLL(path)
        rt.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        rt.cudaIpcGetMemHandle.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        rt.cudaFree.argtypes = [ctypes.c_void_p]
        self._rt = rt
        self.device = device
        self.nbytes = nbytes
        self.ptrs: dict[str, int] = {}
        self.handles: dict[str, bytes] = {}  # name -> base64 cudaIpcMemHandle_t
        self.views: dict[str, Any] = {}  # name -> uint8 tensor over the region
        self.regions: list[str] = []
        with torch.cuda.device(device):
            for i in range(count):
                name = f"pyinfer-cuda-{os.getpid()}-{next(_ids)}-{i}"
                ptr = ctypes.c_void_p()
                err = rt.cudaMalloc(ctypes.byref(ptr), nbytes)
                if err:
                    self.free()
                    raise RuntimeError(f"cudaMalloc of {nbytes} bytes failed (cudaError {err})")
                self.ptrs[name] = int(ptr.value or 0)
                handle = ctypes.create_string_buffer(64)  # cudaIpcMemHandle_t: 64 opaque bytes
                err = rt.cudaIpcGetMemHandle(handle, ptr)
                if err:
                    self.free()
                    raise RuntimeError(f"cudaIpcGetMemHandle failed (cudaError {err}): no CUDA IPC here")
                self.handles[name] = base64.b64encode(handle.raw)
                self.views[name] = torch.as_tensor(_DeviceBytes(self.ptrs[name], nbytes), device=device)
                self.regions.append(name)

    def write(self, name: str, x: torch.Tensor) -> int:
        """Copy ``x`` (on the device) to the start of region ``name`` and wait for the copy; its byte count."""
        import torch

        flat = x.contiguous().reshape(-1).view(torch.uint8)
        n = int(flat.numel())
        self.views[name][:n].copy_(flat)
        torch.cuda.current_stream(self.device).synchronize()  # the server reads it as soon as the request lands
        return n

    def free(self) -> None:
        self.views.clear()
        for ptr in self.ptrs.values():
            self._rt.cudaFree(ptr)
        self.ptrs.clear()


class _DeviceBytes:
    """A device pointer as a uint8 vector for ``torch.as_tensor`` (``__cuda_array_interface__`` version 3)."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 3}


def _destroy_cuda_shm(target: TritonTarget, client_mod: ModuleType, regions: CudaRegions) -> None:
    try:
        client = client_mod.InferenceServerClient(target.url)
        for name in regions.handles:
            try:  # noqa: SIM105
                client.unregister_cuda_shared_memory(name)
            except Exception:
                pass
    except Exception:
        pass
    try:  # noqa: SIM105
        regions.free()
    except Exception:
        pass


def _index_models(index: Any) -> list:
    if isinstance(index, dict):
        return index.get("models", [])
    if isinstance(index, list):
        return index
    return list(getattr(index, "models", []))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _DeviceTensor:
    """A device tensor with the two attributes ``send`` reads of a NumPy array (``shape``, ``nbytes``)."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t
        self.shape = tuple(t.shape)
        self.nbytes = int(t.numel() * t.element_size())


@dataclass
class Pending:
    """A request in flight: its result arrives on ``done``."""

    rows: int
    region: str | None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def load_triton(path: str, device: str, *, precision: str = "fp32", max_batch: int = 1) -> LoadedModel:
    """Connect to the model a ``triton://`` URL names and read its config.

    Raises:
        ConfigError: a bad URL, a precision the server's model does not take.
        DependencyError: tritonclient is missing.
        ModelError: the server or model not ready within connect-timeout, a model pyinfer cannot feed.
    """
    import numpy as np
    import torch

    target = parse_url(path)
    conn = TritonModel(target, torch.device(device))
    cfg = conn.wait_ready()
    inputs = cfg.get("input", [])
    outputs = cfg.get("output", [])
    if len(inputs) != 1:
        raise ModelError(f"Triton model {target.model} has {len(inputs)} inputs; pyinfer feeds one image tensor")
    inp = inputs[0]
    data_type = inp.get("data_type", "")
    if data_type not in INPUT_TYPES:
        raise ModelError(f"Triton model {target.model} input {inp.get('name')} is {data_type}; pyinfer sends "
                         f"{', '.join(INPUT_TYPES)}")  # fmt: skip
    wire_type, np_name = INPUT_TYPES[data_type]
    model_precision = "fp16" if wire_type == "FP16" else "fp32"
    if precision not in ("fp32", model_precision):
        raise ConfigError(f"precision {precision}: Triton model {target.model} takes {data_type} input; the "
                          "server runs the model as configured")  # fmt: skip
    dims = [int(d) for d in inp.get("dims", [])]
    server_batch = int(cfg.get("max_batch_size", 0) or 0)
    if server_batch == 0 and len(dims) == 4:  # no batching on the server: dims include the batch
        fixed: int | None = dims[0] if dims[0] > 0 else None
        dims = dims[1:]
    else:
        fixed = None
    if len(dims) != 3 or dims[0] != 3:
        raise ModelError(f"Triton model {target.model} input {inp.get('name')} has dims {dims}; pyinfer sends "
                         "[3, H, W] per frame")  # fmt: skip
    params = {k: (v.get("string_value", "") if isinstance(v, dict) else str(v))
              for k, v in (cfg.get("parameters") or {}).items()}  # fmt: skip
    metadata = parse_props(params)
    metadata["triton"] = {"url": target.url, "protocol": target.protocol, "model": target.model,
                          "max_batch_size": server_batch}  # fmt: skip
    static_size = (dims[2], dims[1]) if dims[1] > 0 and dims[2] > 0 else None
    input_name = inp["name"]
    output_names = tuple(o["name"] for o in outputs)
    chunk = server_batch if server_batch > 0 else (fixed or 1)
    np_dtype = np.dtype(np_name)
    client = conn.client_mod

    kinds = target.shm_kinds(conn.device.type) if static_size is not None else []
    if "cuda" in kinds and conn.device.type != "cuda":
        raise ConfigError(f"model-engine {path}: shm=cuda needs the element on a GPU (device=cuda)")
    for i, kind in enumerate(kinds):
        per_frame = 3 * dims[1] * dims[2] * np_dtype.itemsize
        try:
            if kind == "cuda":
                conn.setup_cuda_shm(per_frame * min(max_batch, chunk), count=4)
            else:
                conn.setup_shm(per_frame * min(max_batch, chunk), count=8)
            conn.ensure_registered()
            conn.shm_kind = kind
            break
        except Exception as exc:
            conn.drop_shm()
            last = i + 1 == len(kinds)
            if target.shm in ("cuda", "system") or (target.shm == "on" and last):
                raise ModelError(f"Triton server {target.url}: {kind} shared memory failed: {first_line(exc)}") from exc
            then = "tensors go over the wire" if last else "system shared memory"
            log.warning("Triton server %s: no %s shared memory (%s); %s", target.url, kind, first_line(exc), then)
    metadata["triton"]["shm"] = conn.shm_kind

    def wire_dtype(x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if wire_type == "UINT8":
            return (x.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
        return x.half() if wire_type == "FP16" else x.float()

    def to_wire(x: torch.Tensor) -> Any:
        return wire_dtype(x).cpu().contiguous().numpy()

    def to_device_wire(x: torch.Tensor) -> Any:
        """CUDA shared memory: the tensor stays on the device (``shape``/``nbytes`` as a NumPy array has them)."""
        return _DeviceTensor(wire_dtype(x.to(conn.device)).contiguous())

    def send(x: torch.Tensor) -> Pending:
        conn.check()
        conn.fresh_connection()
        arr = to_wire(x) if conn.cuda is None else to_device_wire(x)
        if fixed is not None and arr.shape[0] != fixed:
            raise ModelError(f"Triton model {target.model} takes batches of exactly {fixed}")
        region = None
        infer_input = client.InferInput(input_name, list(arr.shape), wire_type)
        try:
            if conn.cuda is not None and arr.nbytes <= conn.region_bytes:  # device to device, no host copy
                conn.ensure_registered()
                region = conn.regions.get(timeout=target.timeout_s)
                infer_input.set_shared_memory(region, conn.cuda.write(region, arr.t))
            elif conn.handles and arr.nbytes <= conn.region_bytes:  # larger than the batch-size: over the wire
                import tritonclient.utils.shared_memory as shm

                conn.ensure_registered()
                region = conn.regions.get(timeout=target.timeout_s)
                shm.set_shared_memory_region(conn.handles[region], [arr])
                infer_input.set_shared_memory(region, arr.nbytes)
            else:
                infer_input.set_data_from_numpy(arr if isinstance(arr, np.ndarray) else arr.t.cpu().numpy())
        except Exception as exc:
            if region is not None:
                conn.regions.put(region)
            conn.failed(exc)
            raise ConnectionError(f"Triton server {target.url}: {first_line(exc)}") from exc
        pending = Pending(rows=int(arr.shape[0]), region=region)
        requested = [client.InferRequestedOutput(name) for name in output_names]

        if target.protocol == "grpc":

            def callback(result: Any, error: Any) -> None:
                pending.result, pending.error = result, error
                pending.done.set()

            try:
                conn.client.async_infer(  # type: ignore[union-attr]
                    target.model, [infer_input], callback, model_version=target.version,
                                        outputs=requested, client_timeout=target.timeout_s,
                                        request_id=conn.request_id())  # fmt: skip
            except Exception as exc:
                pending.error = exc
                pending.done.set()
        else:  # tritonclient.http is gevent inside, one client per thread: requests run on the pool's threads
            rid = conn.request_id()
            pending.result = conn.pool().submit(
                lambda: conn.http_client().infer(target.model, [infer_input], model_version=target.version,
                                                 outputs=requested, request_id=rid)
            )  # fmt: skip
        return pending

    def receive(pending: Pending) -> list[torch.Tensor]:
        try:
            if target.protocol == "grpc":
                if not pending.done.wait(target.timeout_s + 1.0):  # the client's own deadline fires first
                    pending.error = TimeoutError(f"no answer within {target.timeout_s:g} s")
                result, error = pending.result, pending.error
            else:
                try:  # the connection's own network timeout ends the call first
                    result, error = pending.result.result(timeout=target.timeout_s + 1.0), None
                except Exception as exc:
                    result, error = None, exc
        finally:
            if pending.region is not None:
                conn.regions.put(pending.region)
        if error is not None:
            conn.failed(error)
            raise ConnectionError(f"Triton server {target.url} model {target.model}: {first_line(error)}") from (
                error if isinstance(error, BaseException) else None
            )
        conn.succeeded()
        outs = [torch.from_numpy(np.array(result.as_numpy(name), copy=True)) for name in output_names]
        return as_float32([o.to(conn.device) for o in outs])

    def submit(x: torch.Tensor) -> list:
        """Send the batch (in chunks of the server's max_batch_size); the requests in flight."""
        n = int(x.shape[0])
        return [send(x[s : s + chunk]) for s in range(0, n, chunk)]

    def wait(pendings: list) -> list[torch.Tensor]:
        parts = [receive(p) for p in pendings]
        if len(parts) == 1:
            return parts[0]
        return [torch.cat(outs) for outs in zip(*parts)]

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        if fixed is not None:
            return in_batches(lambda c: wait(submit(c)), x, fixed, pad=True)
        return wait(submit(x))

    return LoadedModel(
        forward=forward,
        device=torch.device(device),
        dtype=torch.float16 if wire_type == "FP16" else torch.float32,
        input_size=input_size_from_config(metadata) or static_size,
        names=names_from_config(metadata),
        decoder=decoder_from_config(metadata),
        path=path,
        backend="triton",
        precision=model_precision,
        fixed_batch=fixed,
        metadata=metadata,
        output_names=output_names,
        submit=submit if fixed is None else None,
        wait=wait if fixed is None else None,
        notes=conn.take_notes,
        remote=conn,
    )
