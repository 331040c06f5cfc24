"""The one place that picks GObject-introspection versions and imports GStreamer bindings."""

from __future__ import annotations

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")

from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

__all__ = ["GLib", "GObject", "Gst", "GstBase", "GstVideo", "ensure_init", "gst_version"]


def ensure_init() -> None:
    """Initialise GStreamer once (a no-op inside gst-launch-1.0 or an app that already did)."""
    if not Gst.is_initialized():
        Gst.init(None)


def gst_version() -> tuple[int, int, int]:
    """The running GStreamer version as (major, minor, micro)."""
    major, minor, micro, _nano = Gst.version()
    return major, minor, micro
