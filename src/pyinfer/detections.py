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
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    cxcywhr: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    tracker_id: np.ndarray | None = None

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
        )

    def label(self, i: int) -> str:
        """The class name of detection ``i`` (its class id as text when the labels have no such entry)."""
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
