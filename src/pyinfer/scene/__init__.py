"""Synthetic scenes with exact ground truth: the project's own data for training and evaluating a detector.

``Scene`` renders frames and truth; ``pyinfer.scene.video.write_scene`` (GStreamer, imported on demand) writes
an H.264 MP4 plus a truth JSONL beside it. ``Scene(..., rotated=True)`` gives spinning shapes with rotated boxes;
``Scene(..., marked=True)`` marks every object with a dot, a bar or nothing (``MARKS``), named in its truth.
"""

from __future__ import annotations

from pyinfer.scene.generator import CLASSES, MARKS, ROTATED_CLASSES, Scene, SceneObject, canonical_cxcywhr

__all__ = ["CLASSES", "MARKS", "ROTATED_CLASSES", "Scene", "SceneObject", "canonical_cxcywhr"]
