"""``decoder=auto``: pick a decoder from the model's metadata, its output names and shapes, and say why.

In order, the first rule that applies wins:

1. a ``postprocess`` hook is set -> ``custom``;
2. the model's metadata names a decoder (pyinfer's own ``{"pyinfer": {"decoder": ...}}``, or ultralytics'
   ``task``/``end2end``/``head``, read by :func:`hint_from_metadata`) -> that decoder;
3. output names (ONNX) that DETR exports use (``pred_boxes``/``pred_logits``, ``boxes``/``logits``) -> ``detr``;
   a torchvision detection model's list of dicts with ``boxes``, ``labels`` and ``scores`` (packed by the
   backend as ``[B, M, 4]``, ``[B, M]``, integer ``[B, M]``) -> ``torchvision``;
4. the class names the model carries: one ``[B, 4 + len(names), N]`` -> ``yolov8``, one
   ``[B, N, 5 + len(names)]`` -> ``yolov5``;
5. shapes: one ``[B, nc]`` -> ``classifier``; one ``[B, K, 6]`` with 6 < K <= 1000 -> ``yolo-e2e``; one
   ``[B, C, N]`` with C < N -> ``yolov8`` (channels first, anchors last); one ``[B, N, C]`` with
   N > C >= 6 and N >= 100 -> ``yolov5`` (an anchor grid: 252 at 64x64 already); two ``[B, Q, 4]`` +
   ``[B, Q, nc]`` -> ``detr``; any other ``[B, C, N]`` with C >= 5 -> ``yolov8``, the default layout.

Rotated boxes (``yolo-obb``) cannot be told from ``yolov8`` by shape (the angle row looks like one more
class), so they need the metadata (ultralytics writes ``task: obb``) or ``decoder=yolo-obb``; likewise a
``[B, K, 7]`` end-to-end output or an RT-DETR export ``[B, 300, 4 + nc]`` (which looks like ``yolov5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyinfer.decoders.base import shapes
from pyinfer.errors import DecodeError

if TYPE_CHECKING:
    import torch

    from pyinfer.backends.base import LoadedModel
    from pyinfer.decoders.base import Decoder

#: End-to-end heads keep at most this many rows (ultralytics: max_det = 300); longer channels-last outputs
#: are anchor grids (YOLOv5: 6300 at 320x320).
MAX_E2E_ROWS = 1000
#: Fewer rows than this in a channels-last output is no anchor grid (YOLOv5 has 252 at 64x64).
MIN_ANCHORS = 100
_DETR_NAMES = ({"pred_boxes", "pred_logits"}, {"boxes", "logits"})


@dataclass(frozen=True)
class DecoderChoice:
    """The decoder ``auto`` picked and the reason, for logs and the element's ``decoder-used`` property."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def hint_from_metadata(cfg: Mapping[str, Any]) -> str | None:
    """The decoder a model's metadata asks for, or None.

    Args:
        cfg: the model's metadata as a dict: ultralytics' export metadata (``task``, ``end2end``, ``head``)
            and/or pyinfer's ``{"pyinfer": {"decoder": name}}``, which wins.

    Returns:
        A decoder name, or None when the metadata says nothing about the output layout.
    """
    own = cfg.get("pyinfer")
    if isinstance(own, Mapping) and isinstance(own.get("decoder"), str) and own["decoder"]:
        return str(own["decoder"])
    task, head, end2end = cfg.get("task"), cfg.get("head"), cfg.get("end2end") is True
    if isinstance(head, str) and "DETR" in head.upper():
        return "detr"
    if task == "classify":
        return "classifier"
    if task == "obb":
        return "yolo-e2e" if end2end else "yolo-obb"
    if task == "segment":
        return "yolo-seg"  # both layouts (end-to-end or not): the decoder reads end2end itself
    if task == "pose":
        return "yolo-pose"
    if task == "detect":
        return "yolo-e2e" if end2end else "yolov8"
    return None


