"""TorchScript archives (``torch.jit.save``; ultralytics ``format=torchscript``). No unpickling of Python objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyinfer.backends.base import LoadedModel
from pyinfer.errors import ModelError


def parse_config(text: str) -> dict[str, Any]:
    """The metadata ultralytics (and pyinfer's trainer) store as ``config.txt`` in the archive; {} if none."""
    if not text.strip():
        return {}
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def names_from_config(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Class names from ``names`` ({"0": "person", ...} or a list)."""
    names = cfg.get("names")
    if isinstance(names, list):
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
    if isinstance(imgsz, int) and imgsz > 0:
        return imgsz, imgsz
    if isinstance(imgsz, list) and len(imgsz) == 2 and all(isinstance(v, int) and v > 0 for v in imgsz):
        return imgsz[1], imgsz[0]
    return None


def load_torchscript(path: Path, device: str) -> LoadedModel:
    """Load a TorchScript archive onto ``device`` in eval mode."""
    import warnings

    import torch

    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 marks TorchScript deprecated
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors for foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} is not a loadable TorchScript archive: {first}") from exc
    module.eval()
    cfg = parse_config(extra["config.txt"].decode() if isinstance(extra["config.txt"], bytes) else extra["config.txt"])
    dtype = torch.float32
    for p in module.parameters():
        dtype = p.dtype
        break

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            out = module(x)
        if isinstance(out, torch.Tensor):
            return [out]
        if isinstance(out, (list, tuple)):
            return [o for o in out if isinstance(o, torch.Tensor)]
        if isinstance(out, dict):
            return [o for o in out.values() if isinstance(o, torch.Tensor)]
        return []

    decoder = cfg.get("pyinfer", {}).get("decoder") if isinstance(cfg.get("pyinfer"), dict) else None
    return LoadedModel(
        forward=forward,
        device=torch.device(device),
        dtype=dtype,
        input_size=input_size_from_config(cfg),
        names=names_from_config(cfg),
        decoder=decoder,
        path=str(path),
    )
