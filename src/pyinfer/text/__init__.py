"""Text models: images and a prompt in, text (or open-vocabulary detections) out (issue #16).

The contract a ``text-model`` callable follows (``pyvlm text-model=package.module:factory``)::

    def factory() -> Callable[[list[np.ndarray], str], list]: ...      # or factory(config: str), see below
    def model(images: list[np.ndarray], prompt: str) -> list[str | dict]: ...

``images`` are (H, W, 3) uint8 RGB arrays, each its own size (whole frames, or object crops in frame pixels);
the model returns one answer per image, in order: a ``str`` (a caption, an answer), or, for open-vocabulary
detectors, a ``dict`` with ``"boxes"`` ((N, 4) xyxy in the image's pixels), ``"labels"`` (N strings) and
optionally ``"scores"`` (N floats). :func:`check_answers` turns whatever came back into :class:`Answer` objects
or raises :class:`~pyinfer.errors.DecodeError` naming what is wrong. The factory is called once, at start; with
``model-config`` set it is called with that string as its one argument (a local weights folder, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyinfer.errors import DecodeError

__all__ = ["Answer", "TextResult", "check_answers"]


@dataclass(frozen=True)
class Answer:
    """One image's answer: ``text``, and for an open-vocabulary detector its boxes, labels and scores."""

    text: str
    boxes: np.ndarray | None = None  # (N, 4) float32 xyxy, in the image's pixels
    labels: tuple[str, ...] = ()
    scores: np.ndarray | None = None  # (N,) float32


@dataclass(frozen=True)
class TextResult:
    """A text attached to a frame: which model call made it, on which frame, for which object.

    ``source_frame`` is the frame number (counted by the producing element from 0 at start) of the frame the
    model read; ``object_index`` is the object's index in ``pyinfer.meta.read_detections`` order on the frame
    carrying the text, or -1 for a text about the whole frame; ``box`` is that object's box (xyxy, frame pixels)
    or the whole frame.
    """

    text: str
    unique_id: int
    source_frame: int
    source_pts: int | None
    object_index: int = -1
    track_id: int | None = None
    prompt: str = ""
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    extra: dict[str, Any] = field(default_factory=dict)


def check_answers(out: Any, n: int) -> list[Answer]:
    """A text model's return value for ``n`` images as ``n`` Answers; DecodeError when it breaks the contract."""
    if isinstance(out, (str, bytes)) or not isinstance(out, Sequence):
        raise DecodeError(
            f"the text model returned {type(out).__name__}; it must return a list with one str (or one dict of "
            f"boxes and labels) per image, {n} here"
        )
    if len(out) != n:
        raise DecodeError(f"the text model returned {len(out)} answers for {n} images")
    return [_answer(a, k) for k, a in enumerate(out)]


def _answer(a: Any, k: int) -> Answer:
    if isinstance(a, str):
        return Answer(a)
    if not isinstance(a, dict):
        raise DecodeError(f"answer {k} of the text model is a {type(a).__name__}; expected str or dict")
    if "boxes" not in a or "labels" not in a:
        raise DecodeError(f"answer {k} of the text model is a dict without 'boxes' and 'labels'")
    try:
        boxes = np.asarray(a["boxes"], np.float32).reshape(-1, 4)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"answer {k}: 'boxes' is not (N, 4) numbers: {exc}") from exc
    labels = a["labels"]
    if isinstance(labels, str) or not all(isinstance(s, str) for s in labels):
        raise DecodeError(f"answer {k}: 'labels' must be a list of str")
    if len(labels) != len(boxes):
        raise DecodeError(f"answer {k}: {len(boxes)} boxes but {len(labels)} labels")
    scores = a.get("scores")
    if scores is None:
        conf = np.ones(len(boxes), np.float32)
    else:
        conf = np.asarray(scores, np.float32).reshape(-1)
        if len(conf) != len(boxes):
            raise DecodeError(f"answer {k}: {len(boxes)} boxes but {len(conf)} scores")
    text = str(a.get("text") or ", ".join(labels))
    return Answer(text, boxes, tuple(labels), conf)