def choose_decoder(
    outputs: Sequence[torch.Tensor],
    *,
    hint: str | None = None,
    output_names: Sequence[str] = (),
    num_names: int = 0,
    postprocess: str = "",
) -> DecoderChoice:
    """Pick a decoder for a model (see the module docs for the rules).

    Args:
        outputs: the model's outputs for one warm-up batch.
        hint: the decoder the model's metadata names (see :func:`hint_from_metadata`), or None.
        output_names: the outputs' names when the runtime has them (ONNX), else empty.
        num_names: how many class names the model carries (0 if none).
        postprocess: the ``postprocess`` property.

    Returns:
        The choice and why. Raises DecodeError naming the shapes when no rule applies.
    """
    if postprocess.strip():
        return DecoderChoice("custom", f"auto: postprocess={postprocess.strip()} is set")
    if hint:
        return DecoderChoice(hint, "auto: the model's metadata names it")
    names = {n.lower() for n in output_names}
    if len(outputs) == 2 and any(pair <= names for pair in _DETR_NAMES):
        return DecoderChoice("detr", f"auto: output names {', '.join(output_names)}")
    if is_torchvision_layout(list(outputs)):
        return DecoderChoice(
            "torchvision", "auto: the model returns a list of dicts with boxes, labels and scores (torchvision)"
        )
    if not outputs:
        raise DecodeError(
            "decoder auto cannot read the model's outputs: it returned no tensors (a torch model must return a "
            "tensor, a tuple, list or dict of tensors, or torchvision's list of dicts with boxes, labels and "
            "scores); convert its return value in a postprocess method of the module, or set decoder=custom with "
            "postprocess=module:function"
        )
    got = shapes(list(outputs))
    if len(outputs) == 1:
        out = outputs[0]
        if out.ndim == 2:
            return DecoderChoice("classifier", f"auto: one output {got} = [B, nc]")
        if out.ndim == 3:
            _, a, b = out.shape
            by_names = _by_names(outputs, num_names)
            if by_names is not None:
                return by_names
            if 6 < a <= MAX_E2E_ROWS and b == 6:
                return DecoderChoice("yolo-e2e", f"auto: one output {got} = [B, K, 6] (end-to-end rows)")
            if 5 <= a < b:
                return DecoderChoice("yolov8", f"auto: one output {got} = [B, 4+nc, N] (channels first)")
            if a > b >= 6 and a >= MIN_ANCHORS:
                return DecoderChoice("yolov5", f"auto: one output {got} = [B, N, 5+nc] (channels last)")
            if a >= 5:
                return DecoderChoice("yolov8", f"auto: one output {got}, read as the default [B, 4+nc, N]")
    if len(outputs) == 2 and sorted(o.ndim for o in outputs) == [3, 4]:
        return DecoderChoice("yolo-seg", f"auto: outputs {got} = detections + mask prototypes [B, nm, H, W]")
    if (
        len(outputs) == 2
        and all(o.ndim == 3 for o in outputs)
        and outputs[0].shape[:2] == outputs[1].shape[:2]
        and 4 in (outputs[0].shape[2], outputs[1].shape[2])
    ):
        return DecoderChoice("detr", f"auto: outputs {got} = [B, Q, 4] boxes + [B, Q, nc] logits")
    raise DecodeError(
        f"decoder auto cannot tell the layout of outputs {got}; set decoder to one of yolov8, yolov5, yolo-e2e, "
        "yolo-obb, yolo-seg, yolo-pose, detr, classifier, torchvision, or custom with postprocess=module:function"
    )


def is_torchvision_layout(outputs: list[torch.Tensor]) -> bool:
    """Whether ``outputs`` are packed torchvision detections: ``[B, M, 4]``, ``[B, M]``, integer ``[B, M]`` (...)."""
    if len(outputs) not in (3, 5):
        return False
    boxes, scores, labels = outputs[:3]
    return (
        boxes.ndim == 3
        and boxes.shape[2] == 4
        and scores.shape == boxes.shape[:2]
        and labels.shape == boxes.shape[:2]
        and boxes.is_floating_point()
        and scores.is_floating_point()
        and not labels.is_floating_point()
    )


def _by_names(outputs: Sequence[torch.Tensor], num_names: int) -> DecoderChoice | None:
    """Rule 4: one output whose class rows (``yolov8``) or columns (``yolov5``) count exactly the model's names."""
    if not num_names or len(outputs) != 1 or outputs[0].ndim != 3:
        return None
    _, a, b = outputs[0].shape
    got = shapes(list(outputs))
    if a == 4 + num_names:
        return DecoderChoice("yolov8", f"auto: one output {got} = [B, 4+nc, N] with the model's {num_names} names")
    if b == 5 + num_names:
        return DecoderChoice("yolov5", f"auto: one output {got} = [B, N, 5+nc] with the model's {num_names} names")
    return None


