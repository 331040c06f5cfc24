"""gst-python loader shim for the ``pyvlm`` element (named gstpyvlm so it cannot shadow a package)."""

import os
import sys

# `pyinfer env` exports PYINFER_PYTHONPATH (pyinfer and its dependencies) for this loader's interpreter only.
for _p in reversed([p for p in os.environ.get("PYINFER_PYTHONPATH", "").split(os.pathsep) if p]):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from pyinfer._gi import Gst  # noqa: E402

Gst.init_python()  # GStreamer is already initialised by the loader; this sets up the Python side
from pyinfer.elements.vlm import VlmElement  # noqa: E402

__gstelementfactory__ = ("pyvlm", Gst.Rank.NONE, VlmElement)
