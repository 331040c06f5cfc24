"""Loading a new model beside the one serving, in a background thread, for hot-swap.

The element asks for a model with :meth:`ModelSwapper.request`; a worker thread builds and validates an
engine; the element picks the result up between two batches with :meth:`ModelSwapper.take_ready`. Requests
made while a load runs replace each other: only the newest is loaded next, so updates never pile up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyinfer.elements._base import describe_exception

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    """The outcome of one model load."""

    path: str
    ok: bool
    reason: str
    load_time_s: float
    generation: int


class ModelSwapper:
    """Builds engines off the streaming thread; the newest request wins.

    Args:
        build: ``build(config) -> engine``; raises on failure (its message becomes the reason).
        on_failed: called on the worker thread with the LoadResult of a failed or superseded load.
    """

    def __init__(self, build: Callable[[Any], Any], on_failed: Callable[[LoadResult], None]) -> None:
        self._build = build
        self._on_failed = on_failed
        self._cond = threading.Condition()
        self._request: tuple[int, str, Any] | None = None
        self._ready: tuple[Any, LoadResult] | None = None
        self._generation = 0
        self._stopping = False
        self._loading = False
        self._thread: threading.Thread | None = None

    @property
    def generation(self) -> int:
        """The number of the newest request (0 before any)."""
        return self._generation

    def request(self, path: str, config: Any) -> int:
        """Ask for ``config`` to be loaded; returns its generation number."""
        with self._cond:
            self._generation += 1
            self._request = (self._generation, path, config)
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="pyinfer-model-loader", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._generation

    def take_ready(self) -> tuple[Any, LoadResult] | None:
        """The newest successfully loaded engine not taken yet (non-blocking)."""
        if self._ready is None:  # fast path, no lock: read of one reference
            return None
        with self._cond:
            ready, self._ready = self._ready, None
            return ready

    def busy(self) -> bool:
        """Whether a load is requested or running."""
        with self._cond:
            return self._request is not None or self._loading

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker (waits for a load in progress up to ``timeout_s``) and drop what it made."""
        with self._cond:
            self._stopping = True
            self._request = None
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._cond:
            self._ready = None
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                # Exit when idle: a thread that ran torch keeps an OpenMP team alive until it exits, and a
                # second live team slows every forward on the streaming thread (about 1.6x on 2 cores).
                if self._request is None or self._stopping:
                    self._thread = None
                    return
                generation, path, config = self._request
                self._request = None
                self._loading = True
            t0 = time.perf_counter()
            try:
                engine = self._build(config)
                error = None
            except BaseException as exc:  # every failure keeps the old model serving; user code may even exit
                engine, error = None, exc
            elapsed = time.perf_counter() - t0
            replaced = None
            with self._cond:
                self._loading = False
                superseded = generation != self._generation or self._stopping
                if engine is not None and not superseded:
                    # A loaded model nobody took yet (no buffer flowed since) is superseded by this one: say so,
                    # so every request gets its one answer.
                    replaced, self._ready = self._ready, (engine, LoadResult(path, True, "", elapsed, generation))
            if replaced is not None:
                old = replaced[1]
                log.info("model load of %s not used: superseded before it served", old.path)
                self._on_failed(LoadResult(old.path, False, "superseded by a newer model-engine request before it "
                                           "served a frame", old.load_time_s, old.generation))  # fmt: skip
            if engine is not None and not superseded:
                continue
            reason = describe_exception(error) if error is not None else "superseded by a newer model-engine request"
            log.info("model load of %s not used: %s", path, reason)
            self._on_failed(LoadResult(path, False, reason, elapsed, generation))
