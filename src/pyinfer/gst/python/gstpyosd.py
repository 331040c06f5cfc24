"""gst-python loader shim for the ``pyosd`` element (imports nothing heavy)."""

from pyinfer._gi import Gst

Gst.init_python()
from pyinfer.elements.osd import OsdElement  # noqa: E402

__gstelementfactory__ = ("pyosd", Gst.Rank.NONE, OsdElement)
