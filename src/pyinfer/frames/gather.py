"""A batch handed to the engine as its frames' planes, where they are, for an engine that gathers them itself.

Frames in CUDA memory (NVDEC's) were gathered twice a batch: into a staging slot on the worker, then by the
engine's fast path into the static input its CUDA graph reads. With :class:`GatherFrames` the fast path copies
each frame's planes straight into its static input (one copy per plane, on its own stream: see
:mod:`pyinfer.ops.cudart`), and the slot is not used. An engine without a fast path takes
:meth:`GatherFrames.stacked` (one torch copy into fresh tensors) instead.

The frames must stay mapped, unchanged, until their batch is collected (the element keeps them mapped until the
batch is delivered, as it does for a staged batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyinfer.ops.colour import YUV_FORMATS, YuvColour, YuvFrames

if TYPE_CHECKING:
    import torch

#: What a static plane holds before any frame is copied in (and where a partial batch has no frame): black.
_FILL = {0: 16, 1: 128, 2: 128}


def slot_view(slot: list, n: int, fmt: str, colour: YuvColour | None) -> Any:
    """The first ``n`` frames of a slot (one (B, rows, cols, bytes per pixel) uint8 tensor per plane, as
    ``VideoLayout.plane_shapes`` gives them) as an engine takes them: YuvFrames for NV12/I420, else (n, H, W, C)."""
    if fmt == "NV12":
        uv = slot[1][:n]
        return YuvFrames(slot[0][:n, ..., 0], uv[..., 0], uv[..., 1], colour)  # type: ignore[arg-type]
    if fmt == "I420":
        return YuvFrames(slot[0][:n, ..., 0], slot[1][:n, ..., 0], slot[2][:n, ..., 0], colour)  # type: ignore[arg-type]
    return slot[0][:n]


def slot_fill(fmt: str, plane: int, pad_value: int) -> int:
    """The value a static plane starts with: black in YUV (Y 16, chroma 128), ``pad_value`` for packed formats."""
    return _FILL.get(plane, 128) if fmt in YUV_FORMATS else pad_value


class GatherFrames:
    """``n`` frames of one layout, each a list of plane tensors (rows, cols, bytes per pixel; rows may be pitched),
    not yet copied anywhere.

    Attributes:
        planes: per frame, its plane views (``MappedFrame.planes``).
        format: the video format name (NV12, I420, RGBA, ...).
        colour: the YUV matrix and range (YUV formats), else None.
        plane_shapes: (rows, cols, bytes per pixel) of each plane.
    """

    def __init__(self, planes: list[list[torch.Tensor]], fmt: str, colour: YuvColour | None,
                 plane_shapes: list[tuple[int, ...]], width: int, height: int, channels: int) -> None:  # fmt: skip
        if not planes:
            raise ValueError("a gathered batch needs at least one frame")
        self.planes = planes
        self.format = fmt
        self.colour = colour if fmt in YUV_FORMATS else None
        self.plane_shapes = tuple(tuple(int(v) for v in s) for s in plane_shapes)
        self._shape = (len(planes), int(height), int(width), int(channels))

    @classmethod
    def from_layout(cls, planes: list[list[torch.Tensor]], layout: Any) -> GatherFrames:
        return cls(planes, layout.format, layout.colour, layout.plane_shapes(), layout.width, layout.height,
                   layout.channels)  # fmt: skip

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(n, H, W, C) of the frames as the engine sees them (C = 3 for YUV: the RGB they become)."""
        return self._shape

    @property
    def device(self) -> torch.device:
        return self.planes[0][0].device

    @property
    def packing(self) -> tuple:
        """What a static input for these frames must be shaped as: (format, plane shapes)."""
        return (self.format, self.plane_shapes)

    def __len__(self) -> int:
        return len(self.planes)

    def copy_pairs(self, slot: list) -> tuple[list, list]:
        """(destinations, sources) for copying every frame's planes into ``slot``'s first frames."""
        dst = [slot[k][i] for i, planes in enumerate(self.planes) for k in range(len(planes))]
        src = [p for planes in self.planes for p in planes]
        return dst, src

    def stacked(self) -> Any:
        """The frames copied into new tensors on their device, as an engine without a fast path takes them."""
        import torch

        n = len(self.planes)
        slot = [torch.empty((n, *shape), dtype=torch.uint8, device=self.device) for shape in self.plane_shapes]
        dst, src = self.copy_pairs(slot)
        torch._foreach_copy_(dst, src, non_blocking=True)
        return slot_view(slot, n, self.format, self.colour)
