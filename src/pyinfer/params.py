"""The per-batch inference parameters and their defaults, defined once.

The element's properties, the CLI's options, :meth:`pyinfer.engine.Engine.submit` and the fast path
(:mod:`pyinfer.accel`) all take their defaults from :data:`DEFAULT_PARAMS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferParams:
    """Thresholds and limits for one batch.

    Attributes:
        conf_threshold: drop detections scoring at or below this.
        iou_threshold: class-aware NMS IoU threshold.
        max_detections: keep at most this many detections per frame (highest confidence first).
    """

    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300


DEFAULT_PARAMS = InferParams()
