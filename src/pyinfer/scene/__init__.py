"""Synthetic scenes with exact ground truth: the project's own data for training and evaluating a detector.

``Scene`` renders frames and truth; ``pyinfer.scene.video.write_scene`` (GStreamer, imported on demand) writes
an H.264 MP4 plus a truth JSONL beside it.
"""

from __future__ import annotations

from pyinfer.scene.generator import CLASSES, Scene, SceneObject

__all__ = ["CLASSES", "Scene", "SceneObject"]
