"""Output decoders: model output tensors -> per-frame Detections. Keys are the ``decoder`` property values."""

from __future__ import annotations

from collections.abc import Callable

from pyinfer.decoders.yolo import YoloV8Decoder
from pyinfer.errors import ConfigError

DECODERS: dict[str, Callable[[], object]] = {"yolov8": YoloV8Decoder}


def get_decoder(name: str) -> YoloV8Decoder:
    """The decoder registered under ``name``; ConfigError listing the known ones otherwise."""
    try:
        return DECODERS[name]()
    except KeyError:
        raise ConfigError(f"unknown decoder {name!r}; known decoders: {', '.join(sorted(DECODERS))}") from None
