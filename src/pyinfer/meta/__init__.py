"""Metadata writers and readers. The public contract on plain GStreamer is :mod:`pyinfer.meta.roi`."""

from __future__ import annotations

from pyinfer.meta.roi import read_detections, write_detections

__all__ = ["read_detections", "write_detections"]
