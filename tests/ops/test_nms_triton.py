"""The Triton NMS kernel (pyinfer.ops.nms_triton) against the eager fixed point (pyinfer.accel.nms_fixed_point).

On CUDA ``decode_fixed`` runs its NMS rounds with the kernel; they must give the eager rounds' booleans and ranks
exactly (the eager code is held against the plain decoder in tests/test_accel.py). Here the kernel runs in
Triton's interpreter (``TRITON_INTERPRET=1``: the same kernel code on CPU tensors) in a child process, since the
interpreter is chosen when Triton is imported. tests/gpu/test_fast_path.py-style GPU runs use the compiled kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

_CHILD = textwrap.dedent(
    """
    import json
    import torch
    from pyinfer.accel import nms_fixed_point
    from pyinfer.ops import nms_triton

    g = torch.Generator().manual_seed(3)
    out = []

    def case(name, x1, y1, x2, y2, score, cls, valid, iou, iterations):
        ref = nms_fixed_point(x1, y1, x2, y2, score, cls, valid, torch.tensor(iou), iterations)
        got = nms_triton.keep_rank(x1, y1, x2, y2, score, cls, valid, torch.tensor(iou), iterations)
        out.append({
            "case": name,
            "keep_same": bool(torch.equal(ref[0], got[0])),
            "rank_same": bool(torch.equal(ref[1][ref[0]], got[1][got[0]])),  # ranks matter where kept
            "unconverged_same": bool(torch.equal(ref[2], got[2])),
            "kept": int(ref[0].sum()), "valid": int(valid.sum()), "unconverged": int(ref[2].sum()),
        })

    # crowded random boxes, few classes, quantised scores (ties), a partly valid prefix; C not a multiple of the
    # kernel's blocks
    for b, c, iters in ((3, 100, 4), (2, 200, 12)):
        cx = torch.rand(b, c, generator=g) * 200
        cy = torch.rand(b, c, generator=g) * 200
        w = torch.rand(b, c, generator=g) * 60 + 5
        h = torch.rand(b, c, generator=g) * 60 + 5
        score = (torch.rand(b, c, generator=g) * 20).floor() / 20
        cls = torch.randint(0, 3, (b, c), generator=g)
        n = torch.tensor([c, c * 2 // 3, 0][:b])
        valid = torch.arange(c)[None, :] < n[:, None]
        case(f"random b{b} c{c} it{iters}", cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, cls, valid, 0.45,
             iters)
    # a suppression chain longer than the rounds (unconverged), then with enough rounds
    c = 40
    x1 = (100.0 + 25 * torch.arange(c, dtype=torch.float32))[None]
    y1 = torch.full((1, c), 300.0)
    score = (0.9 - 0.01 * torch.arange(c, dtype=torch.float32))[None]
    cls = torch.zeros(1, c, dtype=torch.int64)
    valid = torch.ones(1, c, dtype=torch.bool)
    for iters in (2, 40):
        case(f"chain it{iters}", x1, y1, x1 + 100, y1 + 100, score, cls, valid, 0.5, iters)
    # huge and degenerate boxes: infinities and NaN IoUs suppress nothing in either
    big = torch.tensor([[0.0, -3e38, 10.0, 0.0, 5.0, 1e38]])
    top = torch.tensor([[0.0, -3e38, 10.0, 0.0, 5.0, -1e38]])
    case("huge", big, top, big * -1 + 20, top * -1 + 20, torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.6, 0.5]]),
         torch.zeros(1, 6, dtype=torch.int64), torch.ones(1, 6, dtype=torch.bool), 0.3, 4)
    print(json.dumps(out))
    """
)


def test_the_kernel_gives_the_eager_rounds_in_tritons_interpreter():
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    )
    res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cases = {c["case"]: c for c in json.loads(res.stdout.strip().splitlines()[-1])}
    assert len(cases) == 5
    for c in cases.values():
        assert c["keep_same"] and c["rank_same"] and c["unconverged_same"], c
    random = cases["random b3 c100 it4"]
    assert 0 < random["kept"] < random["valid"], random  # something was suppressed, something kept
    assert cases["chain it2"]["unconverged"] == 1 and cases["chain it40"]["unconverged"] == 0
    assert cases["chain it40"]["kept"] == 20  # greedy keeps every other box of the chain
