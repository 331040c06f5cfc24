"""The per-batch inference parameters and their defaults, defined once.

The element's properties, the CLI's options, :meth:`pyinfer.engine.Engine.submit` and the fast path
(:mod:`pyinfer.accel`) all take their defaults from :data:`DEFAULT_PARAMS`. :func:`parse_class_ids` reads a class-id
list as the element's ``operate-on-class-ids`` and nvinfer config files write it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfer.errors import ConfigError


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


def parse_class_ids(text: str) -> frozenset[int]:
    """``"0;2"``, ``"0:2"`` or ``"0,2"`` -> {0, 2}; empty -> every class. ConfigError names a bad entry."""
    out = set()
    for part in text.replace(";", ",").replace(":", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.add(int(part))
        except ValueError:
            raise ConfigError(f"operate-on-class-ids: {part!r} is not a class id (expected e.g. '0;2')") from None
    return frozenset(out)
