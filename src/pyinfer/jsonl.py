"""JSON lines, one record per frame: detections written by ``pyinfer detect`` and scene ground truth.

Schema (the same for both)::

    {"frame": 0, "pts_ns": 0, "width": 640, "height": 480,
     "objects": [{"bbox": [left, top, width, height], "confidence": 0.97, "class_id": 1, "label": "square"}]}

Ground truth adds ``"object_id"`` (a stable identity per object), and in marked scenes ``"mark"`` (``plain``,
``dot`` or ``bar``: ``pyinfer.scene.MARKS``); detections may add ``"unique_id"``,
``"track_id"`` (null for an object the tracker did not track) and the other ``Detections.extra`` fields.
Rotated boxes add ``"cxcywhr"``: ``[cx, cy, w, h, angle]`` in pixels and radians (clockwise in image
coordinates); ``bbox`` is then the enclosing box. Pose models add ``"keypoints"``: ``[[x, y, confidence],
...]`` in frame pixels. Segmentation models add ``"mask"``: ``{"size": [S, S], "counts": [...]}``, the
box-local mask (``Detections.masks`` >= 128) over ``bbox`` as an S x S grid, run-length encoded as COCO's
uncompressed RLE (column-major, the first run counts background cells; :func:`mask_rle`, :func:`rle_mask`).
Frames that passed ``pyvlm`` add ``"texts"`` (answers about the whole frame) and objects ``"texts"`` (answers about
that object): ``[{"text", "prompt", "unique_id", "source_frame", "source_pts_ns"}, ...]``, ``source_frame`` being
the frame the model read (:func:`text_entries`). ``pyinfer detect`` writes each line as its frame comes
(:class:`JsonLinesWriter`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyinfer.detections import UNTRACKED_ID, Detections
from pyinfer.errors import ConfigError

#: ``extra`` entries that :meth:`Detections.label` reads (not written as fields of their own).
_LABEL_KEYS = ("label", "foreign_label")


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """A (H, W) bool mask as COCO's uncompressed RLE: ``{"size": [H, W], "counts": [...]}`` (column-major runs,
    alternately background and foreground, the first one background, possibly 0)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def rle_mask(rle: dict[str, Any]) -> np.ndarray:
    """:func:`mask_rle` undone: the (H, W) bool mask."""
    h, w = (int(v) for v in rle["size"])
    counts = [int(c) for c in rle["counts"]]
    if sum(counts) != h * w:
        raise ConfigError(f"mask RLE counts add up to {sum(counts)}, not {h} x {w}")
    values = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return values.reshape((h, w), order="F")


