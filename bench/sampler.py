"""A small sampling profiler for the element's threads (what py-spy would show, where py-spy is not installed).

A daemon thread looks at every thread's Python stack (``sys._current_frames``) every ``period_s`` and counts, per
thread name, the innermost frames of pyinfer's code with the call beneath them. Wall-clock attribution: a thread
blocked in C (a CUDA sync, a push into a sink, a lock) counts at the Python line that made the call, so waits and
work both show. Used by bench/gpu/element.py --profile.
"""

from __future__ import annotations

import collections
import sys
import threading
import time


class Sampler:
    def __init__(self, period_s: float = 0.0005, depth: int = 3, marker: str = "pyinfer") -> None:
        self.period_s = period_s
        self.depth = depth
        self.marker = marker
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.samples: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self.enabled = threading.Event()  # samples are taken only while set (e.g. from the first timed buffer)
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            if not self.enabled.is_set():
                self.enabled.wait(0.05)
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                name = names.get(ident, str(ident))
                self.samples[name] += 1
                self.counts[name][self._key(frame)] += 1
            time.sleep(self.period_s)

    def _key(self, frame) -> str:
        parts = []
        f = frame
        while f is not None and len(parts) < self.depth:
            code = f.f_code
            if self.marker in code.co_filename or parts:
                short = code.co_filename.rsplit("/", 2)
                parts.append(f"{'/'.join(short[-2:])}:{f.f_lineno} {code.co_name}")
            f = f.f_back
        if not parts:  # outside pyinfer: the innermost frame
            code = frame.f_code
            parts.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        return " < ".join(parts)

    def report(self, top: int = 25, min_share: float = 0.005) -> dict:
        out = {}
        for name, counter in self.counts.items():
            total = self.samples[name]
            if total == 0:
                continue
            rows = [(k, round(v / total, 4)) for k, v in counter.most_common(top) if v / total >= min_share]
            out[name] = {"samples": total, "top": rows}
        return out

    def text(self, top: int = 25) -> str:
        lines = []
        for name, rep in self.report(top).items():
            lines.append(f"== thread {name}: {rep['samples']} samples")
            lines += [f"  {share * 100:5.1f}%  {key}" for key, share in rep["top"]]
        return "\n".join(lines)
