"""Model metadata as ultralytics writes it (``imgsz``, ``names``, ``task``...), in every container pyinfer reads.

TorchScript and .pt2 archives carry it as JSON (``config.txt``); ONNX files as ``metadata_props`` strings whose
values are Python literals (``"{0: 'person', ...}"``); ultralytics TensorRT engines as a JSON header before the
engine. All end up as one dict, read by the same three functions.
"""

from __future__ import annotations

import ast
import json
from typing import Any


def parse_config(text: str) -> dict[str, Any]:
    """The metadata ultralytics (and pyinfer's trainer) store as ``config.txt`` in the archive; {} if none."""
    if not text.strip():
        return {}
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def parse_props(props: dict[str, str]) -> dict[str, Any]:
    """ONNX ``metadata_props`` (string values) as a metadata dict.

    ultralytics writes ``str(value)`` of Python objects (``imgsz`` "[640, 640]", ``names`` "{0: 'person'}");
    pyinfer's own exports write JSON. Values are read with ``json`` then ``ast.literal_eval`` (literals only,
    never code); anything else stays a string.
    """
    out: dict[str, Any] = {}
    for key, text in props.items():
        value: Any = text
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                value = text
        out[key] = value
    return out


def names_from_config(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Class names from ``names`` ({"0": "person", ...} or a list)."""
    names = cfg.get("names")
    if isinstance(names, (list, tuple)):
        return tuple(str(n) for n in names)
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            return ()
        if sorted(by_id) == list(range(len(by_id))):
            return tuple(by_id[i] for i in range(len(by_id)))
    return ()


def input_size_from_config(cfg: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) from ``imgsz`` ([h, w] as ultralytics writes it, or one int)."""
    imgsz = cfg.get("imgsz")
    if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0:
        return imgsz, imgsz
    if (
        isinstance(imgsz, (list, tuple))
        and len(imgsz) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in imgsz)
    ):
        return imgsz[1], imgsz[0]
    return None


def stride_from_config(cfg: dict[str, Any]) -> int | None:
    """The model's largest stride (``stride``: 32, or one per level as [8, 16, 32]), or None if it gives none.

    Input sizes must be a multiple of it: the feature maps of the levels are upsampled and joined.
    """
    stride = cfg.get("stride")
    values: list[Any] = list(stride) if isinstance(stride, (list, tuple)) else [stride]
    ints = [int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 < v < 4096]
    return max(ints) if ints and len(ints) == len(values) and all(v == int(v) for v in values) else None


def decoder_from_config(cfg: dict[str, Any]) -> str | None:
    """The decoder pyinfer's own metadata asks for (``{"pyinfer": {"decoder": ...}}``), or None."""
    own = cfg.get("pyinfer")
    decoder = own.get("decoder") if isinstance(own, dict) else None
    return decoder if isinstance(decoder, str) else None
