"""gst-python loader shim for the ``pyinfer`` element (named gstpyinfer so it cannot shadow the package)."""

from pyinfer._gi import Gst

Gst.init_python()  # GStreamer is already initialised by the loader; this sets up the Python side
from pyinfer.elements.infer import InferElement  # noqa: E402

__gstelementfactory__ = ("pyinfer", Gst.Rank.NONE, InferElement)
