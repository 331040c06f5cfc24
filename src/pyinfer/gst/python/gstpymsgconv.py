"""gst-python loader shim for the ``pymsgconv`` element (imports nothing heavy)."""

import os
import sys

# `pyinfer env` exports PYINFER_PYTHONPATH (pyinfer and its dependencies) for this loader's interpreter only, so
# that other Python programs in the shell keep their own sys.path (PYTHONPATH would reach them too).
for _p in reversed([p for p in os.environ.get("PYINFER_PYTHONPATH", "").split(os.pathsep) if p]):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from pyinfer._gi import Gst  # noqa: E402

Gst.init_python()
from pyinfer.elements.msgconv import MsgConvElement  # noqa: E402

__gstelementfactory__ = ("pymsgconv", Gst.Rank.NONE, MsgConvElement)
