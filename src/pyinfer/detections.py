"""The central type: the detections of one frame, as a frozen struct of NumPy arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: ``tracker_id`` of a detection that belongs to no track (DeepStream's UNTRACKED_OBJECT_ID): the one sentinel.
UNTRACKED_ID = 0xFFFF_FFFF_FFFF_FFFF


def _check(name: str, value: np.ndarray, shape_tail: tuple[int, ...], n: int | None) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    want = (n if n is not None else "N", *shape_tail)
    if value.ndim != 1 + len(shape_tail) or value.shape[1:] != shape_tail or (n is not None and len(value) != n):
        raise ValueError(f"{name}: expected shape {want}, got {value.shape}")


@dataclass(frozen=True)
class Detections:
    """Detections for one frame, in pixels of that frame.

    Attributes:
        xyxy: (N, 4) float32 boxes, left, top, right, bottom. For rotated boxes, the enclosing box.
        confidence: (N,) float32 scores in [0, 1].
        class_id: (N,) int32 class indices into the labels.
        cxcywhr: (N, 5) float32 rotated boxes (angle in radians), or None for axis-aligned models.
        labels: the class names; ``label(i)`` falls back to the class id when a name is missing.
        extra: per-detection arrays of shape (N, ...), e.g. ``unique_id`` or ``roi_id``.
        tracker_id: (N,) uint64 track ids (:data:`UNTRACKED_ID` where a detection has none), or None when no
            tracker ran (supervision's name).
        masks: (N, S, S) uint8 instance masks, or None for models without masks. Each covers its detection's
            ``xyxy`` box: cell (i, j) is the box's point at ``(left + (j + 0.5) * width / S, top + (i + 0.5) *
            height / S)``; values are the mask probability x 255 (rounded), the object's pixels those >= 128
            (probability >= 0.5, ultralytics' threshold). See :meth:`frame_mask`.
        keypoints: (N, K, 3) float32 keypoints, or None for models without them: x, y in frame pixels (clipped to
            the frame, as ultralytics does) and the keypoint's confidence (visibility) in [0, 1].
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    cxcywhr: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    tracker_id: np.ndarray | None = None
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check("xyxy", self.xyxy, (4,), None)
        n = len(self.xyxy)
        _check("confidence", self.confidence, (), n)
        _check("class_id", self.class_id, (), n)
        if self.cxcywhr is not None:
            _check("cxcywhr", self.cxcywhr, (5,), n)
        if self.tracker_id is not None:
            _check("tracker_id", self.tracker_id, (), n)
            if self.tracker_id.dtype != np.uint64:
                raise TypeError(f"tracker_id: expected uint64, got {self.tracker_id.dtype}")
        if self.masks is not None:
            if not isinstance(self.masks, np.ndarray) or self.masks.dtype != np.uint8:
                raise TypeError(f"masks: expected a uint8 numpy array, got {getattr(self.masks, 'dtype', self.masks)}")
            if self.masks.ndim != 3 or len(self.masks) != n:
                raise ValueError(f"masks: expected shape ({n}, S, S), got {self.masks.shape}")
        if self.keypoints is not None:
            if not isinstance(self.keypoints, np.ndarray):
                raise TypeError(f"keypoints: expected a numpy array, got {type(self.keypoints).__name__}")
            if self.keypoints.ndim != 3 or len(self.keypoints) != n or self.keypoints.shape[2] != 3:
                raise ValueError(f"keypoints: expected shape ({n}, K, 3), got {self.keypoints.shape}")
        if "track_id" in self.extra:
            raise ValueError("extra['track_id'] is now the tracker_id field of Detections")
        for key, value in self.extra.items():
            if not isinstance(value, np.ndarray) or value.ndim < 1 or len(value) != n:
                shape = getattr(value, "shape", type(value).__name__)
                raise ValueError(f"extra[{key!r}]: expected an array of length {n}, got {shape}")

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: slice | np.ndarray | list[int]) -> Detections:
        """Select detections by slice, index array or boolean mask; returns a new Detections."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            cxcywhr=None if self.cxcywhr is None else self.cxcywhr[index],
            labels=self.labels,
            extra={k: v[index] for k, v in self.extra.items()},
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            masks=None if self.masks is None else self.masks[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
        )

    def frame_mask(self, i: int, width: int, height: int) -> np.ndarray:
        """Detection ``i``'s mask as a (height, width) bool array over the whole frame (nearest cell).

        Raises ValueError when the detections carry no masks.
        """
        if self.masks is None:
            raise ValueError("these detections carry no masks")
        out = np.zeros((height, width), bool)
        x1, y1, x2, y2 = (float(v) for v in self.xyxy[i])
        c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width)
        r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height)
        if c1 <= c0 or r1 <= r0 or x2 <= x1 or y2 <= y1:
            return out
        s = self.masks.shape[1]
        # pixel centres inside the box, to the cell that holds them
        xs = (np.arange(c0, c1) + 0.5 - x1) * (s / (x2 - x1))
        ys = (np.arange(r0, r1) + 0.5 - y1) * (s / (y2 - y1))
        cx, cy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
        inside_x, inside_y = (cx >= 0) & (cx < s), (cy >= 0) & (cy < s)
        cells = self.masks[i][np.clip(cy, 0, s - 1)[:, None], np.clip(cx, 0, s - 1)[None, :]] >= 128
        out[r0:r1, c0:c1] = cells & inside_y[:, None] & inside_x[None, :]
        return out

    def label(self, i: int) -> str:
        """The class name of detection ``i``: its own label where ``extra["label"]`` holds one (detections of several
        producers, whose class ids mean different classes), else its class id's entry in ``labels`` (the class id as
        text when there is none)."""
        for key in ("label", "foreign_label"):  # foreign_label: another producer's GstAnalytics object
            own = self.extra.get(key)
            if own is not None and own[i]:
                return str(own[i])
        c = int(self.class_id[i])
        return self.labels[c] if 0 <= c < len(self.labels) else str(c)

    def tracked(self) -> np.ndarray:
        """(N,) bool: the detection has a track id."""
        if self.tracker_id is None:
            return np.zeros(len(self), bool)
        return self.tracker_id != UNTRACKED_ID

    @property
    def ltwh(self) -> np.ndarray:
        """(N, 4) float32 boxes as left, top, width, height."""
        out = self.xyxy.copy()
        out[:, 2:] -= out[:, :2]
        return out

    @classmethod
    def empty(cls, *, rotated: bool = False, labels: tuple[str, ...] = ()) -> Detections:
        """No detections."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
            cxcywhr=np.zeros((0, 5), np.float32) if rotated else None,
            labels=labels,
        )
