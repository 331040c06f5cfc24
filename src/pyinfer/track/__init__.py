"""Multi-object tracking in NumPy (no GStreamer): ByteTrack-style association, Kalman motion, metrics.

- :mod:`pyinfer.track.bytetrack`: :class:`ByteTracker` and :class:`TrackerConfig`;
- :mod:`pyinfer.track.kalman`: the constant-velocity filter for (rotated) boxes;
- :mod:`pyinfer.track.assignment`: greedy and optimal (Hungarian) matching;
- :mod:`pyinfer.track.metrics`: MOTA, IDF1 and ID switches against ground-truth identities.
"""

from __future__ import annotations

from pyinfer.track.bytetrack import UNTRACKED_ID, ByteTracker, NumpyByteTracker, TrackerConfig, native_available

__all__ = ["UNTRACKED_ID", "ByteTracker", "NumpyByteTracker", "TrackerConfig", "native_available"]
