"""ByteTrack-style multi-object tracking in NumPy: Kalman motion, two-stage association by score.

Per inferred frame (:meth:`ByteTracker.update`):

1. every track is predicted one frame ahead (:mod:`pyinfer.track.kalman`);
2. detections scoring >= ``high_threshold`` are matched to the confirmed tracks (tracked or lost) by IoU,
   greedily, keeping pairs with IoU >= ``match_iou_threshold``;
3. detections scoring in [``low_threshold``, ``high_threshold``) are matched to the confirmed tracks still
   unmatched that were matched at the previous inferred frame, with IoU >= 0.5 (ByteTrack's second stage:
   weak detections only continue tracks, they never start or revive one);
4. remaining high detections are matched to tentative tracks (IoU >= 0.3); unmatched tentative tracks end;
5. remaining high detections scoring >= ``new_track_threshold`` start tentative tracks. A track is
   confirmed, and gets its id (1, 2, 3, ... per tracker), after ``min_hits`` matched frames, or at once in
   the first inferred frame after a reset;
6. tracks not matched for more than ``max_age`` frames end.

Frames without inference (:meth:`ByteTracker.predict`) advance the motion model only. IoU is axis-aligned
on the boxes enclosing the tracks, or exact rotated IoU (``iou_mode``). Rotated measurements are first
turned into the representation closest to the track's angle ((w, h, a) is the same rectangle as
(h, w, a + pi/2) and (w, h, a + pi)), so width, height and angle filter smoothly.

Tracks live in a struct of arrays (one row per track), so a frame costs a fixed number of NumPy calls.

:class:`ByteTracker` runs this algorithm in C (:mod:`pyinfer.track._native`, one call per frame: ~20x faster
at 100 objects) where the native library is built and passes its ABI check, else :class:`NumpyByteTracker`,
the NumPy reference it is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pyinfer.detections import UNTRACKED_ID as _UNTRACKED
from pyinfer.detections import Detections
from pyinfer.errors import ConfigError
from pyinfer.ops.rotated import enclosing_xyxy, rotated_iou, xyxy_to_cxcywhr
from pyinfer.track import kalman
from pyinfer.track.assignment import greedy_match

#: Track id of a detection that belongs to no confirmed track (:data:`pyinfer.detections.UNTRACKED_ID`).
UNTRACKED_ID = np.uint64(_UNTRACKED)
IOU_MODES = ("auto", "axis", "rotated")
LOW_MATCH_IOU = 0.5  # ByteTrack's second association (its 1 - 0.5 distance)
TENTATIVE_MATCH_IOU = 0.3  # ByteTrack's unconfirmed association (its 1 - 0.7 distance)


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings (the ``pytracker`` properties of the same names).

    Attributes:
        high_threshold: detections scoring at least this are matched first and may start tracks.
        low_threshold: detections scoring below this are ignored; between the two they only continue tracks.
        new_track_threshold: an unmatched high detection starts a track only when scoring at least this.
        match_iou_threshold: the lowest IoU of a first-stage (high detection, track) pair.
        max_age: frames a track survives without a matched detection.
        min_hits: matched frames before a track is confirmed and gets an id.
        class_aware: match only detections and tracks of the same class.
        iou_mode: ``auto`` (rotated IoU when the detections carry rotated boxes), ``axis`` or ``rotated``.
    """

    high_threshold: float = 0.5
    low_threshold: float = 0.1
    new_track_threshold: float = 0.6
    match_iou_threshold: float = 0.2
    max_age: int = 30
    min_hits: int = 2
    class_aware: bool = False
    iou_mode: str = "auto"

    def __post_init__(self) -> None:
        for name in ("high_threshold", "low_threshold", "new_track_threshold", "match_iou_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.low_threshold > self.high_threshold:
            raise ConfigError(
                f"low_threshold ({self.low_threshold}) must not exceed high_threshold ({self.high_threshold})"
            )
        if self.max_age < 0 or self.min_hits < 1:
            raise ConfigError(f"max_age must be >= 0 and min_hits >= 1, got {self.max_age} and {self.min_hits}")
        if self.iou_mode not in IOU_MODES:
            raise ConfigError(f"iou_mode must be one of {', '.join(IOU_MODES)}, got {self.iou_mode!r}")


def _wrap_half_pi(angle: np.ndarray) -> np.ndarray:
    """Angles folded into [-pi/2, pi/2): a rectangle turned by pi is the same rectangle."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) xyxy boxes, computed only for the pairs that overlap (the tracker's hot
    path: a frame's boxes mostly overlap only their own track, so this is several times cheaper than dense)."""
    out = np.zeros((len(a), len(b)))
    i, j = np.nonzero(
        (a[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < a[:, None, 2])
        & (a[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < a[:, None, 3])
    )  # fmt: skip
    if len(i):
        ai, bj = a[i], b[j]
        inter = (np.minimum(ai[:, 2], bj[:, 2]) - np.maximum(ai[:, 0], bj[:, 0])) * (
            np.minimum(ai[:, 3], bj[:, 3]) - np.maximum(ai[:, 1], bj[:, 1])
        )
        union = (ai[:, 2] - ai[:, 0]) * (ai[:, 3] - ai[:, 1]) + (bj[:, 2] - bj[:, 0]) * (bj[:, 3] - bj[:, 1]) - inter
        out[i, j] = inter / union  # overlapping boxes have a positive union
    return out


def _closest_representation(z: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N, 5) boxes rewritten as the equivalent (w, h, a) closest in angle to ``angle`` (N,)."""
    k = np.round((angle - z[:, 4]) / (math.pi / 2))
    out = z.copy()
    out[:, 4] = z[:, 4] + k * (math.pi / 2)
    odd = (k.astype(np.int64) % 2) == 1
    out[odd, 2], out[odd, 3] = z[odd, 3], z[odd, 2]
    return out


class NumpyByteTracker:
    """One stream's tracker state in NumPy; see the module docs for the algorithm. The reference that the
    native core (:mod:`pyinfer.track._native`) is tested against, and the fallback where it is not built.

    Args:
        config: the settings; may be replaced between frames through :attr:`config`.
    """

    backend = "numpy"

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again at 1."""
        self._mean = np.zeros((0, kalman.STATE_DIM))
        self._cov = np.zeros((0, 3, kalman.MEASURE_DIM))
        self._id = np.zeros(0, np.uint64)  # 0 while tentative
        self._hits = np.zeros(0, np.int64)
        self._missed = np.zeros(0, np.int64)  # consecutive inferred frames without a match
        self._since = np.zeros(0, np.int64)  # frames since the last match
        self._class = np.zeros(0, np.int32)
        self._score = np.zeros(0, np.float32)
        self._rotated = np.zeros(0, bool)
        self._next_id = 1
        self._updates = 0

    def __len__(self) -> int:
        """Live tracks (tentative, tracked and lost)."""
        return len(self._id)

    @property
    def confirmed_count(self) -> int:
        """Live tracks that have an id."""
        return int((self._id != 0).sum())

    # -- per frame ---------------------------------------------------------------------------------------
    def update(self, detections: Detections) -> np.ndarray:
        """Advance one inferred frame with its detections.

        Returns:
            (N,) uint64 track id per detection; :data:`UNTRACKED_ID` for detections that belong to no
            confirmed track (low scores left unmatched, or tentative tracks).
        """
        cfg = self.config
        self._advance()
        n = len(detections)
        out = np.full(n, UNTRACKED_ID, np.uint64)
        if detections.cxcywhr is not None:
            boxes = detections.cxcywhr.astype(np.float64)
        else:
            boxes = xyxy_to_cxcywhr(detections.xyxy)
        rotated = cfg.iou_mode == "rotated" or (cfg.iou_mode == "auto" and detections.cxcywhr is not None)
        conf = detections.confidence
        cls = detections.class_id
        high = np.flatnonzero(conf >= cfg.high_threshold)
        low = np.flatnonzero((conf >= cfg.low_threshold) & (conf < cfg.high_threshold))
        confirmed = self._id != 0
        # One IoU matrix (every detection x every track) serves the three stages.
        track_boxes = self._boxes()
        if rotated:
            # Pairs below the lowest threshold any stage uses can never match: skip their exact IoU.
            floor = min(cfg.match_iou_threshold, LOW_MATCH_IOU, TENTATIVE_MATCH_IOU)
            iou = rotated_iou(boxes, track_boxes, min_iou=floor)
        else:
            iou = _box_iou(enclosing_xyxy(boxes), enclosing_xyxy(track_boxes))
        if cfg.class_aware:
            iou[cls[:, None] != self._class[None, :]] = 0.0

        def match(dets: np.ndarray, tracks: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
            if len(dets) == 0 or len(tracks) == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            r, c = greedy_match(iou[np.ix_(dets, tracks)], threshold)
            return dets[r], tracks[c]

        # Stage 1: strong detections against every confirmed track.
        d1, t1 = match(high, np.flatnonzero(confirmed), cfg.match_iou_threshold)
        free_track = np.ones(len(self), bool)
        free_track[t1] = False
        # Stage 2: weak detections continue confirmed tracks that were matched at the last inferred frame.
        d2, t2 = match(low, np.flatnonzero(confirmed & free_track & (self._missed == 0)), LOW_MATCH_IOU)
        free_track[t2] = False
        # Stage 3: remaining strong detections against tentative tracks.
        free_det = np.ones(n, bool)
        free_det[d1] = False
        high_left = high[free_det[high]]
        d3, t3 = match(high_left, np.flatnonzero(~confirmed), TENTATIVE_MATCH_IOU)
        free_det[d3] = False
        free_track[t3] = False

        dets_m = np.concatenate([d1, d2, d3])
        tracks_m = np.concatenate([t1, t2, t3])
        if len(tracks_m):
            z = _closest_representation(boxes[dets_m], self._mean[tracks_m, 4])
            self._mean[tracks_m], self._cov[tracks_m] = kalman.update(self._mean[tracks_m], self._cov[tracks_m], z)
            self._hits[tracks_m] += 1
            self._missed[tracks_m] = 0
            self._since[tracks_m] = 0
            self._class[tracks_m] = cls[dets_m]
            self._score[tracks_m] = conf[dets_m]
            self._rotated[tracks_m] = detections.cxcywhr is not None
        unmatched = free_track
        self._missed[unmatched] += 1
        # Tentative tracks end at their first miss; others after max_age frames without a match.
        keep = ~(unmatched & ~confirmed) & (self._since <= cfg.max_age)
        first = self._updates == 0
        self._updates += 1
        self._confirm(first)
        out[dets_m] = self._id[tracks_m]
        out[out == 0] = UNTRACKED_ID
        self._compact(keep)

        new = np.flatnonzero(free_det)
        new = new[conf[new] >= max(cfg.new_track_threshold, cfg.high_threshold)]
        if len(new):
            start = len(self)
            self._add(boxes[new], cls[new], conf[new], rotated=detections.cxcywhr is not None)
            self._confirm(first)
            out[new] = self._id[start:]
            out[out == 0] = UNTRACKED_ID
        return out

    def predict(self) -> Detections:
        """Advance one frame without inference; returns the predicted boxes of the confirmed tracks that were
        matched at the last inferred frame.

        Returns:
            Detections (boxes of the predicted tracks, their last class and score; ``cxcywhr`` when any of
            them is rotated) with ``tracker_id`` (uint64) and ``extra["frames_since_update"]`` (int64).
        """
        self._advance()
        keep = self._since <= self.config.max_age
        self._compact(keep)
        sel = np.flatnonzero((self._id != 0) & (self._missed == 0))
        return self._as_detections(sel)

    def tracks(self) -> Detections:
        """The current state of every confirmed track (lost ones included), as :meth:`predict` returns it."""
        return self._as_detections(np.flatnonzero(self._id != 0))

    # -- internals ---------------------------------------------------------------------------------------
    def _advance(self) -> None:
        self._mean, self._cov = kalman.predict(self._mean, self._cov)
        self._since += 1

    def _boxes(self) -> np.ndarray:
        boxes = self._mean[:, :5].copy()
        boxes[:, 2:4] = np.maximum(boxes[:, 2:4], 0.0)
        return boxes

    def _confirm(self, first: bool) -> None:
        ready = (self._id == 0) & ((self._hits >= self.config.min_hits) | first)
        count = int(ready.sum())
        if count:
            self._id[ready] = np.arange(self._next_id, self._next_id + count, dtype=np.uint64)
            self._next_id += count

    def _add(self, boxes: np.ndarray, cls: np.ndarray, conf: np.ndarray, *, rotated: bool) -> None:
        mean, cov = kalman.initiate(boxes)
        n = len(boxes)
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._id = np.concatenate([self._id, np.zeros(n, np.uint64)])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._missed = np.concatenate([self._missed, np.zeros(n, np.int64)])
        self._since = np.concatenate([self._since, np.zeros(n, np.int64)])
        self._class = np.concatenate([self._class, cls.astype(np.int32)])
        self._score = np.concatenate([self._score, conf.astype(np.float32)])
        self._rotated = np.concatenate([self._rotated, np.full(n, rotated)])

    def _compact(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        for name in ("_mean", "_cov", "_id", "_hits", "_missed", "_since", "_class", "_score", "_rotated"):
            setattr(self, name, getattr(self, name)[keep])

    def _as_detections(self, sel: np.ndarray) -> Detections:
        boxes = self._boxes()[sel]
        boxes[:, 4] = _wrap_half_pi(boxes[:, 4])
        return track_detections(
            boxes, enclosing_xyxy(boxes), self._score[sel], self._class[sel], self._rotated[sel], self._id[sel],
            self._since[sel],
        )  # fmt: skip


def track_detections(
    boxes: np.ndarray, xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, rotated: np.ndarray,
    track_id: np.ndarray, since: np.ndarray,
) -> Detections:  # fmt: skip
    """Tracks as :class:`Detections` (what ``predict`` and ``tracks`` return, whichever the backend): copies of
    the given arrays, float32 boxes, ``cxcywhr`` when any track is rotated."""
    return Detections(
        xyxy=xyxy.astype(np.float32),
        confidence=score.copy(),
        class_id=cls.copy(),
        cxcywhr=boxes.astype(np.float32) if rotated.any() else None,
        extra={"frames_since_update": since.copy()},
        tracker_id=track_id.astype(np.uint64),
    )


BACKENDS = ("auto", "native", "numpy")


class Tracker(Protocol):
    """What :func:`ByteTracker` returns, whichever the backend."""

    backend: str
    config: TrackerConfig

    def update(self, detections: Detections) -> np.ndarray: ...
    def predict(self) -> Detections: ...
    def tracks(self) -> Detections: ...
    def reset(self) -> None: ...
    def __len__(self) -> int: ...
    @property
    def confirmed_count(self) -> int: ...


def native_available() -> bool:
    """Whether the native core is built, loads and passes its ABI check (see :mod:`pyinfer.track._native`)."""
    from pyinfer.track import _native

    return _native.load() is not None


def ByteTracker(config: TrackerConfig | None = None, *, backend: str = "auto") -> Tracker:  # a class to its callers
    """A tracker for one stream: the native core when available (``auto``), or the one asked for.

    Args:
        config: the settings (default :class:`TrackerConfig`); may be replaced between frames via ``.config``.
        backend: ``auto``, ``native`` (an error where the library is unavailable) or ``numpy``.

    Returns:
        A :class:`NumpyByteTracker` or a :class:`pyinfer.track._native.NativeByteTracker`: the same methods
        (``update``, ``predict``, ``tracks``, ``reset``, ``len``, ``confirmed_count``, ``config``) and results;
        ``.backend`` says which.
    """
    config = config or TrackerConfig()
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "numpy":
        from pyinfer.track import _native

        lib = _native.load()
        if lib is not None:
            return _native.NativeByteTracker(config, lib)
        if backend == "native":
            raise ConfigError(
                f"the native tracker is not available ({_native.LIB_PATH} not built, not loadable or failing its "
                "ABI check: `make setup` or `pip install` builds it)"
            )
    return NumpyByteTracker(config)
