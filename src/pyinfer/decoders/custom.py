"""``decoder=custom``: your own post-processing in Python, named by the ``postprocess`` property.

``postprocess=package.module:function`` (or ``/path/to/file.py:function``) names a function called once per
batch with the model's output tensors, on the model's device, and a :class:`PostprocessContext`::

    from pyinfer.decoders.custom import PostprocessContext
    from pyinfer.detections import Detections

    def decode(outputs: list[torch.Tensor], ctx: PostprocessContext) -> list[Detections]:
        ...  # one Detections per frame, boxes in frame pixels (ctx.to_frame maps model-input boxes there)

It returns one :class:`~pyinfer.detections.Detections` per frame (a single Detections is accepted for a
batch of one). The engine adds the labels when a Detections has none. The module is imported when the
engine is built (start, or a hot-swap load), from the name given and nowhere else; an import failure is a
settings error at start. An exception in the function is a :class:`HookError` naming the hook, which the
element handles by its ``on-error`` policy; a result of the wrong kind is a DecodeError.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyinfer.decoders.base import FrameList
from pyinfer.detections import Detections
from pyinfer.errors import ConfigError, DecodeError, PyInferError

if TYPE_CHECKING:
    import torch

    from pyinfer.ops.letterbox import LetterboxGeometry


class HookError(PyInferError):
    """The user's post-processing function raised; the message names the hook and the exception."""


@dataclass(frozen=True)
class PostprocessContext:
    """What a post-processing hook knows about the batch besides the output tensors.

    Attributes:
        geometry: how the frames were letterboxed (frame and input sizes, gains, padding).
        batch_size: frames in the batch (the hook returns this many Detections).
        conf_threshold: the element's ``confidence-threshold``.
        iou_threshold: the element's ``nms-iou-threshold``.
        max_detections: the element's ``max-detections``.
    """

    geometry: LetterboxGeometry
    batch_size: int
    conf_threshold: float
    iou_threshold: float
    max_detections: int

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return self.geometry.frame_w, self.geometry.frame_h

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.geometry.input_w, self.geometry.input_h

    def to_frame(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Map (N, 4) model-input xyxy boxes to frame pixels, clipped to the frame (in place)."""
        return self.geometry.to_frame(boxes_xyxy)


def load_hook(spec: str) -> Callable[..., Any]:
    """Import the function named by ``module:function`` or ``/path/file.py:function``; ConfigError if impossible."""
    module_name, sep, func_name = spec.strip().rpartition(":")
    if not sep or not module_name or not func_name.isidentifier():
        raise ConfigError(f"postprocess {spec!r} is not module:function (e.g. mypkg.post:decode or /x/post.py:decode)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(f"postprocess {spec!r}: file {module_name} does not exist", missing=True)
            mod_spec = importlib.util.spec_from_file_location(f"pyinfer_postprocess_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise ConfigError(f"postprocess {spec!r}: cannot load {module_name}")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module  # dataclasses and pickling look modules up here
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise ConfigError(f"postprocess {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise ConfigError(f"postprocess {spec!r}: module {module_name} has no {func_name!r}")
    if not callable(func):
        raise ConfigError(f"postprocess {spec!r}: {func_name!r} is not callable")
    return func


class CustomDecoder:
    """Runs a user function as the decoder (see the module docs)."""

    name = "custom"
    resize = "letterbox"

    def __init__(self, postprocess: str) -> None:
        if not postprocess.strip():
            raise ConfigError("decoder=custom needs the postprocess property: module:function")
        self.spec = postprocess.strip()
        self.func = load_hook(self.spec)

    def num_classes(self, outputs: list[torch.Tensor]) -> None:
        """Any outputs may suit a hook; the class count is unknown."""
        return None

    def decode(
        self,
        outputs: list[torch.Tensor],
        geometry: LetterboxGeometry,
        *,
        conf_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> FrameList:
        """Call the hook; HookError if it raises, DecodeError if it returns something else than B Detections."""
        bsz = int(outputs[0].shape[0]) if outputs and outputs[0].ndim > 0 else 1
        ctx = PostprocessContext(geometry, bsz, conf_threshold, iou_threshold, max_detections)
        try:
            result = self.func(outputs, ctx)
        except Exception as exc:
            raise HookError(f"postprocess hook {self.spec} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(result, Detections):
            result = [result]
        if not isinstance(result, Sequence) or len(result) != bsz or not all(isinstance(d, Detections) for d in result):
            got = (
                f"a sequence of {len(result)} ({', '.join(sorted({type(d).__name__ for d in result}))})"
                if isinstance(result, Sequence)
                else type(result).__name__
            )
            raise DecodeError(
                f"postprocess hook {self.spec} must return {bsz} Detections (one per frame); it returned {got}"
            )
        return FrameList(list(result))
