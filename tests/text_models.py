"""Text models for the pyvlm tests (issue #16): each answer says what the model saw, so a test can check it.

Frames from ``tests/elements/test_vlm.py`` carry their number in their pixels (``frame_value``); object crops
are filled with a colour per object.
"""

from __future__ import annotations

import threading
import time

import numpy as np

CALLS: list[tuple[int, str]] = []  # (images, prompt) per call of ``recording``
_LOCK = threading.Lock()


def frame_value(image: np.ndarray) -> int:
    """The number a test frame carries: its top-left pixel's red and green bytes."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


def slow(config: str = "0.2"):
    """Sleeps ``config`` seconds per call, then answers ``value N`` (N: the frame's number) per image."""
    delay = float(config)

    def model(images, prompt):
        time.sleep(delay)
        return [f"value {frame_value(im)}" for im in images]

    return model


def recording(config: str = "0.05"):
    """Like :func:`slow`, answering ``<prompt>|value N``; keeps each call's (images, prompt) in CALLS."""
    delay = float(config)

    def model(images, prompt):
        with _LOCK:
            CALLS.append((len(images), prompt))
        time.sleep(delay)
        return [f"{prompt}|value {frame_value(im)}" for im in images]

    return model


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def colour(config: str = "0.05"):
    """Answers each crop's colour name (the nearest of COLOURS to its mean) and its size: ``red 40x30``."""
    delay = float(config)

    def model(images, prompt):
        time.sleep(delay)
        out = []
        for im in images:
            mean = im.reshape(-1, 3).mean(0)
            name = min(COLOURS, key=lambda c: float(((mean - np.array(COLOURS[c])) ** 2).sum()))
            out.append(f"{name} {im.shape[1]}x{im.shape[0]}")
        return out

    return model


def open_vocab():
    """An open-vocabulary detector: one box, the image's centre quarter, labelled ``thing N``."""

    def model(images, prompt):
        out = []
        for im in images:
            h, w = im.shape[:2]
            out.append({"boxes": [[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], "labels": [f"thing {frame_value(im)}"],
                        "scores": [0.5]})  # fmt: skip
        return out

    return model


def raising():
    def model(images, prompt):
        raise ValueError("the slow model broke")

    return model


def one_string():
    """Breaks the contract: one str for the whole batch."""

    def model(images, prompt):
        return "a caption"

    return model


def too_few():
    def model(images, prompt):
        return []

    return model


def not_a_model():
    return 42


def failing_factory():
    raise RuntimeError("weights not found in /nowhere")


def exits():
    def model(images, prompt):
        raise SystemExit(3)

    return model


def mean(config: str = "0.0"):
    """Answers each image's mean pixel value and size, ``mean 93.125 320x240`` (checkable against the frame)."""
    delay = float(config)

    def model(images, prompt):
        time.sleep(delay)
        return [f"mean {float(im.mean()):.3f} {im.shape[1]}x{im.shape[0]}" for im in images]

    return model
