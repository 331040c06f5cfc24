"""Fake ``pyservicemaker.osd``: Rect/TextParams returned by reference, Color in 0..1, Font."""

from __future__ import annotations

from typing import Any

import nvds


class Color:
    def __init__(self, r: float = 0.0, g: float = 0.0, b: float = 0.0, a: float = 0.0):
        for v in (r, g, b, a):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"osd.Color components are 0..1, got {(r, g, b, a)}")
        self.r, self.g, self.b, self.a = float(r), float(g), float(b), float(a)

    def tuple(self) -> tuple[float, float, float, float]:
        return (self.r, self.g, self.b, self.a)


class FontFamily:
    Serif = "Serif"


class Font:
    def __init__(self, name: str = FontFamily.Serif, size: int = 11, color: Color | None = None):
        self.name, self.size, self.color = name, size, color or Color(1, 1, 1, 1)


class _Ref:
    """By-reference view of a C struct inside an object meta."""

    def __init__(self, target: Any):
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.endswith("color") or name.endswith("clr"):
            return Color(*value) if isinstance(value, tuple) else value
        if name == "font_params":
            return _Ref(value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Color):
            value = value.tuple()
        if name == "name" and value != FontFamily.Serif:
            raise TypeError("osd.Font.name accepts osd.FontFamily values only")
        setattr(self._target, name, value)


def _rect_params(meta: nvds.ObjectMeta) -> _Ref:
    return _Ref(meta.rect_params)


def _text_params(meta: nvds.ObjectMeta) -> _Ref:
    return _Ref(meta.text_params)


class Text:
    """osd.Text (NvOSD_TextParams for display meta): ``display_text`` str or bytes, offsets unsigned."""

    def __init__(self) -> None:
        self.display_text: str | bytes = ""
        self._x = self._y = 0
        self.font = Font()
        self.set_bg_color = False
        self.bg_color = Color()

    @property
    def x_offset(self) -> int:
        return self._x

    @x_offset.setter
    def x_offset(self, value: int) -> None:
        if int(value) < 0:
            raise TypeError("x_offset is unsigned")
        self._x = int(value)

    @property
    def y_offset(self) -> int:
        return self._y

    @y_offset.setter
    def y_offset(self, value: int) -> None:
        if int(value) < 0:
            raise TypeError("y_offset is unsigned")
        self._y = int(value)


class _MaskRef:
    """``om.mask_params`` (osd.Mask by reference): ``threshold``; ``mask_array`` getter = float32 (h, w) view of
    ``data``, setter = stores the array's pointer and shape WITHOUT copying (deepstream-contract.md §1.6)."""

    def __init__(self, meta: nvds.ObjectMeta):
        object.__setattr__(self, "_meta", meta)

    @property
    def threshold(self) -> float:
        return self._meta.mask_params.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._meta.mask_params.threshold = float(value)
        self._meta.record("mask_params.threshold", float(value))

    @property
    def mask_array(self) -> Any:
        import ctypes

        import numpy as np

        m = self._meta.mask_params
        if not m.data:
            return np.zeros((0, 0), np.float32)
        return np.ctypeslib.as_array((ctypes.c_float * (m.width * m.height)).from_address(m.data)).reshape(
            m.height, m.width
        )

    @mask_array.setter
    def mask_array(self, arr: Any) -> None:
        import numpy as np

        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2 or not arr.flags.c_contiguous:
            raise TypeError("osd.Mask.mask_array takes a C-contiguous float32 (h, w) numpy array")
        base: Any = arr
        while isinstance(base, np.ndarray):
            if base.flags.owndata:
                raise nvds.BadFree(
                    "mask_array: the array's memory is NumPy's; the setter keeps only its pointer "
                    "and DeepStream g_free's it with the object (freed twice, or used after free)"
                )
            base = base.base
        m = self._meta.mask_params
        if m.data:
            raise nvds.BadFree("mask_array set twice on one object: the first block would never be freed")
        m.data, m.height, m.width = int(arr.ctypes.data), int(arr.shape[0]), int(arr.shape[1])
        m.size = m.width * m.height * 4
        m.values = arr.copy()
        nvds.MASKS.append(m)
        self._meta.record("mask_params.mask_array", (m.height, m.width))

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ("threshold", "mask_array"):
            raise AttributeError(f"osd.Mask has no attribute {name!r}")
        object.__setattr__(self, name, value)


def _mask_params(meta: nvds.ObjectMeta) -> _MaskRef:
    return _MaskRef(meta)
