"""Page-locking recycled host memory (pyinfer.frames.pinning): which memories are registered, when, and that each
registration is undone exactly once, when its GstMemory is freed.

CI has no GPU, so the CUDA runtime is replaced by a fake made of C callbacks with the real functions' signatures
(``cudaHostRegister``, ``cudaHostUnregister``, ``cudaGetLastError``): it records the calls, and enforces what the
real runtime does with them (an address may be registered once; unregistering an address that is not registered
is an error). The GStreamer side is real: real GstMemory objects, their qdata, their refcounts and their frees.
The GPU run (tests/gpu/test_pinned_frames.py) uses the real runtime.
"""

from __future__ import annotations

import ctypes
import gc

import pytest

from pyinfer._gi import Gst
from pyinfer.frames import pinning
from pyinfer.frames.pinning import MIN_BYTES, HostPinning

_REGISTER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint)
_UNREGISTER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_LAST_ERROR = ctypes.CFUNCTYPE(ctypes.c_int)

_ERROR_ALREADY_REGISTERED = 712  # cudaErrorHostMemoryAlreadyRegistered
_ERROR_NOT_REGISTERED = 713  # cudaErrorHostMemoryNotRegistered


class FakeCudart:
    """The three runtime functions HostPinning uses, as C function pointers (a double: CI has no GPU)."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.registered: dict[int, int] = {}  # address -> size
        self.log: list[tuple] = []
        self.last_error = 0
        self.unregister_errors = 0
        self.cudaHostRegister = _REGISTER(self._register)
        self.cudaHostUnregister = _UNREGISTER(self._unregister)
        self.cudaGetLastError = _LAST_ERROR(self._get_last_error)

    def _register(self, ptr, size, flags):
        self.log.append(("register", ptr, size, flags))
        if self.fail:
            self.last_error = self.fail
            return self.fail
        if ptr in self.registered:
            self.last_error = _ERROR_ALREADY_REGISTERED
            return _ERROR_ALREADY_REGISTERED
        self.registered[ptr] = size
        return 0

    def _unregister(self, ptr):
        self.log.append(("unregister", ptr))
        if self.registered.pop(ptr, None) is None:
            self.unregister_errors += 1
            return _ERROR_NOT_REGISTERED
        return 0

    def _get_last_error(self):
        err, self.last_error = self.last_error, 0
        return err


def _memory(nbytes: int = 2 * MIN_BYTES) -> Gst.Memory:
    buf = Gst.Buffer.new_allocate(None, nbytes, None)
    return buf.peek_memory(0)


def _sight(pin: HostPinning, mem: Gst.Memory) -> tuple[bool, int, int]:
    """Map ``mem`` as the frame reader does and ask whether it is page-locked; (answer, data address, size)."""
    buf = Gst.Buffer.new()
    buf.append_memory(mem)
    from pyinfer.frames.video import _gst, _GstMapInfo

    info = _GstMapInfo()
    assert _gst().gst_buffer_map(hash(buf), ctypes.byref(info), int(Gst.MapFlags.READ))
    try:
        return pin.pinned(int(info.memory), int(info.data), int(info.size)), int(info.data), int(info.size)
    finally:
        _gst().gst_buffer_unmap(hash(buf), ctypes.byref(info))


@pytest.fixture
def cudart():
    return FakeCudart()


def test_a_recycled_memory_is_registered_at_its_second_sight_and_then_reused(cudart):
    pin = HostPinning(cudart)
    mem = _memory()
    first, data, size = _sight(pin, mem)
    assert first is False and cudart.log == []  # seen once: it may be a frame allocated afresh
    second, data2, _ = _sight(pin, mem)
    assert second is True and data2 == data
    assert cudart.log == [("register", data, size, 1)]  # portable, the mapped range
    assert all(_sight(pin, mem)[0] for _ in range(5))
    assert len(cudart.log) == 1 and pin.registered == 1  # registered once, used every time after


def test_the_registration_is_undone_once_when_the_memory_is_freed(cudart):
    pin = HostPinning(cudart)
    mem = _memory()
    _sight(pin, mem)
    _, data, _ = _sight(pin, mem)
    assert data in cudart.registered
    del mem
    gc.collect()
    assert ("unregister", data) in cudart.log
    assert cudart.registered == {} and cudart.unregister_errors == 0
    assert [e for e in cudart.log if e[0] == "unregister"] == [("unregister", data)]


def test_frames_allocated_afresh_are_never_registered(cudart):
    """A new memory at a recycled address (malloc gives the same block back) carries no mark of the old one."""
    pin = HostPinning(cudart)
    addresses = set()
    for _ in range(20):
        mem = _memory()
        answer, data, _ = _sight(pin, mem)
        addresses.add(data)
        assert answer is False
        del mem
    assert cudart.log == []
    assert len(addresses) < 20  # the allocator did hand the same addresses back: the marks went with the memories


def test_a_share_of_another_memory_is_not_registered(cudart):
    pin = HostPinning(cudart)
    parent = _memory(4 * MIN_BYTES)
    share = parent.share(0, 2 * MIN_BYTES)
    assert [_sight(pin, share)[0] for _ in range(3)] == [False, False, False]
    assert cudart.log == []


def test_small_memories_are_left_to_the_staging_copy(cudart):
    pin = HostPinning(cudart)
    mem = _memory(MIN_BYTES // 2)
    assert [_sight(pin, mem)[0] for _ in range(3)] == [False, False, False]
    assert cudart.log == []


def test_a_refused_registration_is_not_retried_and_its_error_is_cleared(cudart):
    cudart.fail = 1  # cudaErrorInvalidValue (what a file-backed mapping, or no GPU, gives)
    pin = HostPinning(cudart)
    mem = _memory()
    answers = [_sight(pin, mem)[0] for _ in range(4)]
    assert answers == [False, False, False, False]
    assert [e[0] for e in cudart.log] == ["register"]  # tried once
    assert cudart.last_error == 0 and pin.refused == 1  # cleared: torch's next launch check must not see it
    del mem
    gc.collect()
    assert not [e for e in cudart.log if e[0] == "unregister"]  # nothing to undo


def test_memory_registered_by_someone_else_is_refused_not_taken_over(cudart):
    pin = HostPinning(cudart)
    mem = _memory()
    _, data, size = _sight(pin, mem)
    cudart.registered[data] = size  # e.g. the application page-locked its own pool
    assert _sight(pin, mem)[0] is False
    assert pin.refused == 1
    del mem
    gc.collect()
    assert cudart.registered == {data: size}  # not unregistered by us


def test_pinning_is_off_with_pyinfer_no_pin(monkeypatch):
    monkeypatch.setenv("PYINFER_NO_PIN", "1")
    monkeypatch.setattr(pinning, "_PINNING", None)
    monkeypatch.setattr(pinning, "_PINNING_TRIED", False)
    assert pinning.host_pinning() is None
