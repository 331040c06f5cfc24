"""Models shipped inside the package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model file shipped with pyinfer, with its labels file."""

    name: str
    path: Path
    labels_file: Path
    description: str

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names."""
        return tuple(n.strip() for n in self.labels_file.read_text().splitlines() if n.strip())


EMBEDDED: dict[str, EmbeddedModel] = {
    "shapes": EmbeddedModel(
        "shapes",
        MODELS_DIR / "shapes.torchscript",
        MODELS_DIR / "shapes.labels.txt",
        "YOLOv8-layout detector for pyinfer's synthetic scenes (circle, square, triangle), 384x384 input",
    ),
    "shapes-obb": EmbeddedModel(
        "shapes-obb",
        MODELS_DIR / "shapes-obb.torchscript",
        MODELS_DIR / "shapes-obb.labels.txt",
        "YOLO-OBB-layout rotated-box detector for pyinfer's rotated scenes (ellipse, rectangle, triangle), "
        "384x384 input, decoder yolo-obb",
    ),
    "marks": EmbeddedModel(
        "marks",
        MODELS_DIR / "marks.torchscript",
        MODELS_DIR / "marks.labels.txt",
        "secondary classifier of an object's mark in pyinfer's marked scenes (plain, dot, bar) from its crop, "
        "64x64 input (stretched), decoder classifier",
    ),
    "vertices": EmbeddedModel(
        "vertices",
        MODELS_DIR / "vertices.torchscript",
        MODELS_DIR / "vertices.labels.txt",
        "secondary keypoint model of an object's vertices in pyinfer's scenes (square corners, triangle vertices, "
        "circle extreme points; 4 keypoints) from its crop, 64x64 input (stretched), decoder yolo-pose",
    ),
    "shapes-seg": EmbeddedModel(
        "shapes-seg",
        MODELS_DIR / "shapes-seg.torchscript",
        MODELS_DIR / "shapes-seg.labels.txt",
        "YOLOv8-seg-layout instance segmentation of pyinfer's synthetic scenes (circle, square, triangle): the "
        "shapes detector, frozen, with mask prototypes and coefficients; 384x384 input, decoder yolo-seg",
    ),
}
DEFAULT_MODEL = "shapes"


def get_model(name: str = DEFAULT_MODEL) -> EmbeddedModel:
    """An embedded model by name; KeyError listing the names otherwise."""
    try:
        return EMBEDDED[name]
    except KeyError:
        raise KeyError(f"no embedded model {name!r}; embedded: {', '.join(EMBEDDED)}") from None
