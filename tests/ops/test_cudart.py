"""pyinfer.ops.cudart: the CUDA runtime calls of a batch's launch, against a double of the runtime made of C
callbacks (CI has no GPU; tests/gpu runs the real one). The double checks what the element relies on: the
arguments each call passes, that the wait gives up the GIL only when the work is not done, and that a failing call
raises with CUDA's own error name and clears the error it left."""

from __future__ import annotations

import ctypes

import pytest

from pyinfer.ops import cudart
from pyinfer.ops.cudart import CudaError, Runtime, graph_exec

VP, SZ, CI = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
_NAMES = {0: b"cudaSuccess", 1: b"cudaErrorInvalidValue", 600: b"cudaErrorNotReady"}
_TEXTS = {1: b"invalid argument"}
_KEEP = {k: ctypes.create_string_buffer(v) for k, v in {**_NAMES, **{-k: v for k, v in _TEXTS.items()}}.items()}


class FakeRuntime:
    """The runtime functions Runtime binds, as C function pointers; ``fail`` maps a call's name to its error."""

    def __init__(self, fail: dict[str, int] | None = None, ready: bool = True) -> None:
        self.fail = fail or {}
        self.ready = ready
        self.log: list[tuple] = []
        self.last_error = 0
        self.cudaMemcpy2DAsync = ctypes.CFUNCTYPE(CI, VP, SZ, VP, SZ, SZ, SZ, CI, VP)(self._call("copy2d"))
        self.cudaMemcpyAsync = ctypes.CFUNCTYPE(CI, VP, VP, SZ, CI, VP)(self._call("copy"))
        self.cudaGraphLaunch = ctypes.CFUNCTYPE(CI, VP, VP)(self._call("launch"))
        self.cudaEventCreateWithFlags = ctypes.CFUNCTYPE(CI, ctypes.POINTER(VP), ctypes.c_uint)(self._create)
        self.cudaEventRecord = ctypes.CFUNCTYPE(CI, VP, VP)(self._call("record"))
        self.cudaEventQuery = ctypes.CFUNCTYPE(CI, VP)(self._query)
        self.cudaEventDestroy = ctypes.CFUNCTYPE(CI, VP)(self._call("destroy"))
        self.cudaEventSynchronize = ctypes.CFUNCTYPE(CI, VP)(self._call("sync"))
        self.cudaGetLastError = ctypes.CFUNCTYPE(CI)(self._last)
        self.cudaGetErrorName = ctypes.CFUNCTYPE(VP, CI)(lambda e: ctypes.addressof(_KEEP[e]))
        self.cudaGetErrorString = ctypes.CFUNCTYPE(VP, CI)(lambda e: ctypes.addressof(_KEEP[-e]))

    def _call(self, name: str):
        def call(*args):
            self.log.append((name, *args))
            err = self.fail.get(name, 0)
            if err:
                self.last_error = err
            return err

        return call

    def _create(self, out, flags):
        self.log.append(("create", flags))
        out[0] = 0xE0 + len(self.log)
        return 0

    def _query(self, event):
        self.log.append(("query", event))
        return 0 if self.ready else 600

    def _last(self):
        err, self.last_error = self.last_error, 0
        return err


def test_a_plane_copy_passes_its_pitches_rows_and_stream_and_copies_in_either_direction():
    fake = FakeRuntime()
    rt = Runtime(fake, fake)
    rt.copy_2d(0x1000, 1920, 0x9000, 2048, 1920, 1080, 0x77)
    rt.copy(0x2000, 0x3000, 4096, 0x77)
    rt.launch(0xAB, 0x77)
    assert fake.log == [
        ("copy2d", 0x1000, 1920, 0x9000, 2048, 1920, 1080, cudart.MEMCPY_DEFAULT, 0x77),
        ("copy", 0x2000, 0x3000, 4096, cudart.MEMCPY_DEFAULT, 0x77),
        ("launch", 0xAB, 0x77),
    ]


def test_the_wait_synchronises_only_when_the_event_is_not_reached_yet_and_clears_not_ready():
    fake = FakeRuntime(ready=True)
    rt = Runtime(fake, fake)
    event = rt.event()
    assert fake.log == [("create", cudart.EVENT_DISABLE_TIMING)] and event
    rt.record(event, 0x77)
    rt.wait(event)
    assert [c[0] for c in fake.log] == ["create", "record", "query"]  # done: no blocking call
    fake.ready, fake.log = False, []
    fake.last_error = 600  # what cudaEventQuery leaves behind when the work still runs
    rt.wait(event)
    assert [c[0] for c in fake.log] == ["query", "sync"]
    assert fake.last_error == 0  # cleared: torch's next error check must not see it


def test_a_failing_call_raises_with_cudas_error_name_and_leaves_no_error_behind():
    fake = FakeRuntime(fail={"copy2d": 1})
    rt = Runtime(fake, fake)
    with pytest.raises(CudaError, match=r"cudaMemcpy2DAsync failed: cudaErrorInvalidValue \(1\): invalid argument"):
        rt.copy_2d(1, 10, 2, 10, 10, 2, 0)
    assert fake.last_error == 0


def test_an_event_owned_by_an_object_is_destroyed_with_it():
    import gc

    fake = FakeRuntime()
    rt = Runtime(fake, fake)

    class Owner:
        pass

    owner = Owner()
    event = rt.owned_event(owner)
    del owner
    gc.collect()
    assert ("destroy", event) in fake.log


def test_graph_exec_reads_torchs_handle_and_is_none_where_torch_has_none():
    class Graph:
        def __init__(self, handle):
            self.handle = handle

        def raw_cuda_graph_exec(self):
            if isinstance(self.handle, Exception):
                raise self.handle
            return self.handle

    assert graph_exec(Graph(0x1234)) == 0x1234
    assert graph_exec(Graph(ctypes.c_void_p(0x99))) == 0x99
    assert graph_exec(Graph(RuntimeError("not instantiated"))) is None
    assert graph_exec(Graph(0)) is None
    assert graph_exec(object()) is None  # a torch without raw_cuda_graph_exec: replayed through torch


def test_no_runtime_when_turned_off(monkeypatch):
    monkeypatch.setattr(cudart, "_RUNTIME", None)
    monkeypatch.setattr(cudart, "_TRIED", False)
    monkeypatch.setenv("PYINFER_NO_RAW_CUDA", "1")
    monkeypatch.setattr(cudart, "cudart_path", lambda: pytest.fail("must not look for the library"))
    assert cudart.runtime() is None


def test_no_runtime_before_cuda_is_loaded_and_asked_again_later(monkeypatch):
    monkeypatch.setattr(cudart, "_RUNTIME", None)
    monkeypatch.setattr(cudart, "_TRIED", False)
    monkeypatch.delenv("PYINFER_NO_RAW_CUDA", raising=False)
    monkeypatch.setattr(cudart, "cudart_path", lambda: None)
    assert cudart.runtime() is None
    assert cudart._TRIED is False  # not settled: once torch loads CUDA the next engine finds it
