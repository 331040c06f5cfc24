"""The CUDA runtime called directly, for the few calls a batch makes on the GPU path, with the GIL kept.

Every torch call gives up the GIL while it runs and takes it back afterwards. Alone in a process that costs
nothing; beside other Python threads (a batch-group's streaming threads, a pipeline's other Python elements) each
of those returns waits its turn for the GIL, and the worker that launches the model makes about a dozen such calls
a batch (a copy per plane batch, the stream's waits, the graph replay, the copy of the results to the host, an
event). On the H200 the batch-group's worker spent most of its time in them, waiting for the GIL, not the GPU.

A batch's launch is therefore made of CUDA runtime calls through ``ctypes.PyDLL`` (the GIL is kept: each returns
in microseconds, sooner than a hand-over of the GIL): the frames' planes copied into the graph's static input
(``cudaMemcpy2DAsync``), the graph launched (``cudaGraphLaunch`` on the graph torch captured), its packed result
copied to pinned host memory and an event recorded, all on the engine's stream, in the order torch would have
queued them. Only the wait for the result gives up the GIL (``cudaEventSynchronize`` through ``ctypes.CDLL``), and
only when the result is not ready yet (``cudaEventQuery`` first).

The library is the CUDA runtime torch loaded (found in ``/proc/self/maps``), so the calls act in torch's own
context on torch's streams. ``PYINFER_NO_RAW_CUDA=1`` turns this off (torch's calls are used instead).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import weakref
from typing import Any

_log = logging.getLogger(__name__)

#: cudaMemcpyDefault: the direction follows from the pointers (unified addressing: device or page-locked host).
MEMCPY_DEFAULT = 4
#: cudaEventDisableTiming: an event for ordering and waiting only (cheaper to record).
EVENT_DISABLE_TIMING = 2
#: cudaErrorNotReady: what cudaEventQuery returns while the work before the event still runs.
ERROR_NOT_READY = 600


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and CUDA's own error name and text."""


def cudart_path() -> str | None:
    """The CUDA runtime library this process (torch) loaded, from /proc/self/maps; None where none is loaded."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ")[-1]
                if "/libcudart.so" in path:
                    return path
    except OSError:
        pass
    return None


class Runtime:
    """The CUDA runtime calls of a batch's launch. Thread-safe (the runtime is); one per process (:func:`runtime`).

    Args:
        held: the library opened with ``ctypes.PyDLL`` (calls keep the GIL).
        released: the same library opened with ``ctypes.CDLL`` (calls give up the GIL: the waits).
    """

    def __init__(self, held: Any, released: Any) -> None:
        vp, sz, ci = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        self._memcpy2d = _fn(held, "cudaMemcpy2DAsync", [vp, sz, vp, sz, sz, sz, ci, vp])
        self._memcpy = _fn(held, "cudaMemcpyAsync", [vp, vp, sz, ci, vp])
        self._launch = _fn(held, "cudaGraphLaunch", [vp, vp])
        self._create = _fn(held, "cudaEventCreateWithFlags", [ctypes.POINTER(vp), ctypes.c_uint])
        self._record = _fn(held, "cudaEventRecord", [vp, vp])
        self._query = _fn(held, "cudaEventQuery", [vp])
        self._destroy = _fn(held, "cudaEventDestroy", [vp])
        self._sync = _fn(released, "cudaEventSynchronize", [vp])
        self._last = _fn(held, "cudaGetLastError", [])
        self._name = held.cudaGetErrorName
        self._name.argtypes, self._name.restype = [ci], ctypes.c_char_p
        self._text = held.cudaGetErrorString
        self._text.argtypes, self._text.restype = [ci], ctypes.c_char_p

    # -- calls -------------------------------------------------------------------------------------------
    def copy_2d(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int, stream: int) -> None:
        """Queue a copy of ``height`` rows of ``width`` bytes (pitches in bytes) on ``stream``."""
        self._check(self._memcpy2d(dst, dst_pitch, src, src_pitch, width, height, MEMCPY_DEFAULT, stream),
                    "cudaMemcpy2DAsync")  # fmt: skip

    def copy(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        """Queue a copy of ``nbytes`` contiguous bytes on ``stream``."""
        self._check(self._memcpy(dst, src, nbytes, MEMCPY_DEFAULT, stream), "cudaMemcpyAsync")

    def launch(self, graph_exec: int, stream: int) -> None:
        """Queue an instantiated CUDA graph (``cudaGraphExec_t``) on ``stream``."""
        self._check(self._launch(graph_exec, stream), "cudaGraphLaunch")

    def event(self) -> int:
        """A new event without timing; destroyed by :meth:`destroy` (or :meth:`owned_event`'s finalizer)."""
        handle = ctypes.c_void_p()
        self._check(self._create(ctypes.byref(handle), EVENT_DISABLE_TIMING), "cudaEventCreateWithFlags")
        return int(handle.value or 0)

    def owned_event(self, owner: object) -> int:
        """A new event destroyed when ``owner`` is garbage-collected."""
        handle = self.event()
        weakref.finalize(owner, self._destroy, handle)
        return handle

    def record(self, event: int, stream: int) -> None:
        self._check(self._record(event, stream), "cudaEventRecord")

    def wait(self, event: int) -> None:
        """Return once the work before ``event`` is done; the GIL is given up only if it must wait."""
        err = self._query(event)
        if err == ERROR_NOT_READY:
            self._last()  # cudaEventQuery's "not ready" is no error: do not leave it for torch's next check
            err = self._sync(event)
        self._check(err, "cudaEventSynchronize")

    def destroy(self, event: int) -> None:
        self._destroy(event)

    def _check(self, err: int, call: str) -> None:
        if err:
            self._last()  # clear it, or torch's next launch check on this thread would raise it as its own
            name = (self._name(err) or b"?").decode(errors="replace")
            text = (self._text(err) or b"").decode(errors="replace")
            raise CudaError(f"{call} failed: {name} ({err}): {text}")


def _fn(lib: Any, name: str, argtypes: list) -> Any:
    fn = getattr(lib, name)
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


_RUNTIME: Runtime | None = None
_TRIED = False
_LOCK = threading.Lock()


def runtime() -> Runtime | None:
    """The process's :class:`Runtime`, or None: ``PYINFER_NO_RAW_CUDA=1``, or no CUDA runtime loaded yet (torch
    without CUDA, or CUDA not initialised: call again once it is)."""
    global _RUNTIME, _TRIED
    if _TRIED:
        return _RUNTIME
    with _LOCK:
        if _TRIED:
            return _RUNTIME
        if os.environ.get("PYINFER_NO_RAW_CUDA") == "1":
            _TRIED = True
            return None
        path = cudart_path()
        if path is None:
            return None  # not loaded yet: asked again later
        _TRIED = True
        try:
            _RUNTIME = Runtime(ctypes.PyDLL(path), ctypes.CDLL(path))
        except (OSError, AttributeError) as exc:
            _log.warning("pyinfer: CUDA runtime calls through torch only (%s): %s", path, exc)
        return _RUNTIME


def graph_exec(graph: Any) -> int | None:
    """The ``cudaGraphExec_t`` of a captured ``torch.cuda.CUDAGraph``, or None where this torch does not expose it
    (``raw_cuda_graph_exec``, torch >= 2.7) or the graph has none."""
    get = getattr(graph, "raw_cuda_graph_exec", None)
    if get is None:
        return None
    try:
        handle = get()
    except Exception:  # any refusal means: replay through torch
        return None
    handle = getattr(handle, "value", handle)  # a ctypes pointer or an int, by version
    try:
        return int(handle) or None
    except (TypeError, ValueError):
        return None
