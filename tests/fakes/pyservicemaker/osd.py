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
