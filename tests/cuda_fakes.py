"""A double of the CUDA runtime functions pyinfer.ops.cudart binds, made of C callbacks (CI has no GPU).

With ``perform=True`` the copies are carried out on host memory (row by row, as cudaMemcpy2DAsync would on the
device) and a graph launch runs the Python callable registered for its handle (``graphs``), so a FastPath on the
CPU can run its raw launch lane end to end against it."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

VP, SZ, CI = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
_NAMES = {0: b"cudaSuccess", 1: b"cudaErrorInvalidValue", 600: b"cudaErrorNotReady"}
_TEXTS = {1: b"invalid argument"}
_KEEP = {k: ctypes.create_string_buffer(v) for k, v in {**_NAMES, **{-k: v for k, v in _TEXTS.items()}}.items()}


class FakeRuntime:
    """The runtime functions Runtime binds, as C function pointers; ``fail`` maps a call's name to its error."""

    def __init__(self, fail: dict[str, int] | None = None, ready: bool = True, perform: bool = False) -> None:
        self.fail = fail or {}
        self.ready = ready
        self.perform = perform
        self.graphs: dict[int, Callable[[], None]] = {}
        self.errors: list[Exception] = []
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
            elif self.perform:
                try:
                    self._perform(name, args)
                except Exception as exc:  # a C callback cannot raise: kept for the test, reported as an error
                    self.errors.append(exc)
                    self.last_error = err = 1
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

    def _perform(self, name: str, args: tuple) -> None:
        if name == "copy2d":
            dst, dpitch, src, spitch, width, height = args[:6]
            for row in range(height):
                ctypes.memmove(dst + row * dpitch, src + row * spitch, width)
        elif name == "copy":
            ctypes.memmove(args[0], args[1], args[2])
        elif name == "launch":
            self.graphs[args[0]]()
