"""pyinfer: Python inference elements for GStreamer and NVIDIA DeepStream."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "register"]

_registered = False


def register() -> None:
    """Register pyinfer's elements in this process (for Python apps; gst-launch-1.0 uses ``pyinfer env``)."""
    global _registered
    if _registered:
        return
    from pyinfer._gi import ensure_init

    ensure_init()
    from pyinfer._gi import GObject, Gst
    from pyinfer.elements.infer import InferElement
    from pyinfer.elements.msgbroker import MsgBrokerElement
    from pyinfer.elements.msgconv import MsgConvElement
    from pyinfer.elements.osd import OsdElement
    from pyinfer.elements.tracker import TrackerElement
    from pyinfer.elements.vlm import VlmElement

    for name, cls in (
        ("pyinfer", InferElement),
        ("pyosd", OsdElement),
        ("pytracker", TrackerElement),
        ("pymsgconv", MsgConvElement),
        ("pymsgbroker", MsgBrokerElement),
        ("pyvlm", VlmElement),
    ):
        if Gst.ElementFactory.find(name) is None:
            GObject.type_register(cls)
            if not Gst.Element.register(None, name, Gst.Rank.NONE, cls):
                raise RuntimeError(f"could not register element {name}")
    _registered = True
