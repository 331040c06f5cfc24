"""gst-python loader shim for the ``pymsgconv`` element (imports nothing heavy)."""

from pyinfer._gi import Gst

Gst.init_python()
from pyinfer.elements.msgconv import MsgConvElement  # noqa: E402

__gstelementfactory__ = ("pymsgconv", Gst.Rank.NONE, MsgConvElement)