def frame_record(
    frame: int, pts_ns: int | None, width: int, height: int, detections: Detections,
    secondary: list[dict[int, list[tuple[int, str, float]]]] | None = None,
    parents: list[int] | None = None,
    texts: Sequence[Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Build one frame's record from its detections (boxes rounded to 0.01 px).

    ``secondary``: per detection, the secondary classifiers' top-k (``pyinfer.meta.read_secondary_results``);
    each object then lists their best classes in ``classifications`` (``unique_id``, ``class_id``, ``label``,
    ``confidence``), by unique id. ``parents``: per detection, the index of the object it was found inside (a
    secondary detector), or -1; such objects get ``parent``, that index in ``objects``. ``texts``: the frame's
    text results (``pyinfer.meta.text.read_texts``, pyvlm): the frame's own go to the record's ``texts``, an
    object's to its ``texts`` (:func:`text_entries`).
    """
    ltwh = np.round(detections.ltwh.astype(np.float64), 2)
    rot = None if detections.cxcywhr is None else detections.cxcywhr.astype(np.float64).tolist()
    objects = []
    for i in range(len(detections)):
        obj: dict[str, Any] = {
            "bbox": [float(v) for v in ltwh[i]],
            "confidence": round(float(detections.confidence[i]), 4),
            "class_id": int(detections.class_id[i]),
            "label": detections.label(i),
        }
        if rot is not None:
            cx, cy, w, h, a = rot[i]
            obj["cxcywhr"] = [round(cx, 2), round(cy, 2), round(w, 2), round(h, 2), round(a, 5)]
        for key, values in detections.extra.items():
            if key in _LABEL_KEYS:  # already in "label"
                continue
            value = values[i]
            obj[key] = value.item() if isinstance(value, np.generic) else value.tolist()
        if detections.keypoints is not None and detections.keypoints[i].any():  # all 0: the object has none
            obj["keypoints"] = np.round(detections.keypoints[i].astype(np.float64), 2).tolist()
        if detections.masks is not None and detections.masks[i].any():
            obj["mask"] = mask_rle(detections.masks[i] >= 128)
        if detections.tracker_id is not None:
            tid = int(detections.tracker_id[i])
            obj["track_id"] = None if tid == UNTRACKED_ID else tid  # null: untracked, as in pymsgconv's messages
        if secondary is not None and i < len(secondary) and secondary[i]:
            obj["classifications"] = classification_entries(secondary[i])
        if parents is not None and i < len(parents) and 0 <= parents[i] < len(detections):
            obj["parent"] = int(parents[i])
        objects.append(obj)
    rec = {"frame": frame, "pts_ns": pts_ns, "width": width, "height": height, "objects": objects}
    if texts:
        whole = [t for t in texts if t.object_index < 0]
        if whole:
            rec["texts"] = text_entries(whole)
        for i, obj in enumerate(objects):
            own = [t for t in texts if t.object_index == i]
            if own:
                obj["texts"] = text_entries(own)
    return rec


def text_entries(texts: Sequence[Any]) -> list[dict[str, Any]]:
    """Text results (:class:`pyinfer.text.TextResult`) as JSON objects: ``text``, ``prompt``, ``unique_id``,
    ``source_frame`` (the number of the frame the model read, counted by its producer) and ``source_pts_ns``."""
    return [
        {"text": t.text, "prompt": t.prompt, "unique_id": int(t.unique_id), "source_frame": int(t.source_frame),
         "source_pts_ns": None if t.source_pts is None else int(t.source_pts)}
        for t in texts
    ]  # fmt: skip


def classification_entries(found: dict[int, list[tuple[int, str, float]]]) -> list[dict[str, Any]]:
    """The best class of each secondary (``{unique_id: top-k}``) as JSON objects, by unique id."""
    return [
        {"unique_id": int(uid), "class_id": int(topk[0][0]), "label": str(topk[0][1]),
         "confidence": round(float(topk[0][2]), 4)}
        for uid, topk in sorted(found.items())
        if topk
    ]  # fmt: skip


def dump_record(rec: dict[str, Any]) -> str:
    """One record as its JSON line, newline included."""
    return json.dumps(rec, separators=(",", ":")) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records, one JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(dump_record(rec))


class JsonLinesWriter:
    """Streams records to a file as they come, each line whole and flushed, so a reader (or an interrupted run)
    never sees half a record. Opening the file is the check that it can be written: do it before the work.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.count = 0
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record and flush it to the file."""
        self._file.write(dump_record(rec))  # one write per line: a line is in the file whole or not at all
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _validate(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key, kind in (("frame", int), ("width", int), ("height", int), ("objects", list)):
        if not isinstance(rec.get(key), kind) or isinstance(rec.get(key), bool):
            raise ConfigError(f"{where}: field {key!r} must be {kind.__name__}, got {rec.get(key)!r:.60}")
    for j, obj in enumerate(rec["objects"]):
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: objects[{j}] must be an object")
        bbox = obj.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            raise ConfigError(f"{where}: objects[{j}].bbox must be 4 numbers [left, top, width, height]")
        if not isinstance(obj.get("class_id"), int) or isinstance(obj.get("class_id"), bool):
            raise ConfigError(f"{where}: objects[{j}].class_id must be an integer")
        conf = obj.get("confidence", 1.0)
        if not isinstance(conf, (int, float)) or isinstance(conf, bool):
            raise ConfigError(f"{where}: objects[{j}].confidence must be a number")
    return rec


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read and validate records; raises ConfigError naming the file and line of the first bad one."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        # Bytes, decoded line by line: in text mode a bad byte raises UnicodeDecodeError from the file
        # iterator, outside the try, and the error would name neither the file nor the line.
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
            yield _validate(rec, where)


def record_detections(rec: dict[str, Any]) -> Detections:
    """Turn one record's objects back into Detections (boxes as xyxy)."""
    objs = rec["objects"]
    if not objs:
        return Detections.empty()
    ltwh = np.array([o["bbox"] for o in objs], np.float32)
    xyxy = ltwh.copy()
    xyxy[:, 2:] += xyxy[:, :2]
    extra = {}
    if all("object_id" in o for o in objs):
        extra["object_id"] = np.array([o["object_id"] for o in objs], np.int64)
    return Detections(
        xyxy=xyxy,
        confidence=np.array([o.get("confidence", 1.0) for o in objs], np.float32),
        class_id=np.array([o["class_id"] for o in objs], np.int32),
        extra=extra,
    )
