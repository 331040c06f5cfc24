"""DeepStream batches: frames out of a batched NVMM buffer (zero-copy), detections back in as NvDsObjectMeta.

One :class:`DeepStreamSession` per element, built when NVMM caps arrive. Per buffer, :meth:`DeepStreamSession.
process` wraps the GstBuffer, reads the frame list, extracts each frame's pixels as a torch tensor (DLPack,
zero-copy, with the surface pitch as row stride), hands all frames to ``infer`` in one call, writes the
detections and drops every wrapper and tensor before it returns (DeepStream reuses the surfaces; a kept
``pyservicemaker.Buffer`` pins the pool buffer and stalls the pipeline).

Frame items of the bindings' iterators alias one slot (../shared/deepstream-contract.md §1.3): each item is
used inside its loop body only, and the frames are walked twice (read, then write) by ``batch_id``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfer.detections import Detections
from pyinfer.errors import DependencyError
from pyinfer.meta.deepstream import PydsWriter, ServiceMakerWriter, WriteReport, WriterOptions

log = logging.getLogger(__name__)

DEEPSTREAM_ROOT = Path("/opt/nvidia/deepstream/deepstream")
#: DeepStream majors whose NvDsBatchMeta/NvDsFrameMeta layouts match the offsets below (fields unchanged
#: from DS 6 to 9.1, per the headers; computed for gcc on LP64 from the DS 9.1 headers).
CTYPES_LAYOUT_MAJORS = (6, 7, 8, 9)
_BATCH_NUM_FRAMES = 44  # NvDsBatchMeta.num_frames_in_batch (after NvDsBaseMeta, 40 bytes, and max_frames)
_BATCH_FRAME_LIST = 96  # NvDsBatchMeta.frame_meta_list
_FRAME_BATCH_ID = 44  # NvDsFrameMeta.batch_id
_FRAME_INFER_DONE = 100  # NvDsFrameMeta.bInferDone


@dataclass(frozen=True)
class FrameRef:
    """What pyinfer keeps of a frame meta between the read and the write pass (plain values only)."""

    batch_id: int
    source_id: int
    frame_number: int
    width: int
    height: int


@dataclass
class BatchReport(WriteReport):
    """One buffer's outcome: objects written and the problems met (turned into WARNINGs by the element)."""

    frames: int = 0
    inferred: int = 0
    no_batch_meta: bool = False
    not_rgb: list[int] = field(default_factory=list)
    bad_tensor: list[str] = field(default_factory=list)
    marked: int = 0


def deepstream_version() -> str | None:
    """The installed DeepStream version (from its version file), or None."""
    try:
        text = (DEEPSTREAM_ROOT / "version").read_text()
    except OSError:
        return None
    m = re.search(r"Version:\s*([\d.]+)", text)
    return m.group(1) if m else None


def load_bindings(api: str) -> tuple[str, Any, Any]:
    """Import the bindings for ``api`` (auto, pyservicemaker, pyds): (chosen name, pyservicemaker, pyds).

    ``auto`` prefers pyservicemaker (frames zero-copy through ``extract``) and uses pyds where it is absent;
    pyds, when importable, is also used to mark frames inferred (pyservicemaker has no ``bInferDone`` setter).
    """
    sm = pyds = None
    errors = []
    try:
        import pyservicemaker as sm
    except ImportError as exc:
        errors.append(f"pyservicemaker: {exc}")
    try:
        import pyds
    except ImportError as exc:
        errors.append(f"pyds: {exc}")
    if api == "pyservicemaker" and sm is None:
        raise DependencyError(f"meta=deepstream needs pyservicemaker (DeepStream >= 7.1): {errors[0]}")
    if api == "pyds" and pyds is None:
        raise DependencyError(f"meta=pyds needs the pyds bindings (deepstream_python_apps): {errors[-1]}")
    if api == "auto":
        if sm is None and pyds is None:
            raise DependencyError(
                "NVMM caps need DeepStream's Python bindings: neither pyservicemaker nor pyds imports "
                f"({'; '.join(errors)}). Inside a DeepStream container: see docs/deepstream.md"
            )
        api = "pyservicemaker" if sm is not None else "pyds"
    return api, sm, pyds


