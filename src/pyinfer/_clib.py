"""Finding and checking pyinfer's C helpers: ``roi_native`` (:mod:`pyinfer.meta._roi_native`) and ``track_native``
(:mod:`pyinfer.track._native`).

setup.py builds each as an extension of the package, so the file carries the name setuptools gives it
(``roi_native.cpython-311-x86_64-linux-gnu.so``), in place beside its source for an editable install, in the
wheel otherwise. Neither is a Python module: they are loaded with ctypes. Before a loader uses one it asks the
library's ABI function (``pyinfer_roi_abi``, ``pyinfer_bt_abi``) for its interface version and the layout of
what Python shares with it, and refuses a library whose answers differ from its own (a file built from another
version of its C source). That check costs a few calls; the comparisons of the C paths with the Python ones are
in the test suite (tests/meta/test_roi_native.py, tests/track/test_native.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.machinery
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)


def system_library(name: str, *, hold_gil: bool = False) -> ctypes.CDLL:
    """A system library by its short name (``gstreamer-1.0``): ``lib<name>.so.0``, else what ldconfig finds.

    ``hold_gil``: its functions are called with the GIL held (``ctypes.PyDLL``), for calls that return at once
    and never wait on another thread: releasing the GIL around a short call lets a waiting thread take it, and
    the caller then waits for it back (a futex wake and a context switch each way, ~10-20 µs under contention,
    more than the call itself)."""
    kind = ctypes.PyDLL if hold_gil else ctypes.CDLL
    try:
        return kind(f"lib{name}.so.0")
    except OSError:
        found = ctypes.util.find_library(name)
        if found is None:
            raise
        return kind(found)


def load_helper(make: Callable[[], T], path: Path, expected: Sequence[int], what: str, instead: str) -> T | None:
    """``make()``, the ctypes wrapper of the helper at ``path``, once its ABI answers are ``expected``; None where
    ``PYINFER_NO_NATIVE=1``, the platform is not 64-bit, the file is not built, or it cannot be loaded or answers
    otherwise (logged: "``what`` PATH not used (``instead``): why")."""
    if os.environ.get("PYINFER_NO_NATIVE") == "1" or ctypes.sizeof(ctypes.c_void_p) != 8 or not path.exists():
        return None
    lib: Any = None
    try:
        lib = make()
        problem = abi_problem(lib.abi, expected)
    except (OSError, AttributeError) as exc:
        lib, problem = None, f"cannot load it: {exc}"
    if problem:
        _log.warning("%s %s not used (%s): %s", what, path, instead, problem)
        return None
    return lib


def library_path(directory: Path, name: str) -> Path:
    """The helper ``name`` in ``directory`` under the first extension suffix of this Python that exists there;
    where none does, the name it would have (for messages)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    for suffix in suffixes:
        path = directory / (name + suffix)
        if path.exists():
            return path
    return directory / (name + suffixes[0])


def abi_problem(answer: Callable[[int], int], expected: Sequence[int]) -> str | None:
    """What differs between a library's ABI answers and ``expected``, or None where they agree.

    Args:
        answer: the library's ABI function: ``answer(k)`` for k = 0, 1, ... is its k-th value (0: the interface
            version), and -1 past its last one.
        expected: what this Python side was written for.
    """
    got = [int(answer(k)) for k in range(len(expected))]
    extra = int(answer(len(expected)))
    if got != list(expected) or extra != -1:
        more = f" and more ({extra}, ...)" if extra != -1 else ""
        return f"ABI answers {got}{more}, expected {list(expected)} (built from another version of its C file?)"
    return None
