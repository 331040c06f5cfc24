"""Output decoders: model output tensors -> per-frame Detections. Keys are the ``decoder`` property values.

| key | module | outputs |
|---|---|---|
| ``yolov8`` | :mod:`~pyinfer.decoders.yolo` | ``[B, 4+nc, N]`` (YOLOv8, YOLO11, YOLO26 with NMS) |
| ``yolov5`` | :mod:`~pyinfer.decoders.yolov5` | ``[B, N, 5+nc]`` with objectness (YOLOv5, YOLOv7, YOLOX) |
| ``yolo-e2e`` | :mod:`~pyinfer.decoders.yolo_e2e` | ``[B, K, 6]`` / ``[B, K, 7]`` (YOLOv10, YOLO26 end-to-end) |
| ``yolo-obb`` | :mod:`~pyinfer.decoders.yolo_obb` | ``[B, 4+nc+1, N]`` rotated boxes, rotated NMS |
| ``yolo-seg`` | :mod:`~pyinfer.decoders.yolo_seg` | ``[B, 4+nc+nm, N]`` or ``[B, K, 6+nm]``, + prototypes: masks |
| ``yolo-pose`` | :mod:`~pyinfer.decoders.yolo_pose` | ``[B, 4+nc+K*D, N]`` or ``[B, K', 6+K*D]``: keypoints |
| ``detr`` | :mod:`~pyinfer.decoders.detr` | ``[B, Q, 4+nc]`` or ``[B, Q, 4]`` + ``[B, Q, nc]`` |
| ``classifier`` | :mod:`~pyinfer.decoders.classifier` | ``[B, nc]`` |
| ``torchvision`` | :mod:`~pyinfer.decoders.torchvision` | torchvision detectors' dicts (boxes, labels, scores) |
| ``custom`` | :mod:`~pyinfer.decoders.custom` | anything: a ``postprocess=module:function`` hook |

``auto`` (:mod:`~pyinfer.decoders.auto`) picks one of them and says why. Every decoder checks at load that the
outputs fit its layout, shapes and values (``num_classes`` on the warm-up batch), and
:func:`~pyinfer.decoders.auto.check_fit` that the model's class names agree; a misfit is a DecodeError naming
the decoder, the shapes and the decoder ``auto`` reads them as.
"""

from __future__ import annotations

from collections.abc import Callable

from pyinfer.decoders.auto import DecoderChoice, check_fit, choose_decoder, hint_from_metadata
from pyinfer.decoders.base import DecodedBatch, Decoder, FrameList
from pyinfer.decoders.classifier import ClassifierDecoder
from pyinfer.decoders.custom import CustomDecoder, HookError, PostprocessContext
from pyinfer.decoders.detr import DetrDecoder
from pyinfer.decoders.torchvision import TorchvisionDecoder
from pyinfer.decoders.yolo import YoloV8Decoder
from pyinfer.decoders.yolo_e2e import YoloE2EDecoder
from pyinfer.decoders.yolo_obb import YoloObbDecoder
from pyinfer.decoders.yolo_pose import YoloPoseDecoder
from pyinfer.decoders.yolo_seg import YoloSegDecoder
from pyinfer.decoders.yolov5 import YoloV5Decoder
from pyinfer.errors import ConfigError

__all__ = [
    "DECODERS",
    "DecodedBatch",
    "Decoder",
    "DecoderChoice",
    "FrameList",
    "HookError",
    "PostprocessContext",
    "check_fit",
    "choose_decoder",
    "get_decoder",
    "hint_from_metadata",
]

DECODERS: dict[str, Callable[[], Decoder]] = {
    "yolov8": YoloV8Decoder,
    "yolov5": YoloV5Decoder,
    "yolo-e2e": YoloE2EDecoder,
    "yolo-obb": YoloObbDecoder,
    "yolo-seg": YoloSegDecoder,
    "yolo-pose": YoloPoseDecoder,
    "detr": DetrDecoder,
    "classifier": ClassifierDecoder,
    "torchvision": TorchvisionDecoder,
}
#: Every value the ``decoder`` property takes.
DECODER_NAMES = ("auto", *DECODERS, "custom")


def get_decoder(name: str, *, postprocess: str = "") -> Decoder:
    """The decoder registered under ``name`` (``custom`` loads the ``postprocess`` hook); ConfigError otherwise."""
    key = name.strip().lower()
    if key == "custom":
        return CustomDecoder(postprocess)
    if postprocess.strip():
        raise ConfigError(
            f"postprocess={postprocess.strip()} is set but decoder is {name!r}: use decoder=custom (or auto)"
        )
    try:
        return DECODERS[key]()
    except KeyError:
        known = ", ".join(n for n in DECODER_NAMES if n != "auto")
        raise ConfigError(f"unknown decoder {name!r}; known decoders: auto, {known}") from None