class CtypesInferDone:
    """Sets ``NvDsFrameMeta.bInferDone`` through ctypes when pyds is absent (pyservicemaker cannot).

    Reads the NvDsBatchMeta pointer with ``gst_buffer_get_nvds_batch_meta`` from libnvdsgst_meta.so and writes
    at the documented offsets, after checking them against what pyservicemaker reports (frame count and
    batch ids); any mismatch disables it with a reason. Only for DeepStream majors in
    :data:`CTYPES_LAYOUT_MAJORS`.
    """

    def __init__(self, get_batch_meta: Callable[[int], int] | None = None, version: str | None = None):
        self.reason = ""
        self._get = get_batch_meta
        if self._get is None:
            version = version or deepstream_version()
            major = int(version.split(".")[0]) if version else None
            if major not in CTYPES_LAYOUT_MAJORS:
                self.reason = f"DeepStream version {version or 'unknown'}: NvDsFrameMeta layout not verified"
                return
            try:
                lib = ctypes.CDLL(os.fspath(DEEPSTREAM_ROOT / "lib" / "libnvdsgst_meta.so"))
            except OSError as exc:
                self.reason = f"libnvdsgst_meta.so: {exc}"
                return
            fn = lib.gst_buffer_get_nvds_batch_meta
            fn.restype, fn.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
            self._get = lambda ptr: fn(ptr) or 0

    @property
    def available(self) -> bool:
        return not self.reason

    def mark(self, gst_buffer: Any, batch_ids: set[int], n_frames: int) -> int:
        """Set bInferDone on the frames whose batch_id is in ``batch_ids``; returns how many were set."""
        if self.reason:
            return 0
        bm = self._get(hash(gst_buffer))
        if not bm:
            return 0
        if ctypes.c_uint.from_address(bm + _BATCH_NUM_FRAMES).value != n_frames:
            self.reason = "NvDsBatchMeta.num_frames_in_batch does not match the binding's n_frames: layout differs"
            return 0
        node = ctypes.c_void_p.from_address(bm + _BATCH_FRAME_LIST).value
        targets, seen = [], 0
        while node and seen <= n_frames:  # GList {data, next, prev}
            frame = ctypes.c_void_p.from_address(node).value
            if frame:
                targets.append(frame)
            node = ctypes.c_void_p.from_address(node + 8).value
            seen += 1
        found = {ctypes.c_uint.from_address(f + _FRAME_BATCH_ID).value for f in targets}
        flags = {ctypes.c_int.from_address(f + _FRAME_INFER_DONE).value for f in targets}
        if len(targets) != n_frames or not found.issuperset(batch_ids) or not flags <= {0, 1}:
            self.reason = "NvDsFrameMeta fields at the expected offsets do not look right: layout differs"
            return 0
        marked = 0
        for f in targets:
            if ctypes.c_uint.from_address(f + _FRAME_BATCH_ID).value in batch_ids:
                ctypes.c_int.from_address(f + _FRAME_INFER_DONE).value = 1
                marked += 1
        return marked


@dataclass(frozen=True)
class SessionOptions:
    """The element's DeepStream settings."""

    api: str = "auto"  # auto | pyservicemaker | pyds
    mark_inferred: bool = True
    writer: WriterOptions = field(default_factory=WriterOptions)


