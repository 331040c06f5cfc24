"""pyvlm under DeepStream: frames and objects read from an NVMM batch, answers written as DeepStream metadata.

Through pyservicemaker (DeepStream 8/9; see ../shared/deepstream-contract.md §1.6-1.7), per frame of the batch:

- the frame's pixels (``Buffer.extract(batch_id)``, RGB; copied to host memory for the model's thread) and, in
  secondary mode, its objects (``rect_params``, ``object_id`` as the track id, ``class_id``,
  ``unique_component_id``) are read in one pass, as plain values;
- answers are written in a second pass: an answer about an object as a JSON user meta on that object (type
  :data:`TEXT_META_TYPE`: ``{"text", "prompt", "unique_id", "source_frame", "source_pts_ns"}``); an answer about
  the whole frame as display meta text (``DisplayMetadata.add_text``, which copies the string), the caption
  nvdsosd draws at the top-left. The DeepStream 9 binding accepts no plain user meta on a frame
  (``FrameMetadata.append`` raises TypeError for it), so a frame's answer reaches code downstream through the
  display text and through pyvlm's ``pyinfer-text`` element messages (which carry ``source-id``).

pyds (DeepStream <= 7.1) cannot add custom user meta without a compiled binding: pyvlm refuses it at caps time
with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyinfer.meta.deepstream import NVDS_START_USER_META

#: User meta type of a pyvlm answer on an object (NVDS_START_USER_META + "Pt").
TEXT_META_TYPE = NVDS_START_USER_META + 0x5074
#: DeepStream's "no track id" (UNTRACKED_OBJECT_ID).
UNTRACKED = 0xFFFFFFFFFFFFFFFF
#: Display meta holds at most this many texts (MAX_ELEMENTS_IN_DISPLAY_META); more need another display meta.
DISPLAY_TEXTS = 16


@dataclass
class DsFrame:
    """One frame of a batch, as plain values (no DeepStream wrapper outlives the read pass)."""

    batch_id: int
    source_id: int
    frame_number: int
    pts: int | None
    width: int = 0
    height: int = 0
    pixels: np.ndarray | None = None  # (H, W, 3) RGB host copy, only when the frame is offered to the model
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # xyxy per object
    track_ids: list[int | None] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    producers: list[int] = field(default_factory=list)


def read_batch(sm: Any, gst_buffer: Any, offered: Any, objects: bool) -> list[DsFrame]:
    """The batch's frames; ``offered(source_id, frame_number)`` says whose pixels to copy; ``objects``: read the
    frames' object metas too."""
    import torch

    buf = sm.Buffer(gst_buffer)
    try:
        bm = buf.batch_meta
        frames: list[DsFrame] = []
        for fm in bm.frame_items:
            pts = int(fm.buffer_pts)
            f = DsFrame(int(fm.batch_id), int(fm.source_id), int(fm.frame_number), pts if pts >= 0 else None)
            if objects:
                boxes, tracks, classes, producers = [], [], [], []
                for om in fm.object_items:
                    r = om.rect_params
                    boxes.append((r.left, r.top, r.left + r.width, r.top + r.height))
                    oid = int(om.object_id)
                    tracks.append(None if oid == UNTRACKED else oid)
                    classes.append(int(om.class_id))
                    producers.append(int(om.unique_component_id))
                f.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
                f.track_ids, f.class_ids, f.producers = tracks, classes, producers
            t = buf.extract(f.batch_id)
            if t:
                x = torch.from_dlpack(t)
                f.height, f.width = int(x.shape[0]), int(x.shape[1])
                if offered(f.source_id, f.frame_number):
                    # the surface is reused by nvstreammux once the batch is gone: always a copy
                    f.pixels = np.ascontiguousarray(x[..., :3].to("cpu", copy=True).numpy())
                del x
            del t
            frames.append(f)
        del bm
        return frames
    finally:
        del buf


def write_batch(sm: Any, gst_buffer: Any, answers: dict[int, tuple[list, dict[int, Any]]]) -> int:
    """Write ``answers`` (batch_id -> (frame texts, {object index: text record})): frame texts as display text,
    object texts as JSON user meta on their objects. Returns how many were written."""
    from pyservicemaker import osd

    written = 0
    buf = sm.Buffer(gst_buffer)
    try:
        bm = buf.batch_meta
        for fm in bm.frame_items:
            got = answers.get(int(fm.batch_id))
            if got is None:
                continue
            frame_texts, object_texts = got
            for start in range(0, len(frame_texts), DISPLAY_TEXTS):
                dm = bm.acquire_display_meta()
                for k, record in enumerate(frame_texts[start : start + DISPLAY_TEXTS]):
                    text = osd.Text()
                    text.display_text = record["text"]
                    text.x_offset, text.y_offset = 10, 10 + 24 * (start + k)
                    dm.add_text(text)
                    written += 1
                fm.append(dm)
            if object_texts:
                for i, om in enumerate(fm.object_items):
                    record = object_texts.get(i)
                    if record is None:
                        continue
                    um = bm.acquire_user_meta()
                    um.set_user_data_json(record, TEXT_META_TYPE)
                    om.append(um)
                    written += 1
        del bm
        return written
    finally:
        del buf
