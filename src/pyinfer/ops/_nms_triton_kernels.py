"""The Triton kernel of :mod:`pyinfer.ops.nms_triton` (imported only when the kernel is first used: Triton is heavy
to import, and absent where torch comes without it)."""

import triton
import triton.language as tl


@triton.jit
def nms_pass(x1_ptr, y1_ptr, x2_ptr, y2_ptr, s_ptr, c_ptr, valid_ptr, nv_ptr, keep_ptr, out_ptr, iou_ptr, C,
             RANK: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr):  # fmt: skip
    """One pass over the pairs (j, i) of one frame's candidates, for the block of boxes i of this program.

    RANK false: out[i] = valid[i] and no kept box j suppresses i (better, same class, IoU > threshold): one round
    of :func:`pyinfer.accel.decode_fixed`'s fixed point. RANK true: out[i] = how many kept boxes are better than i.
    Boxes at and after ``nv[b]`` (one past the frame's last valid box) are neither kept nor suppressors: the loops
    stop there, and a block of boxes i that starts there does no pairs (a frame with few candidates costs little).
    The IoU is computed as the eager code does (the same float32 operations in the same order, a rounded division;
    launched without fused multiply-adds), so the rounds give the same booleans.
    """
    b = tl.program_id(0)
    i0 = tl.program_id(1) * BI
    ii = i0 + tl.arange(0, BI)
    nv = tl.load(nv_ptr + b)
    jend = tl.where(i0 < nv, nv, 0)
    mi = ii < C
    base = b * C
    x1i = tl.load(x1_ptr + base + ii, mask=mi, other=0.0)
    y1i = tl.load(y1_ptr + base + ii, mask=mi, other=0.0)
    x2i = tl.load(x2_ptr + base + ii, mask=mi, other=0.0)
    y2i = tl.load(y2_ptr + base + ii, mask=mi, other=0.0)
    si = tl.load(s_ptr + base + ii, mask=mi, other=0.0)
    ci = tl.load(c_ptr + base + ii, mask=mi, other=0)
    vi = tl.load(valid_ptr + base + ii, mask=mi, other=0)
    area_i = (x2i - x1i) * (y2i - y1i)
    thr = tl.load(iou_ptr)
    acc = tl.zeros((BI,), dtype=tl.int32)
    for j0 in range(0, jend, BJ):
        jj = j0 + tl.arange(0, BJ)
        mj = jj < C
        kj = tl.load(keep_ptr + base + jj, mask=mj, other=0)
        sj = tl.load(s_ptr + base + jj, mask=mj, other=0.0)
        better = (sj[:, None] > si[None, :]) | ((sj[:, None] == si[None, :]) & (jj[:, None] < ii[None, :]))
        hit = better & (kj[:, None] != 0)
        if not RANK:
            x1j = tl.load(x1_ptr + base + jj, mask=mj, other=0.0)
            y1j = tl.load(y1_ptr + base + jj, mask=mj, other=0.0)
            x2j = tl.load(x2_ptr + base + jj, mask=mj, other=0.0)
            y2j = tl.load(y2_ptr + base + jj, mask=mj, other=0.0)
            cj = tl.load(c_ptr + base + jj, mask=mj, other=0)
            # clamp(min=0) as torch does it: NaN stays NaN (and then suppresses nothing, as in the eager code)
            iw = tl.minimum(x2j[:, None], x2i[None, :]) - tl.maximum(x1j[:, None], x1i[None, :])
            iw = tl.where(iw < 0.0, 0.0, iw)
            ih = tl.minimum(y2j[:, None], y2i[None, :]) - tl.maximum(y1j[:, None], y1i[None, :])
            ih = tl.where(ih < 0.0, 0.0, ih)
            inter = iw * ih
            area_j = (x2j - x1j) * (y2j - y1j)
            overlap = tl.math.div_rn(inter, area_j[:, None] + area_i[None, :] - inter)
            hit = hit & (overlap > thr) & (cj[:, None] == ci[None, :])
        acc += tl.sum(hit.to(tl.int32), axis=0)
    if RANK:
        tl.store(out_ptr + base + ii, acc, mask=mi)
    else:
        tl.store(out_ptr + base + ii, ((vi != 0) & (acc == 0)).to(tl.int32), mask=mi)
