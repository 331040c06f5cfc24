"""Text results (captions, answers, open-vocabulary labels) as ROI metas: pyinfer's text contract on GStreamer.

One ROI meta per text (``pyvlm``, issue #16), on every version of GStreamer (1.22 has no GstAnalytics, and
GstAnalytics has no text Mtd: a classification Mtd's class is a GQuark, and quarks are never freed, so free text
there would grow the process for ever):

- ``roi_type``: ``pyinfer-text``;
- ``id``: :data:`TEXT_ID` + k (k = 0, 1, ... per buffer, over every producer), far above the detection ids
  (0..N-1) that detection readers walk, so no reader of detections sees it;
- ``x, y, w, h``: the object's box (an object's text) or the whole frame;
- one param structure named ``pyinfer-text`` with ``text`` (string), ``unique-id`` (int: the producer),
  ``source-frame`` (guint64: the number of the frame the model read, counted by the producer from 0 at start),
  ``source-pts`` (guint64, ``GST_CLOCK_TIME_NONE`` when unknown), ``object`` (int: the object's index in
  :func:`pyinfer.meta.read_detections` order on this buffer, -1 for a text about the whole frame), ``prompt``
  (string: the prompt the model answered) and, for a tracked object, ``track-id`` (guint64).

:func:`read_texts` reads them back as :class:`~pyinfer.text.TextResult`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyinfer._gi import GObject, Gst, GstVideo
from pyinfer.text import TextResult

TEXT_ROI_TYPE = "pyinfer-text"
TEXT_PARAM = "pyinfer-text"
TEXT_ID = 2**30  # text records' ROI ids start here: below the frame record (2**31 - 1) and msgconv's payload
_CLOCK_TIME_NONE = 0xFFFF_FFFF_FFFF_FFFF
_MAX_TEXTS = 1 << 20


def count_texts(buf: Gst.Buffer) -> int:
    """How many text records ``buf`` carries (ids :data:`TEXT_ID` + 0, 1, ...)."""
    k = 0
    while k < _MAX_TEXTS and GstVideo.buffer_get_video_region_of_interest_meta_id(buf, TEXT_ID + k) is not None:
        k += 1
    return k


def write_texts(buf: Gst.Buffer, texts: Sequence[TextResult]) -> int:
    """Attach one text record per result to ``buf`` (writable), numbered after those already there."""
    first = count_texts(buf)
    for k, t in enumerate(texts):
        left, top, right, bottom = t.box
        x, y = max(0, int(left)), max(0, int(top))
        w, h = max(0, int(-(-right // 1)) - x), max(0, int(-(-bottom // 1)) - y)
        meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, TEXT_ROI_TYPE, x, y, w, h)
        if meta is None:
            raise RuntimeError("could not add a text ROI meta: the buffer is not writable")
        meta.id = TEXT_ID + first + k
        s = Gst.Structure.new_empty(TEXT_PARAM)
        s.set_value("text", t.text)
        s.set_value("unique-id", int(t.unique_id))
        s.set_value("source-frame", GObject.Value(GObject.TYPE_UINT64, int(t.source_frame)))
        pts = _CLOCK_TIME_NONE if t.source_pts is None else int(t.source_pts)
        s.set_value("source-pts", GObject.Value(GObject.TYPE_UINT64, pts))
        s.set_value("object", int(t.object_index))
        s.set_value("prompt", t.prompt)
        if t.track_id is not None:
            s.set_value("track-id", GObject.Value(GObject.TYPE_UINT64, int(t.track_id)))
        meta.add_param(s)
    return len(texts)


def read_texts(buf: Gst.Buffer) -> list[TextResult]:
    """Every text record on ``buf``, in the order written (see the module docs)."""
    out: list[TextResult] = []
    k = 0
    while k < _MAX_TEXTS:
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, TEXT_ID + k)
        if meta is None:
            break
        k += 1
        s = meta.get_param(TEXT_PARAM)
        if s is None or not s.has_field("text"):
            continue
        pts = int(s.get_value("source-pts")) if s.has_field("source-pts") else _CLOCK_TIME_NONE
        out.append(
            TextResult(
                text=str(s.get_value("text")),
                unique_id=int(s.get_value("unique-id")) if s.has_field("unique-id") else -1,
                source_frame=int(s.get_value("source-frame")) if s.has_field("source-frame") else -1,
                source_pts=None if pts == _CLOCK_TIME_NONE else pts,
                object_index=int(s.get_value("object")) if s.has_field("object") else -1,
                track_id=int(s.get_value("track-id")) if s.has_field("track-id") else None,
                prompt=str(s.get_value("prompt") or "") if s.has_field("prompt") else "",
                box=(float(meta.x), float(meta.y), float(meta.x + meta.w), float(meta.y + meta.h)),
            )
        )
    return out
