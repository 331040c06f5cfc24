"""gst-python loader shim for the ``pytracker`` element (imports nothing heavy)."""

from pyinfer._gi import Gst

Gst.init_python()
from pyinfer.elements.tracker import TrackerElement  # noqa: E402

__gstelementfactory__ = ("pytracker", Gst.Rank.NONE, TrackerElement)