def _names_fit(outputs: Sequence[torch.Tensor], num_names: int) -> DecoderChoice | None:
    """The layout whose class count is exactly the model's names: rule 4's, or ``[B, 4+nc+1, N]`` (``yolo-obb``).

    Not a rule of ``auto`` (a YOLOv8 model may carry wrong names): used to tell a forced decoder what fits.
    """
    choice = _by_names(outputs, num_names)
    one = len(outputs) == 1 and outputs[0].ndim == 3
    if choice is None and num_names and one and outputs[0].shape[1] == 5 + num_names:
        got = shapes(list(outputs))
        reason = f"one output {got} = [B, 4+nc+1, N] (box, class scores, angle) with the model's {num_names} names"
        choice = DecoderChoice("yolo-obb", reason)
    return choice


def _advice(
    decoder: str,
    outputs: Sequence[torch.Tensor],
    *,
    hint: str | None = None,
    names: Sequence[str] = (),
    output_names: Sequence[str] = (),
) -> str:
    """What to set instead of ``decoder``: what the model's metadata, its names or auto's shape rules point to."""
    if hint and hint != decoder:
        return f"the model's metadata names decoder {hint}: set decoder={hint}, or auto"
    fit = _names_fit(outputs, len(names))
    if fit is not None and fit.name != decoder:
        return f"they look like {fit.name} ({fit.reason}): set decoder={fit.name}"
    try:
        choice: DecoderChoice | None = choose_decoder(outputs, output_names=output_names)
    except DecodeError:
        choice = None
    if choice is not None and choice.name != decoder:
        also = " (or yolo-obb, if the model gives rotated boxes: the same shape with an angle row)"
        return (
            f"they look like {choice.name} ({choice.reason}): set decoder={choice.name}"
            f"{also if choice.name == 'yolov8' else ''}, or auto"
        )
    return (
        "set decoder to the model's layout (yolov8, yolov5, yolo-e2e, yolo-obb, yolo-seg, yolo-pose, detr, classifier, "
        "torchvision; auto "
        "reads the model's metadata), or custom with postprocess=module:function"
    )


def misfit(decoder: str, outputs: Sequence[torch.Tensor], problem: str) -> DecodeError:
    """The error for outputs that do not fit ``decoder``: what is wrong, and the decoder they look like.

    Args:
        decoder: the decoder's name.
        outputs: the model's outputs.
        problem: what does not fit, a sentence naming the expected layout and the shapes (or values) seen.

    Returns:
        A DecodeError (for the caller to raise) whose message ends with the likely right decoder, by auto's
        shape rules; :func:`check_fit` asks again with the model's metadata and names. ``problem`` is kept as an
        attribute for that.
    """
    exc = DecodeError(f"{problem}; {_advice(decoder, outputs)}")
    exc.problem = problem  # type: ignore[attr-defined]
    return exc


def check_fit(decoder: Decoder, outputs: Sequence[torch.Tensor], model: LoadedModel | None = None) -> int | None:
    """Check at load that ``outputs`` fit ``decoder``, and that the class names the model carries agree.

    ``decoder.num_classes`` checks the layout (shapes, and at its first call the values). The names catch what
    neither can: a YOLOv8 output ``[B, 4+80, N]`` read by ``yolo-obb`` is ``[B, 4+79+1, N]``, whose last class
    row would pass for angles; the model's 80 names say otherwise. A mismatch no layout explains leaves the
    names aside, as before (the engine reports class ids).

    Args:
        decoder: the decoder the engine will use.
        outputs: the model's outputs for the warm-up batch.
        model: the loaded model: its names (from its metadata, not a labels file), metadata and output names
            make the advice precise. None checks the layout only.

    Returns:
        The class count (None when the decoder cannot tell). Raises DecodeError naming the decoder, the shapes,
        what does not fit and the decoder that does.
    """
    outputs = list(outputs)
    names: tuple[str, ...] = tuple(getattr(model, "names", ()) or ())
    hint = None
    if model is not None:
        hint = getattr(model, "decoder", None) or hint_from_metadata(getattr(model, "metadata", None) or {})
    output_names = tuple(getattr(model, "output_names", ()) or ())
    try:
        nc = decoder.num_classes(outputs)
    except DecodeError as exc:
        problem = getattr(exc, "problem", None)
        if problem is None or model is None:
            raise
        advice = _advice(decoder.name, outputs, hint=hint, names=names, output_names=output_names)
        raise DecodeError(f"{problem}; {advice}") from None
    if nc is None or not names or nc == len(names):
        return nc
    fit = _names_fit(outputs, len(names))
    if fit is None or fit.name == decoder.name:
        return nc
    raise DecodeError(
        f"decoder {decoder.name} reads {nc} classes from outputs {shapes(outputs)}, but the model names "
        f"{len(names)}; they look like {fit.name} ({fit.reason}): set decoder={fit.name}"
    )