class DeepStreamSession:
    """Frame access and metadata writing for one element on NVMM buffers."""

    def __init__(self, options: SessionOptions, *, ctypes_marker: CtypesInferDone | None = None):
        self.api, self.sm, self.pyds = load_bindings(options.api)
        self.options = options
        if self.api == "pyservicemaker":
            self.writer: ServiceMakerWriter | PydsWriter = ServiceMakerWriter(self.sm, options.writer)
        else:
            self.writer = PydsWriter(self.pyds, options.writer)
        self.infer_done = "off"
        self._ctypes: CtypesInferDone | None = None
        if options.mark_inferred:
            if self.pyds is not None:
                self.infer_done = "pyds"
            else:
                self._ctypes = ctypes_marker or CtypesInferDone()
                self.infer_done = "ctypes" if self._ctypes.available else f"unavailable ({self._ctypes.reason})"

    def describe(self) -> str:
        return f"DeepStream writer {self.writer.name}, frames via {self.api}, bInferDone: {self.infer_done}"

    def process(
        self, gst_buffer: Any, infer: Callable[[list[Any]], list[Detections]] | None, width: int, height: int
    ) -> BatchReport:
        """Run ``infer`` on all frames of the batch (None: an interval-skipped batch) and write the results."""
        steps = self.steps(gst_buffer, infer is not None)
        try:
            tensors = next(steps)
        except StopIteration as stop:
            return stop.value
        try:
            steps.send(infer(tensors))
        except StopIteration as stop:
            return stop.value
        finally:
            steps.close()
        raise RuntimeError("DeepStreamSession.steps did not end after the write pass")

    def steps(self, gst_buffer: Any, infer: bool) -> Generator[list[Any], list[Detections], BatchReport]:
        """The batch in two steps, so a caller can keep batches in flight between them.

        The read pass yields the frames to infer (a list of (H, W, C) uint8 tensors; nothing is yielded when there
        is nothing to infer), the caller sends back their Detections, in order, and the write pass writes them;
        the generator returns the :class:`BatchReport`. DeepStream objects held between the two steps (the
        pyservicemaker buffer wrapper, which holds a reference) are released when it ends or is closed.
        """
        if self.api == "pyservicemaker":
            return self._process_sm(gst_buffer, infer)
        return self._process_pyds(gst_buffer, infer)

    # -- pyservicemaker ------------------------------------------------------------------------------
    def _process_sm(self, gst_buffer: Any, infer: bool) -> Generator[list[Any], list[Detections], BatchReport]:
        report = BatchReport()
        buf = self.sm.Buffer(gst_buffer)  # takes a ref: must die before we return
        try:
            bm = buf.batch_meta
            n = bm.n_frames
            report.frames = n
            if n == 0:
                report.no_batch_meta = True
                return report
            if not infer:  # an interval-skipped batch: nothing to read or write
                return report
            refs: list[FrameRef] = []
            tensors: list[Any] = []
            for fm in bm.frame_items:  # read pass: plain values and tensors only
                batch_id = fm.batch_id
                t = buf.extract(batch_id)
                if not t:  # null tensor: not an RGB surface (touching it would crash)
                    report.not_rgb.append(batch_id)
                    continue
                x = self._tensor(t, batch_id, report)
                del t
                if x is None:
                    continue
                tensors.append(x)
                refs.append(FrameRef(batch_id, fm.source_id, fm.frame_number, x.shape[1], x.shape[0]))
            results: dict[int, Detections] = {}
            if tensors:
                dets = yield tensors
                results = {r.batch_id: d for r, d in zip(refs, dets)}
            del tensors
            sizes = {r.batch_id: (r.width, r.height) for r in refs}
            for fm in bm.frame_items:  # write pass
                d = results.get(fm.batch_id)
                if d is not None:
                    w, h = sizes[fm.batch_id]
                    report.merge(self.writer.write_frame(bm, fm, d, w, h))
            report.inferred = len(results)
            if results and self.options.mark_inferred:
                report.marked = self._mark(gst_buffer, set(results), n)
            del bm
            return report
        finally:
            del buf

    def _tensor(self, t: Any, batch_id: int, report: BatchReport) -> Any:
        import torch

        x = torch.from_dlpack(t)
        if x.dtype != torch.uint8 or x.ndim != 3 or x.shape[2] not in (3, 4):
            report.bad_tensor.append(f"batch_id {batch_id}: {x.dtype} {tuple(x.shape)}")
            return None
        return x

    def _mark(self, gst_buffer: Any, batch_ids: set[int], n_frames: int) -> int:
        if self.pyds is not None:
            return self._mark_pyds(gst_buffer, batch_ids)
        if self._ctypes is not None:
            return self._ctypes.mark(gst_buffer, batch_ids, n_frames)
        return 0

    def _mark_pyds(self, gst_buffer: Any, batch_ids: set[int]) -> int:
        pyds = self.pyds
        bm = pyds.gst_buffer_get_nvds_batch_meta(hash(gst_buffer))
        if bm is None:
            return 0
        marked = 0
        node = bm.frame_meta_list
        while node is not None:
            fm = pyds.NvDsFrameMeta.cast(node.data)
            if fm.batch_id in batch_ids:
                fm.bInferDone = True
                marked += 1
            node = node.next
        return marked

    # -- pyds --------------------------------------------------------------------------------------
    def _process_pyds(self, gst_buffer: Any, infer: bool) -> Generator[list[Any], list[Detections], BatchReport]:
        pyds = self.pyds
        report = BatchReport()
        ptr = hash(gst_buffer)
        bm = pyds.gst_buffer_get_nvds_batch_meta(ptr)
        frames = []
        node = None if bm is None else bm.frame_meta_list
        while node is not None:  # GList nodes: casts are references, valid while the batch lives
            frames.append(pyds.NvDsFrameMeta.cast(node.data))
            node = node.next
        report.frames = len(frames)
        if not frames:
            report.no_batch_meta = True
            return report
        if not infer:
            return report
        tensors, kept, sizes = [], [], []
        for fm in frames:
            try:
                x = self._pyds_frame(ptr, fm.batch_id)
            except RuntimeError:
                report.not_rgb.append(fm.batch_id)
                continue
            tensors.append(x)
            kept.append(fm)
            sizes.append((x.shape[1], x.shape[0]))
        if not tensors:
            return report
        dets = yield tensors
        del tensors
        for fm, d, (w, h) in zip(kept, dets, sizes):
            report.merge(self.writer.write_frame(bm, fm, d, w, h))
            if self.options.mark_inferred:
                fm.bInferDone = True
                report.marked += 1
        report.inferred = len(kept)
        return report

    def _pyds_frame(self, ptr: int, batch_id: int) -> Any:
        """The frame as a torch tensor: CUDA zero-copy via get_nvds_buf_surface_gpu on x86, else mapped memory."""
        import torch

        pyds = self.pyds
        gpu = getattr(pyds, "get_nvds_buf_surface_gpu", None)
        if gpu is not None and torch.cuda.is_available():
            _dtype, shape, strides, data_ptr, size = gpu(ptr, batch_id)
            return torch.as_tensor(_CudaArray(shape, strides, data_ptr, size), device="cuda")
        return torch.from_numpy(pyds.get_nvds_buf_surface(ptr, batch_id))


@dataclass
class _CudaArray:
    """``__cuda_array_interface__`` over a pyds surface pointer, so torch can view it without a copy."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    ptr: int
    size: int

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": tuple(self.shape), "strides": tuple(self.strides), "typestr": "|u1",
                "data": (int(self.ptr), False), "version": 3}  # fmt: skip
