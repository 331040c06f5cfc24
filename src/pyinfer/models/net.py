"""A small YOLOv8-style anchor-free detector: C2f backbone, PAN neck, decoupled head at strides 8/16/32.

The exported forward pass follows ultralytics' YOLOv8 detect export layout, so the project's ``yolov8`` decoder
reads it unchanged: one ``(B, 4 + nc, N)`` tensor, rows 0..3 = cx, cy, w, h in model-input pixels, rows 4.. =
class scores after sigmoid, ``N = sum((H / s) * (W / s) for s in (8, 16, 32))``, anchors ordered stride by stride,
row-major within a level. Boxes are regressed as plain ltrb distances (``softplus(raw) * stride``), no DFL.

Only training and tests import this module (it needs torch at import); the elements load the TorchScript export.
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: TID253 - architecture module, never imported by elements
from torch import nn  # noqa: TID253
from torch.nn import functional as F  # noqa: TID253

STRIDES = (8, 16, 32)


class ConvBnAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU; :meth:`fuse` folds the BatchNorm into the conv for export."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        """Build the block.

        Args:
            c_in: input channels.
            c_out: output channels.
            k: kernel size (padding k // 2 keeps the size at stride 1).
            s: stride.
        """
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, norm and activation."""
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm statistics into the conv weights (eval-time only)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn: Any = self.bn  # BatchNorm2d: running stats and affine weights are there (tracked, affine)
        std = (bn.running_var + bn.eps).sqrt()
        w = self.conv.weight * (bn.weight / std).reshape(-1, 1, 1, 1)
        b = bn.bias - bn.running_mean * bn.weight / std
        conv = nn.Conv2d(
            self.conv.in_channels,
            self.conv.out_channels,
            # torch types these tuple[int, ...]; a 2-d conv's are pairs.
            self.conv.kernel_size,  # type: ignore[arg-type]
            self.conv.stride,  # type: ignore[arg-type]
            self.conv.padding,  # type: ignore[arg-type]
            bias=True,
        ).to(w.device)
        conv.weight.copy_(w)
        conv.bias.copy_(b)  # type: ignore[union-attr]  # bias=True
        self.conv, self.bn = conv, nn.Identity()


class Bottleneck(nn.Module):
    """Two 3x3 convs with a residual connection."""

    def __init__(self, c: int) -> None:
        """Build the block for ``c`` channels in and out."""
        super().__init__()
        self.cv1 = ConvBnAct(c, c, 3)
        self.cv2 = ConvBnAct(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual 3x3-3x3."""
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's C2f: 1x1 split into two halves, a chain of bottlenecks on one, every stage concatenated, 1x1 out."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, *, shortcut: bool = True) -> None:
        """Build the block.

        Args:
            c_in: input channels.
            c_out: output channels.
            n: number of bottlenecks.
            shortcut: residual bottlenecks (backbone) or plain ones (neck).
        """
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBnAct(c_in, 2 * self.c)
        self.cv2 = ConvBnAct((2 + n) * self.c, c_out)
        blocks: list[nn.Module] = []
        for _ in range(n):
            blocks.append(
                Bottleneck(self.c)
                if shortcut
                else nn.Sequential(ConvBnAct(self.c, self.c, 3), ConvBnAct(self.c, self.c, 3))
            )
        self.m = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split, chain, concatenate, project."""
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated."""

    def __init__(self, c_in: int, c_out: int) -> None:
        """Build the block."""
        super().__init__()
        c = c_in // 2
        self.cv1 = ConvBnAct(c_in, c)
        self.cv2 = ConvBnAct(4 * c, c_out)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool at growing receptive fields and fuse."""
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Backbone(nn.Module):
    """Stem + four downsampling stages; returns the stride 8, 16 and 32 feature maps."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]) -> None:
        """Build the backbone from 5 widths (stem, s4, s8, s16, s32) and 4 C2f depths."""
        super().__init__()
        w, d = widths, depths
        self.stem = ConvBnAct(3, w[0], 3, 2)
        self.s4 = nn.Sequential(ConvBnAct(w[0], w[1], 3, 2), C2f(w[1], w[1], d[0]))
        self.s8 = nn.Sequential(ConvBnAct(w[1], w[2], 3, 2), C2f(w[2], w[2], d[1]))
        self.s16 = nn.Sequential(ConvBnAct(w[2], w[3], 3, 2), C2f(w[3], w[3], d[2]))
        self.s32 = nn.Sequential(ConvBnAct(w[3], w[4], 3, 2), C2f(w[4], w[4], d[3]), SPPF(w[4], w[4]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (P3, P4, P5) at strides 8, 16, 32."""
        p3 = self.s8(self.s4(self.stem(x)))
        p4 = self.s16(p3)
        return p3, p4, self.s32(p4)


class PAN(nn.Module):
    """YOLOv8's neck: top-down FPN then bottom-up path aggregation."""

    def __init__(self, c3: int, c4: int, c5: int) -> None:
        """Build the neck for backbone outputs of c3, c4, c5 channels (output channels are the same)."""
        super().__init__()
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4 = C2f(c5 + c4, c4, shortcut=False)
        self.td3 = C2f(c4 + c3, c3, shortcut=False)
        self.down3 = ConvBnAct(c3, c3, 3, 2)
        self.bu4 = C2f(c3 + c4, c4, shortcut=False)
        self.down4 = ConvBnAct(c4, c4, 3, 2)
        self.bu5 = C2f(c4 + c5, c5, shortcut=False)

    def forward(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse (P3, P4, P5) into (N3, N4, N5) of the same sizes."""
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat([self.up(p5), p4], 1))
        n3 = self.td3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return n3, n4, n5


class Head(nn.Module):
    """Decoupled head: per level, a box branch (4 ltrb logits) and a class branch (nc logits)."""

    def __init__(self, channels: tuple[int, ...], nc: int, c_box: int, c_cls: int) -> None:
        """Build one box and one class branch per level."""
        super().__init__()
        self.box = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, c_box, 3), ConvBnAct(c_box, c_box, 3), nn.Conv2d(c_box, 4, 1)) for c in channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, c_cls, 3), ConvBnAct(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)) for c in channels
        )

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: (B, 4, h, w) ltrb logits and (B, nc, h, w) class logits."""
        return ([b(f) for b, f in zip(self.box, feats)], [c(f) for c, f in zip(self.cls, feats)])


def make_anchors(
    sizes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres and strides for feature maps of the given (h, w) sizes.

    Returns:
        (N, 2) anchor centres (x, y) in input pixels, cell centres at (i + 0.5) * stride, and (N, 1) strides.
    """
    points, strides = [], []
    for (h, w), s in zip(sizes, STRIDES):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).reshape(-1, 2))
        strides.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(strides)


class ShapesNet(nn.Module):
    """The shapes detector.

    ``forward`` returns the export layout (B, 4 + nc, N); :meth:`forward_train` returns what the loss needs.
    """

    def __init__(
        self,
        nc: int = 3,
        widths: tuple[int, ...] = (16, 32, 64, 128, 192),
        depths: tuple[int, ...] = (1, 2, 2, 1),
        c_box: int = 64,
        c_cls: int = 64,
    ) -> None:
        """Build the network.

        Args:
            nc: number of classes.
            widths: channels of the stem and the stride 4, 8, 16, 32 stages.
            depths: bottlenecks in the C2f of the stride 4, 8, 16, 32 stages.
            c_box: hidden channels of the box branch.
            c_cls: hidden channels of the class branch.
        """
        super().__init__()
        self.nc = nc
        self.backbone = Backbone(widths, depths)
        self.neck = PAN(widths[2], widths[3], widths[4])
        self.head = Head((widths[2], widths[3], widths[4]), nc, c_box, c_cls)
        self._init_bias()

    def _init_bias(self, input_size: int = 384) -> None:
        # ultralytics' prior: ~5 objects per image spread over the level's cells, so early losses are small;
        # box logits start at softplus(1.0) ~ 1.3 strides of ltrb.
        for box, cls, s in zip(self.head.box, self.head.cls, STRIDES):
            nn.init.constant_(box[-1].bias, 1.0)  # type: ignore[index]  # nn.Sequential in an nn.ModuleList
            nn.init.constant_(cls[-1].bias, float(torch.log(torch.tensor(5 / self.nc / (input_size / s) ** 2))))  # type: ignore[index]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # four tensors; ShapesObbNet: five
        """Raw outputs for training.

        Args:
            x: (B, 3, H, W) float input in [0, 1]; H and W multiples of 32.

        Returns:
            ltrb (B, N, 4) distances in input pixels, class logits (B, N, nc), anchor centres (N, 2) and
            strides (N, 1).
        """
        box, cls = self.head(self.neck(self.backbone(x)))
        sizes = [(int(t.shape[2]), int(t.shape[3])) for t in box]
        anchors, strides = make_anchors(sizes, x.device, x.dtype)
        ltrb = F.softplus(torch.cat([t.flatten(2) for t in box], 2).transpose(1, 2).float()) * strides
        logits = torch.cat([t.flatten(2) for t in cls], 2).transpose(1, 2).float()
        return ltrb, logits, anchors.float(), strides.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Export layout.

        Args:
            x: (B, 3, H, W) float RGB in [0, 1], letterboxed; H and W multiples of 32.

        Returns:
            (B, 4 + nc, N): cx, cy, w, h in input pixels, then sigmoid class scores.
        """
        return self.detect(self.neck(self.backbone(x)))

    def detect(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(B, 4 + nc, N) detection rows from the neck's outputs (strides 8, 16, 32): the head, then the boxes
        decoded around their anchors."""
        box, cls = self.head(feats)
        sizes = [(int(t.shape[2]), int(t.shape[3])) for t in box]
        anchors, strides = make_anchors(sizes, feats[0].device, feats[0].dtype)
        # Flatten over (h, w) only, so the batch size stays symbolic under torch.jit.trace.
        ltrb = F.softplus(torch.cat([t.flatten(2) for t in box], 2)) * strides.T  # (B, 4, N)
        logits = torch.cat([t.flatten(2) for t in cls], 2)  # (B, nc, N)
        a = anchors.T  # (2, N)
        lt, rb = ltrb[:, :2], ltrb[:, 2:]
        cxcy = a + (rb - lt) / 2
        wh = lt + rb
        return torch.cat((cxcy, wh, logits.sigmoid()), 1)

    def fuse(self) -> ShapesNet:
        """Fold every BatchNorm into its conv (call in eval mode before export); returns self."""
        for m in self.modules():
            if isinstance(m, ConvBnAct):
                m.fuse()
        return self


def num_anchors(height: int = 384, width: int = 384) -> int:
    """N for an input of the given size: the sum over strides of (H / s) * (W / s)."""
    return sum((height // s) * (width // s) for s in STRIDES)
