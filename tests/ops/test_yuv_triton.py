"""The Triton YUV letterbox kernel (pyinfer.ops.yuv_triton) against the eager path, value for value.

On the GPU the kernel replaces the eager conversion + resize for NV12/I420 frames in CUDA memory; its values must be
the eager path's (which tests/ops/test_colour.py holds against videoconvert). Here the kernel runs in Triton's
interpreter (``TRITON_INTERPRET=1``: the same kernel code on CPU tensors) in a child process, since the interpreter
is chosen when Triton is imported. tests/gpu/test_cuda_memory.py runs the compiled kernel on NVDEC frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from pyinfer.ops import yuv_triton

SRC = Path(__file__).resolve().parents[2] / "src"

_CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from pyinfer.ops import yuv_triton
    from pyinfer.ops.colour import YuvColour, YuvFrames
    from pyinfer.ops.letterbox import LetterboxGeometry, resize_gather

    torch.manual_seed(0)
    out = []
    cases = [
        # (h, w, input, nv12, colour): an odd 3:1 downscale (one tap), odd sizes with I420 (two taps each axis), an
        # upscale; the matrices, ranges, chroma sitings and the nearest-chroma rule
        (90, 120, 40, True, YuvColour()),
        (41, 61, 32, False, YuvColour("bt601", True, True)),
        (30, 40, 64, True, YuvColour("bt2020", False, False, True)),
    ]
    for h, w, size, nv12, colour in cases:
        for dtype in (torch.float16, torch.float32):
            b, ch, cw = 2, (h + 1) // 2, (w + 1) // 2
            y = torch.randint(0, 256, (b, h, w), dtype=torch.uint8)
            if nv12:
                uv = torch.randint(0, 256, (b, ch, cw, 2), dtype=torch.uint8)
                frames = YuvFrames(y, uv[..., 0], uv[..., 1], colour)
            else:
                u, v = (torch.randint(0, 256, (b, ch, cw), dtype=torch.uint8) for _ in range(2))
                frames = YuvFrames(y, u, v, colour)
            geo = LetterboxGeometry.compute(w, h, size, size)
            eager = torch.zeros(b, 3, geo.resized_h, geo.resized_w, dtype=dtype)
            resize_gather(frames, geo.resized_w, geo.resized_h, "RGB", eager)  # CPU frames: the eager path
            # The kernel writes into a view of a larger, channels-last input, as the engine's static input is
            full = torch.zeros(b, 3, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
            top, left = int(geo.pad_y), int(geo.pad_x)
            view = full[:, :, top:top + geo.resized_h, left:left + geo.resized_w]
            yuv_triton.yuv_letterbox(frames, geo.resized_w, geo.resized_h, view)
            diff = (eager.float() - view.float()).abs()
            rest = full.clone()
            rest[:, :, top:top + geo.resized_h, left:left + geo.resized_w] = 0
            out.append({"case": f"{h}x{w}->{size} nv12={nv12} {colour} {dtype}", "max": diff.max().item(),
                        "differ": int((diff > 0).sum()), "outside": rest.abs().max().item(),
                        "mean": eager.float().mean().item()})
    print(json.dumps(out))
    """
)


def test_the_kernel_gives_the_eager_paths_values_in_tritons_interpreter():
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    )
    res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cases = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(cases) == 6
    for case in cases:
        assert case["max"] == 0.0 and case["differ"] == 0, case  # value for value, fp16 and fp32
        assert case["outside"] == 0.0, case  # only the picture is written, not the bands around it
        assert 0.2 < case["mean"] < 0.8, case  # random planes give mid-grey pictures: the kernel wrote something


def test_frames_off_cuda_take_the_eager_path():
    frames = SimpleNamespace(device=SimpleNamespace(type="cpu"))
    assert yuv_triton.try_yuv_letterbox(frames, 8, 8, None) is False


def test_a_kernel_that_fails_is_reported_once_and_the_eager_path_serves_from_then_on(monkeypatch, caplog):
    monkeypatch.setattr(yuv_triton, "_FAILED", [])
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no compiler for this GPU")

    monkeypatch.setattr(yuv_triton, "yuv_letterbox", broken)
    frames = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    with caplog.at_level("WARNING", logger="pyinfer.ops.yuv_triton"):
        assert yuv_triton.try_yuv_letterbox(frames, 8, 8, None) is False
        assert yuv_triton.try_yuv_letterbox(frames, 8, 8, None) is False
    assert len(calls) == 1  # not tried again
    assert not yuv_triton.available()
    assert [r.getMessage() for r in caplog.records if "Triton" in r.getMessage()] == [
        "the Triton YUV letterbox kernel is not used (the eager path serves): RuntimeError: no compiler for this GPU"
    ]


def test_pyinfer_no_triton_turns_it_off():
    env = dict(
        os.environ, PYINFER_NO_TRITON="1", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    )
    res = subprocess.run([sys.executable, "-c", "from pyinfer.ops import yuv_triton; print(yuv_triton.available())"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.stdout.strip() == "False", res.stderr
