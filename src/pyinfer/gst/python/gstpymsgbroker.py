"""gst-python loader shim for the ``pymsgbroker`` element (imports nothing heavy: broker clients load at start)."""

from pyinfer._gi import Gst

Gst.init_python()
from pyinfer.elements.msgbroker import MsgBrokerElement  # noqa: E402

__gstelementfactory__ = ("pymsgbroker", Gst.Rank.NONE, MsgBrokerElement)
